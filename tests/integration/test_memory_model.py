"""The conversation stores against a plain model of their contract, by hypothesis.

One RuleBasedStateMachine claims, renews and lets go of conversations, keeps exchanges,
reads, lists, forgets and counts, in two key namespaces and the plain one, and checks
every answer against `ModelStore`, a few dicts and lists that say what the contract
(piagent/memory/base.py) promises. It runs on the in-process store and SQLite with an
injected clock (so idle expiry and lapsed leases are exercised), and on a real
redis-server, whose expiry follows Redis's own clock: there the clock stands still
(beyond a millisecond a write, for distinct message times) and leases are long.
"""

from __future__ import annotations

import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from piagent.memory.base import (
    TITLE_MAX_CHARS,
    ConversationStore,
    ConversationSummary,
    MemoryLimits,
    NewExchange,
    Recollection,
    StoredMessage,
    TrimPolicy,
    namespace_of,
)
from piagent.memory.in_process import InProcessStore
from piagent.memory.redis_store import RedisStore
from piagent.memory.sqlite_store import SqliteStore
from piagent.messages import Message
from tests.fuzzing import FUZZ

NAMESPACES = ["", "k1/", "k2/"]  # no API key, and two keys
KEYS = [namespace + name for namespace in NAMESPACES for name in ("a", "b", "c")]
HOLDERS = ["h1", "h2", "h3"]
MAX_MESSAGE_CHARS = 90  # just past a title's 80 characters, so both cuts are seen
START = 1_750_000_000.0
TICK_S = 0.001  # between two writes: message times never tie

texts = st.text(max_size=100) | st.sampled_from(["", "q", "x" * 95, "é" * 85, "\x00nul"])


# --- the model ---------------------------------------------------------------------------


def trimmed(
    messages: list[StoredMessage], limits: MemoryLimits, forgotten: int
) -> list[StoredMessage]:
    """What a conversation keeps of its messages once an exchange (the last two) is added.

    First the `forgotten` oldest go, never the new exchange. If more than max_messages
    (rounded down to whole exchanges) are left, sliding keeps that many of the newest;
    block keeps the newest half of the exchanges, at least one. Change this when the
    trimming rule changes.
    """
    messages = messages[min(forgotten, len(messages) - 2) :]
    most = limits.max_messages - limits.max_messages % 2
    if len(messages) <= most:
        return messages
    if most == 0:
        return []
    keep = most if limits.trim == "sliding" else max(2, most // 4 * 2)
    return messages[len(messages) - keep :]


@dataclass
class ModelConversation:
    messages: list[StoredMessage]
    last_used: float
    token_ratio: float | None = None


@dataclass
class ModelStore:
    """The store contract as plainly as it can be said: what each call must answer."""

    limits: MemoryLimits
    # Least recently used first.
    conversations: OrderedDict[str, ModelConversation] = field(default_factory=OrderedDict)
    holds: dict[str, tuple[str, float]] = field(default_factory=dict)  # key -> (holder, until)
    seen: Counter[str] = field(default_factory=Counter)  # what happened: evictions, expiry...

    def forget_idle(self, now: float) -> None:
        """Idle past the TTL is gone: before any answer, whatever the backend does when."""
        if self.limits.ttl_s <= 0:
            return
        for key, conversation in list(self.conversations.items()):
            if conversation.last_used < now - self.limits.ttl_s:
                del self.conversations[key]
                self.seen["expired"] += 1

    def begin(self, key: str, holder: str, lease_s: float, now: float) -> Recollection | None:
        current = self.holds.get(key)
        if current is not None and current[1] > now:
            self.seen["busy"] += 1
            return None
        if current is not None and current[0] != holder:
            self.seen["lapsed claim taken over"] += 1
        self.holds[key] = (holder, now + lease_s)
        self.forget_idle(now)
        conversation = self.conversations.get(key)
        if conversation is None:
            return Recollection([])
        self._touch(key, now)
        messages = [Message(m.role, m.content) for m in conversation.messages]
        return Recollection(messages, conversation.token_ratio)

    def renew(self, key: str, holder: str, lease_s: float, now: float) -> bool:
        current = self.holds.get(key)
        if current is None or current[0] != holder or current[1] <= now:
            return False
        self.holds[key] = (holder, now + lease_s)
        return True

    def end(self, key: str, holder: str, exchange: NewExchange | None, now: float) -> None:
        if exchange is not None:
            self._keep(key, exchange, now)
        if self.holds.get(key, ("",))[0] == holder:
            del self.holds[key]

    def transcript(self, key: str, now: float) -> list[StoredMessage] | None:
        self.forget_idle(now)
        conversation = self.conversations.get(key)
        return None if conversation is None else list(conversation.messages)

    def forget(self, key: str, now: float) -> bool:
        self.forget_idle(now)
        return self.conversations.pop(key, None) is not None

    def listing(self, namespace: str, limit: int, now: float) -> list[ConversationSummary]:
        self.forget_idle(now)
        mine = [
            (key, c)
            for key, c in reversed(self.conversations.items())  # most recent use first
            if namespace_of(key) == namespace
        ]
        mine.sort(key=lambda item: item[1].messages[-1].at, reverse=True)
        return [
            ConversationSummary(
                conversation_id=key[len(namespace) :],
                title=next(m.content for m in c.messages if m.role == "user")[:TITLE_MAX_CHARS],
                updated_at=c.messages[-1].at,
                messages=len(c.messages),
            )
            for key, c in mine[:limit]
        ]

    def count(self, now: float) -> int:
        self.forget_idle(now)
        return len(self.conversations)

    def _keep(self, key: str, exchange: NewExchange, now: float) -> None:
        self.forget_idle(now)
        longest = self.limits.max_message_chars
        added = [
            StoredMessage("user", exchange.user_text[:longest], exchange.asked_at),
            StoredMessage("assistant", exchange.reply_text[:longest], now),
        ]
        conversation = self.conversations.get(key) or ModelConversation([], now)
        messages = conversation.messages + added
        conversation.messages = trimmed(messages, self.limits, exchange.forgotten)
        if len(conversation.messages) < len(messages):
            self.seen["trimmed"] += 1
        if not conversation.messages:
            self.conversations.pop(key, None)
            return
        if exchange.token_ratio is not None:
            conversation.token_ratio = exchange.token_ratio
        self.conversations[key] = conversation
        self._touch(key, now)
        while len(self.conversations) > self.limits.max_conversations:
            self.conversations.popitem(last=False)
            self.seen["evicted"] += 1

    def _touch(self, key: str, now: float) -> None:
        self.conversations[key].last_used = now
        self.conversations.move_to_end(key)


# --- the machine ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


# Builds a store of the backend under test with these limits, reading this clock.
Opener = Callable[[MemoryLimits, Clock], ConversationStore]


class StoreMachine(RuleBasedStateMachine):
    """Random calls on a real store and on the model; every answer must be the same."""

    opener: Opener
    clocked: bool  # idle time and leases follow the injected clock (not Redis)
    calls: Counter[str]  # how often each rule ran, over every example

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.calls = Counter()

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.store: ConversationStore | None = None
        self.model: ModelStore | None = None

    # The first value of each list is drawn most often: limits that keep something, a
    # cap that is reached, expiry on. Below 2 messages nothing is kept at all.
    @initialize(
        max_messages=st.sampled_from([4, 2, 5, 6, 3, 7, 1, 0]),
        max_conversations=st.sampled_from([2, 3, 1, 4]),
        ttl=st.sampled_from([True, False]),
        trim=st.sampled_from(["block", "sliding"]),
    )
    def open(self, max_messages: int, max_conversations: int, ttl: bool, trim: TrimPolicy) -> None:
        # On Redis an hour never passes within a test: the TTL is set, and never reached.
        ttl_s = (60.0 if self.clocked else 3600.0) if ttl else 0.0
        limits = MemoryLimits(max_messages, ttl_s, max_conversations, MAX_MESSAGE_CHARS, trim)
        self.store = type(self).opener(limits, self.clock)
        self.model = ModelStore(limits, seen=self.calls)
        self.calls["examples"] += 1

    def teardown(self) -> None:
        if self.store is not None:
            self.store.close()

    def leases(self) -> st.SearchStrategy[float]:
        return st.sampled_from([5.0, 30.0] if self.clocked else [300.0])

    @rule(key=st.sampled_from(KEYS), holder=st.sampled_from(HOLDERS), data=st.data())
    def begin(self, key: str, holder: str, data: st.DataObject) -> None:
        self.calls["begin"] += 1
        lease_s = data.draw(self.leases())
        expected = self.model.begin(key, holder, lease_s, self.clock.now)
        assert self.store.begin(key, holder, lease_s) == expected

    @rule(key=st.sampled_from(KEYS), holder=st.sampled_from(HOLDERS), data=st.data())
    def renew(self, key: str, holder: str, data: st.DataObject) -> None:
        self.calls["renew"] += 1
        lease_s = data.draw(self.leases())
        expected = self.model.renew(key, holder, lease_s, self.clock.now)
        assert self.store.renew(key, holder, lease_s) is expected

    @rule(
        key=st.sampled_from(KEYS),
        holder=st.sampled_from(HOLDERS),
        user=texts,
        reply=texts,
        ratio=st.none() | st.floats(0.5, 3.0),
        forgotten=st.sampled_from([0, 0, 2, 4, 10]),  # what the prompt left out (block)
    )
    def end_with_an_exchange(
        self,
        key: str,
        holder: str,
        user: str,
        reply: str,
        ratio: float | None,
        forgotten: int,
    ) -> None:
        self.calls["end_with_an_exchange"] += 1
        self.clock.now += TICK_S
        exchange = NewExchange(
            user, reply, asked_at=self.clock.now - 0.5, token_ratio=ratio, forgotten=forgotten
        )
        self.model.end(key, holder, exchange, self.clock.now)
        self.store.end(key, holder, exchange)

    @rule(key=st.sampled_from(KEYS), holder=st.sampled_from(HOLDERS))
    def end_without_an_exchange(self, key: str, holder: str) -> None:
        self.calls["end_without_an_exchange"] += 1
        self.model.end(key, holder, None, self.clock.now)
        self.store.end(key, holder)

    @rule(key=st.sampled_from(KEYS))
    def transcript(self, key: str) -> None:
        self.calls["transcript"] += 1
        assert self.store.transcript(key) == self.model.transcript(key, self.clock.now)

    @rule(key=st.sampled_from(KEYS))
    def forget(self, key: str) -> None:
        self.calls["forget"] += 1
        assert self.store.forget(key) is self.model.forget(key, self.clock.now)

    @rule(namespace=st.sampled_from(NAMESPACES), limit=st.integers(1, 5))
    def conversations(self, namespace: str, limit: int) -> None:
        self.calls["conversations"] += 1
        expected = self.model.listing(namespace, limit, self.clock.now)
        assert self.store.conversations(namespace, limit) == expected

    @rule()
    def count(self) -> None:
        self.calls["count"] += 1
        assert len(self.store) == self.model.count(self.clock.now)

    @precondition(lambda self: self.clocked)
    # Across the lease (5 or 30 s) and the TTL (60 s), and onto each boundary.
    @rule(seconds=st.sampled_from([61.0, 31.0, 5.0, 30.0, 60.0, 1.0, 59.0]))
    def wait(self, seconds: float) -> None:
        self.calls["wait"] += 1
        self.clock.now += seconds


def machine_on(name: str, opener: Opener, *, clocked: bool) -> type[StoreMachine]:
    """The machine, driving stores that `opener` builds."""
    return type(name, (StoreMachine,), {"opener": staticmethod(opener), "clocked": clocked})


RULES = {"begin", "renew", "end_with_an_exchange", "end_without_an_exchange", "transcript"}
RULES |= {"forget", "conversations", "count"}
EVENTS = {"busy", "trimmed", "evicted"}  # each must have happened in some example


def run(machine: type[StoreMachine], examples: int) -> None:
    """Run the machine; check every rule ran (and, when clocked, the clock moved)."""
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples * (10 if FUZZ else 1),
            stateful_step_count=60 if FUZZ else 40,
            derandomize=not FUZZ,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    print(f"{machine.__name__}: {dict(machine.calls)}")  # shown with -s or -rA
    assert machine.calls["examples"] >= examples
    assert RULES | EVENTS <= set(machine.calls)
    if machine.clocked:
        assert {"wait", "expired", "lapsed claim taken over"} <= set(machine.calls)


# --- one test per backend --------------------------------------------------------------------


def test_the_in_process_store_behaves_as_the_model():
    def opener(limits: MemoryLimits, clock: Clock) -> ConversationStore:
        return InProcessStore(limits, clock=clock, wall_clock=clock)

    run(machine_on("InProcessMachine", opener, clocked=True), examples=150)


def test_the_sqlite_store_behaves_as_the_model(tmp_path):
    def opener(limits: MemoryLimits, clock: Clock) -> ConversationStore:
        return SqliteStore(tmp_path / f"{uuid.uuid4().hex}.sqlite3", limits, clock=clock)

    run(machine_on("SqliteMachine", opener, clocked=True), examples=100)


@pytest.fixture
def redis_keys(redis_url):
    """A key prefix per example, and every key made under it deleted after the test."""
    prefixes: list[str] = []

    def fresh() -> str:
        prefixes.append(f"model-{uuid.uuid4().hex}:")
        return prefixes[-1]

    yield fresh
    with redis.Redis.from_url(redis_url) as client:
        for prefix in prefixes:
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)


def test_the_redis_store_behaves_as_the_model(redis_url, redis_keys):
    def opener(limits: MemoryLimits, clock: Clock) -> ConversationStore:
        return RedisStore(redis_url, limits, prefix=redis_keys(), wall_clock=clock)

    run(machine_on("RedisMachine", opener, clocked=False), examples=100)
