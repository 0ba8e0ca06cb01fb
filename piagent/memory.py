"""In-process conversation store: recent messages per conversation, LRU-capped, expiring."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Message:
    """One remembered chat message."""

    role: str  # "user" or "assistant"
    content: str


@dataclass(slots=True)
class _Conversation:
    messages: list[Message] = field(default_factory=list)
    last_access: float = 0.0


class ConversationStore:
    """Thread-safe memory of recent messages per conversation id.

    The OrderedDict is kept in last-access order, so the least recently used
    conversation is always first: eviction and expiry of every idle conversation
    both pop from the front, each in O(1) per conversation removed.
    """

    def __init__(
        self,
        *,
        max_messages: int,
        ttl_s: float,
        max_conversations: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_messages = max_messages
        self._ttl_s = ttl_s
        self._max_conversations = max_conversations
        self._clock = clock
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        # gevent patches threading, so this lock is cooperative under gunicorn's worker.
        self._lock = threading.Lock()

    def history(self, conversation_id: str) -> list[Message]:
        """Return the remembered messages, oldest first (a read counts as use)."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            conversation = self._conversations.get(conversation_id)
            if conversation is None:
                return []
            self._touch(conversation_id, conversation, now)
            return list(conversation.messages)

    def save_exchange(self, conversation_id: str, user_text: str, reply_text: str) -> None:
        """Remember a user message and the model's reply together."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            conversation = self._conversations.get(conversation_id) or _Conversation()
            messages = conversation.messages
            messages += (Message("user", user_text), Message("assistant", reply_text))
            del messages[: max(0, len(messages) - self._max_messages)]
            # An odd limit would otherwise leave a reply whose question was dropped.
            if messages and messages[0].role == "assistant":
                del messages[0]
            if not messages:  # MEMORY_MAX_TURNS below 2 keeps nothing
                self._conversations.pop(conversation_id, None)
                return
            self._touch(conversation_id, conversation, now)
            while len(self._conversations) > self._max_conversations:
                self._conversations.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._conversations)

    def _touch(self, conversation_id: str, conversation: _Conversation, now: float) -> None:
        conversation.last_access = now
        self._conversations[conversation_id] = conversation
        self._conversations.move_to_end(conversation_id)

    def _expire(self, now: float) -> None:
        if self._ttl_s <= 0:
            return
        oldest_allowed = now - self._ttl_s
        while self._conversations:
            oldest = next(iter(self._conversations.values()))
            if oldest.last_access >= oldest_allowed:
                break
            self._conversations.popitem(last=False)
