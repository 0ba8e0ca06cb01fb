"""MEMORY_BACKEND=memory: conversations in this process's RAM, LRU-capped, expiring."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from .base import MemoryLimits, Message, Recollection, StoredMessage, clipped


@dataclass(slots=True)
class _Conversation:
    messages: list[StoredMessage] = field(default_factory=list)
    last_used: float = 0.0
    token_ratio: float | None = None


class InProcessStore:
    """Thread-safe memory of recent messages per conversation id, lost when the process ends.

    The OrderedDict is kept in last-use order, so the least recently used conversation
    is always first: eviction and expiry of every idle conversation both pop from the
    front, each in O(1) per conversation removed.
    """

    def __init__(
        self,
        limits: MemoryLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._limits = limits
        self._clock = clock  # idleness: immune to the wall clock being set
        self._wall_clock = wall_clock  # message times shown to people
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        self._holds: dict[str, tuple[str, float]] = {}
        # gevent patches threading, so this lock is cooperative under gunicorn's worker.
        self._lock = threading.Lock()

    def hold(self, conversation_id: str, holder: str, hold_s: float) -> bool:
        """Claim the conversation for one request; False while another holder has it."""
        with self._lock:
            now = self._clock()
            current = self._holds.get(conversation_id)
            if current is not None and current[1] > now:
                return False
            self._holds[conversation_id] = (holder, now + hold_s)
            return True

    def release(self, conversation_id: str, holder: str) -> None:
        """Let go of a claim; a claim that lapsed or passed to another holder is left alone."""
        with self._lock:
            current = self._holds.get(conversation_id)
            if current is not None and current[0] == holder:
                del self._holds[conversation_id]

    def recall(self, conversation_id: str) -> Recollection:
        """The remembered messages, oldest first; a read counts as use."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            conversation = self._conversations.get(conversation_id)
            if conversation is None:
                return Recollection([])
            self._touch(conversation_id, conversation, now)
            messages = [Message(m.role, m.content) for m in conversation.messages]
            return Recollection(messages, conversation.token_ratio)

    def save_exchange(
        self,
        conversation_id: str,
        user_text: str,
        reply_text: str,
        *,
        asked_at: float,
        token_ratio: float | None = None,
    ) -> None:
        """Remember a user message and the model's reply together."""
        user_text, reply_text = clipped((user_text, reply_text), self._limits)
        answered_at = self._wall_clock()
        with self._lock:
            now = self._clock()
            self._expire(now)
            conversation = self._conversations.get(conversation_id) or _Conversation()
            messages = conversation.messages
            messages += (
                StoredMessage("user", user_text, asked_at),
                StoredMessage("assistant", reply_text, answered_at),
            )
            del messages[: max(0, len(messages) - self._limits.kept_messages)]
            if not messages:  # MEMORY_MAX_TURNS below 2 keeps nothing
                self._conversations.pop(conversation_id, None)
                return
            if token_ratio is not None:
                conversation.token_ratio = token_ratio
            self._touch(conversation_id, conversation, now)
            while len(self._conversations) > self._limits.max_conversations:
                self._conversations.popitem(last=False)

    def transcript(self, conversation_id: str) -> list[StoredMessage] | None:
        """Every remembered message with its time; looking does not count as use."""
        with self._lock:
            self._expire(self._clock())
            conversation = self._conversations.get(conversation_id)
            return None if conversation is None else list(conversation.messages)

    def forget(self, conversation_id: str) -> bool:
        """Drop the conversation; False when it was unknown."""
        with self._lock:
            self._expire(self._clock())
            return self._conversations.pop(conversation_id, None) is not None

    def __len__(self) -> int:
        """How many conversations are remembered."""
        with self._lock:
            self._expire(self._clock())
            return len(self._conversations)

    def close(self) -> None:
        """Nothing to release: the conversations go with the process."""

    def _touch(self, conversation_id: str, conversation: _Conversation, now: float) -> None:
        conversation.last_used = now
        self._conversations[conversation_id] = conversation
        self._conversations.move_to_end(conversation_id)

    def _expire(self, now: float) -> None:
        if self._limits.ttl_s <= 0:
            return
        oldest_allowed = now - self._limits.ttl_s
        while self._conversations:
            oldest = next(iter(self._conversations.values()))
            if oldest.last_used >= oldest_allowed:
                break
            self._conversations.popitem(last=False)
