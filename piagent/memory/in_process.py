"""MEMORY_BACKEND=memory: conversations in this process's RAM, LRU-capped, expiring."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .base import (
    TITLE_MAX_CHARS,
    ConversationSummary,
    MemoryLimits,
    Message,
    NewExchange,
    Recollection,
    StoredMessage,
    clipped,
    namespace_of,
)


@dataclass(slots=True)
class _Conversation:
    # The messages as one JSON string of [role, content, time] triples: one string per
    # conversation takes half the RAM of an object per message, which counts when a
    # Pi holds many thousands of conversations.
    encoded: str = "[]"
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
        self._holds: dict[str, tuple[str, float]] = {}  # id -> (holder, until)
        # gevent patches threading, so this lock is cooperative under gunicorn's worker.
        self._lock = threading.Lock()

    def begin(self, conversation_id: str, holder: str, lease_s: float) -> Recollection | None:
        """Claim the conversation and recall it; None while another holder has it."""
        with self._lock:
            now = self._clock()
            current = self._holds.get(conversation_id)
            if current is not None and current[1] > now:
                return None
            self._holds[conversation_id] = (holder, now + lease_s)
            self._expire(now)
            conversation = self._conversations.get(conversation_id)
            if conversation is None:
                return Recollection([])
            self._touch(conversation_id, conversation, now)
            encoded, ratio = conversation.encoded, conversation.token_ratio
        messages = [Message(role, content) for role, content, _ in json.loads(encoded)]
        return Recollection(messages, ratio)

    def renew(self, conversation_id: str, holder: str, lease_s: float) -> bool:
        """Extend the claim; False when it lapsed or passed to another holder."""
        with self._lock:
            now = self._clock()
            current = self._holds.get(conversation_id)
            if current is None or current[0] != holder or current[1] <= now:
                return False
            self._holds[conversation_id] = (holder, now + lease_s)
            return True

    def end(self, conversation_id: str, holder: str, exchange: NewExchange | None = None) -> None:
        """Keep the exchange, if any, and let go of the claim."""
        with self._lock:
            if exchange is not None:
                self._keep(conversation_id, exchange)
            current = self._holds.get(conversation_id)
            if current is not None and current[0] == holder:
                del self._holds[conversation_id]

    def transcript(self, conversation_id: str) -> list[StoredMessage] | None:
        """Every remembered message with its time; looking does not count as use."""
        with self._lock:
            self._expire(self._clock())
            conversation = self._conversations.get(conversation_id)
            if conversation is None:
                return None
            encoded = conversation.encoded
        return [StoredMessage(*triple) for triple in json.loads(encoded)]

    def forget(self, conversation_id: str) -> bool:
        """Drop the conversation; False when it was unknown."""
        with self._lock:
            self._expire(self._clock())
            return self._conversations.pop(conversation_id, None) is not None

    def conversations(self, namespace: str, limit: int) -> list[ConversationSummary]:
        """The namespace's conversations, most recently updated first; looking is not use."""
        with self._lock:
            self._expire(self._clock())
            # Most recently used first, so that equal update times keep that order.
            found = [
                (key, conversation.encoded)
                for key, conversation in reversed(self._conversations.items())
                if namespace_of(key) == namespace
            ]
        # Outside the lock, and only the conversations listed are decoded: the newest
        # message's time is read off the end of each encoded list ("..., <time>]]").
        found.sort(key=lambda item: float(item[1][item[1].rindex(",") + 1 : -2]), reverse=True)
        summaries = []
        for key, encoded in found[:limit]:
            messages = json.loads(encoded)
            title = next(content for role, content, _ in messages if role == "user")
            summaries.append(
                ConversationSummary(
                    conversation_id=key[len(namespace) :],
                    title=title[:TITLE_MAX_CHARS],
                    updated_at=messages[-1][2],
                    messages=len(messages),
                )
            )
        return summaries

    def __len__(self) -> int:
        """How many conversations are remembered."""
        with self._lock:
            self._expire(self._clock())
            return len(self._conversations)

    def check(self) -> None:
        """Always usable: the conversations live in this process."""

    def close(self) -> None:
        """Nothing to release: the conversations go with the process."""

    def _keep(self, conversation_id: str, exchange: NewExchange) -> None:
        user_text, reply_text = clipped(exchange, self._limits)
        now = self._clock()
        self._expire(now)
        conversation = self._conversations.get(conversation_id) or _Conversation()
        messages = json.loads(conversation.encoded)
        messages += (
            ["user", user_text, exchange.asked_at],
            ["assistant", reply_text, self._wall_clock()],
        )
        del messages[: self._limits.dropped(len(messages), exchange.forgotten)]
        if not messages:  # MEMORY_MAX_TURNS below 2 keeps nothing
            self._conversations.pop(conversation_id, None)
            return
        conversation.encoded = json.dumps(messages, ensure_ascii=False)
        if exchange.token_ratio is not None:
            conversation.token_ratio = exchange.token_ratio
        self._touch(conversation_id, conversation, now)
        while len(self._conversations) > self._limits.max_conversations:
            self._conversations.popitem(last=False)

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
