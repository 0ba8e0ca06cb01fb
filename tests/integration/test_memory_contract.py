"""One contract, three stores: in-process, a real SQLite file, a real redis-server."""

from __future__ import annotations

import sqlite3
import threading
import uuid

import pytest
import redis

from piagent.memory.base import MemoryLimits, NewExchange, Recollection, StoredMessage
from piagent.memory.in_process import InProcessStore
from piagent.memory.redis_store import RedisStore
from piagent.memory.sqlite_store import SqliteStore
from piagent.messages import Message
from tests.servers import run_in_threads, wait_until

BACKENDS = ["memory", "sqlite", "redis"]
SHARED = ["sqlite", "redis"]  # stores that several processes can open at once
CLOCKED = ["memory", "sqlite"]  # stores whose idle time follows an injected clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_store(request, tmp_path, clock):
    """Build stores of this test's backend; stores built twice share their data."""
    backend = request.param
    prefix = f"test-{uuid.uuid4().hex}:"
    url = request.getfixturevalue("redis_url") if backend == "redis" else ""
    opened = []

    def build(
        *, max_messages=8, ttl_s=3600.0, max_conversations=500, max_message_chars=4000, trim="block"
    ):
        limits = MemoryLimits(max_messages, ttl_s, max_conversations, max_message_chars, trim)
        if backend == "memory":
            store = InProcessStore(limits, clock=clock, wall_clock=clock)
        elif backend == "sqlite":
            store = SqliteStore(tmp_path / "memory.sqlite3", limits, clock=clock)
        else:
            store = RedisStore(url, limits, prefix=prefix, wall_clock=clock)
        opened.append(store)
        return store

    build.backend = backend
    build.prefix = prefix
    build.redis_url = url
    yield build
    for store in opened:
        store.close()


def on(*backends):
    return pytest.mark.parametrize("open_store", backends, indirect=True)


def save(
    store, conversation_id, user="q", reply="a", *, asked_at=1.0, token_ratio=None, forgotten=0
):
    """One request's turn: claim the conversation, then keep an exchange and let go."""
    holder = uuid.uuid4().hex
    assert store.begin(conversation_id, holder, 30) is not None
    exchange = NewExchange(user, reply, asked_at, token_ratio, forgotten)
    store.end(conversation_id, holder, exchange)


def recall(store, conversation_id) -> Recollection:
    """One request's turn that kept nothing: what the conversation brought to it."""
    holder = uuid.uuid4().hex
    recollection = store.begin(conversation_id, holder, 30)
    store.end(conversation_id, holder)
    return recollection


def contents(store, conversation_id) -> list[str]:
    return [m.content for m in recall(store, conversation_id).messages]


# --- remembering ------------------------------------------------------------------------


@on(*BACKENDS)
def test_unknown_conversation_is_empty_everywhere(open_store):
    store = open_store()
    assert recall(store, "nobody") == Recollection([])
    assert store.transcript("nobody") is None
    assert store.forget("nobody") is False
    assert len(store) == 0


@on(*BACKENDS)
def test_exchange_is_remembered_oldest_first_with_its_times(open_store, clock):
    store = open_store()
    clock.now = 1_750_000_010.5
    save(store, "c", "q1", "a1", asked_at=1_750_000_001.25)
    clock.now = 1_750_000_020.5
    save(store, "c", "q2", "a2", asked_at=1_750_000_015.0)
    assert recall(store, "c").messages == [
        Message("user", "q1"),
        Message("assistant", "a1"),
        Message("user", "q2"),
        Message("assistant", "a2"),
    ]
    assert store.transcript("c") == [
        StoredMessage("user", "q1", 1_750_000_001.25),
        StoredMessage("assistant", "a1", 1_750_000_010.5),
        StoredMessage("user", "q2", 1_750_000_015.0),
        StoredMessage("assistant", "a2", 1_750_000_020.5),
    ]


@on(*BACKENDS)
def test_text_survives_the_store_exactly(open_store):
    store = open_store()
    text = 'quotes " \\ newlines \n tabs \t emoji 😀 nul-free unicode é 中文 [1, "x"]'
    save(store, "c", text, text[::-1])
    assert contents(store, "c") == [text, text[::-1]]


def kept_after_each_save(store, saves: int) -> list[list[str]]:
    """The conversation's contents after each of `saves` exchanges q0/a0, q1/a1, ..."""
    kept = []
    for i in range(saves):
        save(store, "c", f"q{i}", f"a{i}")
        kept.append(contents(store, "c"))
    return kept


def exchanges(first: int, last: int) -> list[str]:
    """q<first>, a<first>, ..., q<last>, a<last>."""
    return [text for i in range(first, last + 1) for text in (f"q{i}", f"a{i}")]


@on(*BACKENDS)
def test_sliding_trim_keeps_the_newest_messages_dropping_the_oldest_exchange_each_time(
    open_store,
):
    store = open_store(max_messages=8, trim="sliding")
    kept = kept_after_each_save(store, 7)
    assert kept[:4] == [exchanges(0, last) for last in range(4)]
    assert kept[4:] == [exchanges(1, 4), exchanges(2, 5), exchanges(3, 6)]


@on(*BACKENDS)
def test_block_trim_halves_a_full_conversation_at_once_then_only_appends(open_store):
    store = open_store(max_messages=8, trim="block")
    kept = kept_after_each_save(store, 11)
    assert kept[:4] == [exchanges(0, last) for last in range(4)]
    # The fifth exchange is one too many: the older half goes, the newest two stay.
    assert kept[4:] == [
        exchanges(3, 4),
        exchanges(3, 5),
        exchanges(3, 6),
        exchanges(6, 7),
        exchanges(6, 8),
        exchanges(6, 9),
        exchanges(9, 10),
    ]


@on(*BACKENDS)
@pytest.mark.parametrize("trim", ["block", "sliding"])
def test_odd_limit_keeps_whole_exchanges_never_an_orphaned_reply(open_store, trim):
    store = open_store(max_messages=3, trim=trim)
    save(store, "c", "q1", "a1")
    save(store, "c", "q2", "a2")
    assert contents(store, "c") == ["q2", "a2"]


@on(*BACKENDS)
@pytest.mark.parametrize(
    ("max_messages", "left"),
    [(2, 2), (4, 2), (5, 2), (6, 2), (8, 4), (10, 4), (12, 6), (20, 10)],
)
def test_block_trim_keeps_the_newer_half_of_the_exchanges_and_at_least_one(
    open_store, max_messages, left
):
    store = open_store(max_messages=max_messages, trim="block")
    kept = kept_after_each_save(store, max_messages // 2 + 1)
    assert kept[-1] == exchanges(max_messages // 2 + 1 - left // 2, max_messages // 2)


@on(*BACKENDS)
@pytest.mark.parametrize("trim", ["block", "sliding"])
def test_forgotten_messages_go_before_the_exchange_is_kept(open_store, trim):
    store = open_store(max_messages=8, trim=trim)
    kept_after_each_save(store, 3)
    save(store, "c", "q3", "a3", forgotten=4)  # the prompt left out the two oldest exchanges
    assert contents(store, "c") == exchanges(2, 3)
    save(store, "c", "q4", "a4", forgotten=10)  # more than it holds: only the new one stays
    assert contents(store, "c") == exchanges(4, 4)


@on(*BACKENDS)
@pytest.mark.parametrize(
    ("trim", "kept"), [("block", exchanges(4, 5)), ("sliding", exchanges(2, 5))]
)
def test_what_is_left_after_forgetting_is_trimmed_as_usual(open_store, trim, kept):
    store = open_store(max_messages=8, trim=trim)
    kept_after_each_save(store, 4)
    save(store, "c", "q4", "a4", forgotten=2)  # 8 left with the new exchange: within the limit
    save(store, "c", "q5", "a5")  # one too many
    assert contents(store, "c") == kept


@on(*BACKENDS)
def test_limit_below_two_keeps_nothing(open_store):
    store = open_store(max_messages=1)
    save(store, "c")
    assert store.transcript("c") is None
    assert len(store) == 0


@on(*BACKENDS)
def test_long_messages_are_cut_to_the_cap(open_store):
    store = open_store(max_message_chars=10)
    save(store, "c", "u" * 50, "r" * 50)
    assert contents(store, "c") == ["u" * 10, "r" * 10]


@on(*BACKENDS)
def test_token_ratio_is_kept_until_a_new_one_is_learnt(open_store):
    store = open_store()
    save(store, "c", token_ratio=0.75)
    save(store, "c", token_ratio=None)
    assert recall(store, "c").token_ratio == 0.75
    save(store, "c", token_ratio=1.25)
    assert recall(store, "c").token_ratio == 1.25


@on(*BACKENDS)
def test_conversations_do_not_mix(open_store):
    store = open_store()
    save(store, "A", "for A", "ra")
    save(store, "B", "for B", "rb")
    assert contents(store, "A") == ["for A", "ra"]
    assert contents(store, "B") == ["for B", "rb"]
    assert len(store) == 2


@on(*BACKENDS)
def test_forget_drops_one_conversation(open_store):
    store = open_store()
    save(store, "A")
    save(store, "B")
    assert store.forget("A") is True
    assert store.transcript("A") is None
    assert store.forget("A") is False
    assert contents(store, "B") == ["q", "a"]
    assert len(store) == 1


# --- least recently used ----------------------------------------------------------------


@on(*BACKENDS)
def test_least_recently_used_is_dropped_past_the_cap(open_store):
    store = open_store(max_conversations=2)
    save(store, "a")
    save(store, "b")
    recall(store, "a")  # a is now more recent than b
    save(store, "c")
    assert len(store) == 2
    assert store.transcript("b") is None
    assert store.transcript("a") is not None and store.transcript("c") is not None


@on(*BACKENDS)
def test_looking_at_a_transcript_does_not_count_as_use(open_store):
    store = open_store(max_conversations=2)
    save(store, "a")
    save(store, "b")
    store.transcript("a")
    save(store, "c")
    assert store.transcript("a") is None


@on(*BACKENDS)
def test_a_flood_of_new_ids_stays_within_the_cap(open_store):
    store = open_store(max_conversations=20)
    for i in range(200):
        save(store, f"flood-{i}")
    assert len(store) == 20
    assert contents(store, "flood-199") == ["q", "a"]
    assert store.transcript("flood-179") is None


# --- idle expiry on an injected clock (Redis's own expiry is tested below) ----------------


@on(*CLOCKED)
def test_idle_conversation_expires(open_store, clock):
    store = open_store(ttl_s=60)
    save(store, "c")
    clock.now += 60
    assert contents(store, "c") != []  # idle exactly the TTL: not yet longer than it
    clock.now += 60.001
    assert contents(store, "c") == []
    assert store.transcript("c") is None


@on(*CLOCKED)
def test_every_idle_conversation_expires_not_only_the_one_read(open_store, clock):
    store = open_store(ttl_s=60)
    for cid in ("a", "b", "c"):
        save(store, cid)
    clock.now += 30
    recall(store, "c")  # c used again, a and b idle
    clock.now += 31
    assert len(store) == 1
    assert contents(store, "c") != []


@on(*CLOCKED)
def test_zero_ttl_never_expires(open_store, clock):
    store = open_store(ttl_s=0)
    save(store, "c")
    clock.now += 10**9
    assert contents(store, "c") == ["q", "a"]


@on(*CLOCKED)
def test_expired_conversation_cannot_be_forgotten_again(open_store, clock):
    store = open_store(ttl_s=60)
    save(store, "c")
    clock.now += 61
    assert store.forget("c") is False


@on(*CLOCKED)
def test_lapsed_hold_can_be_taken_over(open_store, clock):
    store = open_store()
    assert store.begin("c", "first", 10) is not None
    clock.now += 10.5
    assert store.begin("c", "second", 10) is not None
    store.end("c", "first")  # the first request ending late must not free it
    assert store.begin("c", "third", 10) is None


@on(*CLOCKED)
def test_a_renewed_lease_outlives_its_first_term_and_lapses_once_no_longer_renewed(
    open_store, clock
):
    store = open_store()
    assert store.begin("c", "first", 10) is not None
    for _ in range(5):  # five terms of the first lease
        clock.now += 9
        assert store.renew("c", "first", 10) is True
        assert store.begin("c", "second", 10) is None
    clock.now += 10
    assert store.renew("c", "first", 10) is False  # lapsed, though nobody took it yet
    assert store.begin("c", "second", 10) is not None
    assert store.renew("c", "first", 10) is False
    assert store.renew("c", "second", 10) is True


# --- holds: one request at a time per conversation ---------------------------------------


@on(*BACKENDS)
def test_one_request_at_a_time_holds_a_conversation(open_store):
    store = open_store()
    save(store, "c")
    remembered = Recollection([Message("user", "q"), Message("assistant", "a")])
    assert store.begin("c", "first", 30) == remembered
    assert store.begin("c", "second", 30) is None
    assert store.begin("other", "second", 30) == Recollection([])
    store.end("c", "second")  # not its hold
    assert store.begin("c", "second", 30) is None
    store.end("c", "first")
    assert store.begin("c", "second", 30) == remembered


@on(*BACKENDS)
def test_only_the_holder_renews_its_lease(open_store):
    store = open_store()
    assert store.begin("c", "first", 30) is not None
    assert store.renew("c", "first", 30) is True
    assert store.renew("c", "second", 30) is False
    assert store.begin("c", "second", 30) is None  # the failed renewal took nothing
    assert store.renew("unknown", "first", 30) is False
    store.end("c", "first")
    assert store.renew("c", "first", 30) is False  # let go: a late renewal does not revive it
    assert store.begin("c", "second", 30) is not None


@on(*BACKENDS)
def test_threads_racing_for_a_conversation_let_exactly_one_in(open_store):
    store = open_store()
    start = threading.Barrier(8)
    winners: list[int] = []

    def claim(n: int) -> None:
        start.wait()
        if store.begin("contended", f"holder-{n}", 30) is not None:
            winners.append(n)

    run_in_threads(claim, range(8))
    assert len(winners) == 1


# --- concurrency --------------------------------------------------------------------------


@on(*BACKENDS)
def test_threads_taking_turns_on_one_conversation_keep_every_exchange_whole(open_store):
    store = open_store(max_messages=1000, max_conversations=10)
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for i in range(25):
            holder = f"{n}-{i}"
            wait_until(lambda: store.begin("shared", holder, 30), 10, interval=0.001)  # noqa: B023
            store.end("shared", holder, NewExchange(f"q{n}-{i}", f"a{n}-{i}", 1.0))

    run_in_threads(worker, range(8))

    history = recall(store, "shared").messages
    assert len(history) == 400
    for user, reply in zip(history[::2], history[1::2], strict=True):
        assert user.role == "user" and reply.role == "assistant"
        assert reply.content == "a" + user.content[1:]
    for n in range(8):  # each writer's exchanges in the order it saved them
        mine = [m.content for m in history if m.content.startswith(f"q{n}-")]
        assert mine == [f"q{n}-{i}" for i in range(25)]


@on(*BACKENDS)
def test_threads_on_many_conversations_respect_the_cap(open_store):
    store = open_store(max_conversations=20)

    def worker(n: int) -> None:
        for i in range(50):
            save(store, f"c{n}-{i}")

    run_in_threads(worker, range(4))
    assert len(store) == 20


# --- listing a namespace's conversations -------------------------------------------------


def listed(store, namespace="", limit=50) -> list[str]:
    return [summary.conversation_id for summary in store.conversations(namespace, limit)]


@on(*BACKENDS)
def test_listing_shows_newest_update_first_with_title_time_and_count(open_store, clock):
    store = open_store()
    for n, cid in enumerate(["old", "middle", "new"]):
        clock.now += 10
        save(store, cid, f"question {n}", "answer", asked_at=clock.now - 1)
    clock.now += 10
    save(store, "old", "follow-up", "answer")  # updated last, so listed first
    summaries = store.conversations("", 50)
    assert [s.conversation_id for s in summaries] == ["old", "new", "middle"]
    first = summaries[0]
    assert first.title == "question 0"  # the first user message, not the newest one
    assert first.messages == 4
    assert first.updated_at == store.transcript("old")[-1].at == clock.now
    assert summaries[1].messages == 2


@on(*BACKENDS)
def test_listing_is_empty_for_a_namespace_with_no_conversation(open_store):
    store = open_store()
    assert store.conversations("", 50) == []
    save(store, "k1/c")
    assert store.conversations("", 50) == []
    assert store.conversations("k2/", 50) == []


@on(*BACKENDS)
def test_listing_stays_inside_its_namespace(open_store, clock):
    store = open_store()
    for key in ["plain", "k1/mine", "k2/theirs", "k1/also-mine"]:
        clock.now += 1
        save(store, key)
    assert listed(store, "k1/") == ["also-mine", "mine"]
    assert listed(store, "k2/") == ["theirs"]
    assert listed(store, "") == ["plain"]


@on(*BACKENDS)
def test_listing_cuts_titles_to_80_whole_characters(open_store, clock):
    store = open_store()
    for cid, text in [("ascii", "x" * 200), ("accents", "é" * 200), ("emoji", "😀" * 200)]:
        clock.now += 1
        save(store, cid, text)
    titles = {s.conversation_id: s.title for s in store.conversations("", 50)}
    assert titles == {"ascii": "x" * 80, "accents": "é" * 80, "emoji": "😀" * 80}


@on(*BACKENDS)
def test_listing_keeps_a_title_past_a_nul_character(open_store):
    # Found by tests/integration/test_memory_model.py: SQLite's substr() stopped at the NUL.
    store = open_store()
    save(store, "c", "\x00 then text")
    assert [s.title for s in store.conversations("", 50)] == ["\x00 then text"]


@on(*BACKENDS)
def test_listing_takes_the_title_from_the_first_remembered_message(open_store, clock):
    store = open_store(max_messages=2)
    save(store, "c", "first question")
    clock.now += 1
    save(store, "c", "second question")
    [summary] = store.conversations("", 50)
    assert (summary.title, summary.messages) == ("second question", 2)


@on(*BACKENDS)
def test_listing_returns_at_most_the_limit_newest(open_store, clock):
    store = open_store()
    for i in range(7):
        clock.now += 1
        save(store, f"c{i}")
    assert listed(store, limit=3) == ["c6", "c5", "c4"]
    assert len(listed(store, limit=200)) == 7


@on(*BACKENDS)
def test_listing_leaves_out_forgotten_and_pushed_out_conversations(open_store, clock):
    store = open_store(max_conversations=3)
    for i in range(5):
        clock.now += 1
        save(store, f"c{i}")
    store.forget("c3")
    assert listed(store) == ["c4", "c2"]


@on(*BACKENDS)
def test_listing_does_not_count_as_use(open_store, clock):
    store = open_store(max_conversations=2)
    save(store, "a")
    clock.now += 1
    save(store, "b")
    assert listed(store) == ["b", "a"]
    clock.now += 1
    save(store, "c")  # a is still the least recently used, so it goes
    assert listed(store) == ["c", "b"]


@on(*CLOCKED)
def test_listing_never_keeps_an_idle_conversation_alive(open_store, clock):
    store = open_store(ttl_s=60)
    save(store, "c")
    for _ in range(3):
        clock.now += 30
        listed(store)
    assert listed(store) == []
    assert store.transcript("c") is None


# --- shared and durable stores -----------------------------------------------------------


@on(*SHARED)
def test_a_second_store_on_the_same_backend_sees_and_holds_the_same(open_store):
    first, second = open_store(), open_store()
    save(first, "c", "q1", "a1")
    save(second, "c", "q2", "a2")
    assert contents(first, "c") == ["q1", "a1", "q2", "a2"]
    assert first.begin("c", "one", 30) is not None
    assert second.begin("c", "two", 30) is None


@on("sqlite")
def test_sqlite_file_keeps_conversations_after_closing(open_store, tmp_path):
    store = open_store()
    save(store, "c", "q1", "a1", token_ratio=0.8)
    store.close()
    reopened = open_store()
    assert contents(reopened, "c") == ["q1", "a1"]
    assert recall(reopened, "c").token_ratio == 0.8
    with sqlite3.connect(tmp_path / "memory.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@on("sqlite")
def test_sqlite_rows_stay_bounded_under_a_flood(open_store, tmp_path, clock):
    store = open_store(max_conversations=10, ttl_s=60)
    for i in range(100):
        save(store, f"flood-{i}")
        store.begin(f"flood-{i}", "crashed-before-its-end", 5)
        clock.now += 1
    with sqlite3.connect(tmp_path / "memory.sqlite3") as db:
        counts = [
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("conversations", "messages", "holds")
        ]
        (tally,) = db.execute("SELECT conversations FROM tally").fetchone()
    # Holds left behind by crashed requests are swept once they lapse.
    assert counts[:2] == [10, 20] and counts[2] <= 6
    assert tally == 10


# --- Redis: real expiry ------------------------------------------------------------------


def redis_keys(open_store) -> set[str]:
    client = redis.Redis.from_url(open_store.redis_url, decode_responses=True)
    with client:
        return set(client.scan_iter(f"{open_store.prefix}*"))


@on("redis")
def test_redis_forgets_an_idle_conversation_by_key_expiry(open_store):
    store = open_store(ttl_s=0.3)
    save(store, "c", token_ratio=0.9)
    assert len(redis_keys(open_store)) == 4  # messages, ratio, recency set, namespace index
    wait_until(lambda: store.transcript("c") is None, 5, what="the conversation to expire")
    assert recall(store, "c").messages == []
    wait_until(lambda: len(redis_keys(open_store)) <= 2, 5, what="its keys to expire")
    assert store.conversations("", 50) == []  # and listing prunes it from the index
    assert redis_keys(open_store) <= {f"{open_store.prefix}recent"}


@on("redis")
def test_redis_expiry_spares_a_conversation_in_use(open_store):
    store = open_store(ttl_s=0.3)
    for cid in ("a", "b", "c"):
        save(store, cid)

    def a_and_b_gone_while_c_is_used() -> bool:
        assert recall(store, "c").messages != []
        return store.transcript("a") is None and store.transcript("b") is None

    wait_until(a_and_b_gone_while_c_is_used, 5, what="a and b to expire")
    assert len(store) == 1


@on("redis")
def test_redis_keys_stay_bounded_under_a_flood(open_store):
    store = open_store(max_conversations=10)
    for i in range(100):
        save(store, f"flood-{i}", token_ratio=1.0)
    keys = redis_keys(open_store)
    assert len(keys) == 2 * 10 + 2  # and the recency set and the namespace index
    assert f"{open_store.prefix}messages:flood-99" in keys


@on("redis")
def test_redis_hold_lapses_by_itself_and_cannot_be_renewed_after(open_store):
    store = open_store()
    assert store.begin("c", "crashed", 0.2) is not None
    wait_until(lambda: store.begin("c", "next", 30), 5, what="the hold to lapse")
    assert store.renew("c", "crashed", 30) is False
    assert store.renew("c", "next", 30) is True


@on("redis")
def test_redis_renewal_moves_the_expiry_of_the_hold(open_store):
    store = open_store()
    assert store.begin("c", "first", 0.2) is not None
    assert store.renew("c", "first", 60) is True
    with redis.Redis.from_url(open_store.redis_url) as client:
        # Without the renewal the hold would be gone within 0.2 s.
        assert client.pttl(f"{open_store.prefix}hold:c") > 30_000


@on("redis")
def test_redis_namespace_index_stays_within_the_cap(open_store, clock):
    store = open_store(max_conversations=10)
    for i in range(40):
        clock.now += 1
        save(store, f"k1/flood-{i}")
    client = redis.Redis.from_url(open_store.redis_url, decode_responses=True)
    with client:
        indexed = client.zrange(f"{open_store.prefix}conversations:k1/", 0, -1)
    assert indexed == [f"k1/flood-{i}" for i in range(30, 40)]
    assert len(store.conversations("k1/", 200)) == 10


@on("redis")
def test_redis_listing_lets_an_idle_conversation_expire(open_store):
    store = open_store(ttl_s=0.3)
    save(store, "c")

    def listed_until_gone() -> bool:
        return store.conversations("", 50) == []

    wait_until(listed_until_gone, 5, what="the conversation to expire while being listed")
    assert store.transcript("c") is None
