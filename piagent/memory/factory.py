"""Opening the store that MEMORY_BACKEND names, within the limits the settings give."""

from __future__ import annotations

from ..errors import MemoryUnavailable
from ..messages import MESSAGE_MAX_CHARS
from ..settings import ConfigError, Settings
from .base import ConversationStore, MemoryLimits
from .in_process import InProcessStore
from .off_loop import off_the_loop
from .sqlite_store import SqliteStore

# Tokens are rarely longer than this, so a reply of MAX_TOKENS tokens is kept whole; the
# cap only bounds what a model that ignores MAX_TOKENS could make us store.
_CHARS_PER_TOKEN = 8


def memory_limits(settings: Settings, longest_reply_tokens: int) -> MemoryLimits:
    """The bounds the settings give every backend."""
    return MemoryLimits(
        max_messages=settings.memory_max_turns,
        ttl_s=settings.memory_ttl_min * 60,
        max_conversations=settings.memory_max_conversations,
        max_message_chars=max(MESSAGE_MAX_CHARS, longest_reply_tokens * _CHARS_PER_TOKEN),
        trim=settings.memory_trim,
    )


def open_store(settings: Settings, longest_reply_tokens: int) -> ConversationStore | None:
    """The store MEMORY_BACKEND names (None when memory is off); ConfigError if unusable.

    `longest_reply_tokens` is the largest MAX_TOKENS of any agent: no kept reply is cut.
    """
    if not settings.enable_memory:
        return None
    limits = memory_limits(settings, longest_reply_tokens)
    if settings.memory_backend == "sqlite":
        try:
            return off_the_loop(SqliteStore(settings.memory_path, limits))
        except MemoryUnavailable as exc:
            raise ConfigError(f"MEMORY_PATH: {exc.detail}") from None
    if settings.memory_backend == "redis":
        # Imported only when chosen: the client costs a Pi some 8 MB and 0.3 s at start.
        from .redis_store import RedisStore

        try:
            return RedisStore(settings.redis_url, limits)
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL cannot be used: {exc}") from None
    return InProcessStore(limits)
