import threading

from piagent.memory import ConversationStore, Message


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_store(clock=None, *, max_messages=8, ttl_s=3600.0, max_conversations=500):
    return ConversationStore(
        max_messages=max_messages,
        ttl_s=ttl_s,
        max_conversations=max_conversations,
        clock=clock or FakeClock(),
    )


def test_unknown_conversation_has_empty_history():
    assert make_store().history("nobody") == []


def test_exchange_is_remembered_oldest_first():
    store = make_store()
    store.save_exchange("c", "q1", "a1")
    store.save_exchange("c", "q2", "a2")
    assert store.history("c") == [
        Message("user", "q1"),
        Message("assistant", "a1"),
        Message("user", "q2"),
        Message("assistant", "a2"),
    ]


def test_only_the_most_recent_messages_are_kept():
    store = make_store(max_messages=4)
    for i in range(5):
        store.save_exchange("c", f"q{i}", f"a{i}")
    assert [m.content for m in store.history("c")] == ["q3", "a3", "q4", "a4"]


def test_odd_limit_never_starts_with_an_orphaned_reply():
    store = make_store(max_messages=3)
    store.save_exchange("c", "q1", "a1")
    store.save_exchange("c", "q2", "a2")
    history = store.history("c")
    assert history[0].role == "user"
    assert [m.content for m in history] == ["q2", "a2"]


def test_limit_below_two_keeps_nothing():
    store = make_store(max_messages=1)
    store.save_exchange("c", "q", "a")
    assert store.history("c") == []
    assert len(store) == 0


def test_idle_conversation_expires():
    clock = FakeClock()
    store = make_store(clock, ttl_s=60)
    store.save_exchange("c", "q", "a")
    clock.now += 60
    assert store.history("c") != []  # exactly the TTL is not yet idle longer than it
    clock.now += 60.001
    assert store.history("c") == []


def test_every_idle_conversation_expires_not_only_the_one_read():
    clock = FakeClock()
    store = make_store(clock, ttl_s=60)
    for cid in ("a", "b", "c"):
        store.save_exchange(cid, "q", "r")
    clock.now += 30
    store.history("c")  # c used again, a and b idle
    clock.now += 31
    store.history("other")
    assert len(store) == 1
    assert store.history("c") != []


def test_zero_ttl_never_expires():
    clock = FakeClock()
    store = make_store(clock, ttl_s=0)
    store.save_exchange("c", "q", "a")
    clock.now += 10**9
    assert store.history("c") != []


def test_least_recently_used_is_dropped_past_the_cap():
    clock = FakeClock()
    store = make_store(clock, max_conversations=2)
    store.save_exchange("a", "q", "r")
    clock.now += 1
    store.save_exchange("b", "q", "r")
    clock.now += 1
    store.history("a")  # a is now more recent than b
    clock.now += 1
    store.save_exchange("c", "q", "r")
    assert len(store) == 2
    assert store.history("b") == []
    assert store.history("a") != [] and store.history("c") != []


def test_history_is_a_copy():
    store = make_store()
    store.save_exchange("c", "q", "a")
    store.history("c").clear()
    assert len(store.history("c")) == 2


def test_threads_hammering_one_conversation_keep_exchanges_whole():
    store = make_store(max_messages=1000, max_conversations=10)
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for i in range(50):
            store.save_exchange("shared", f"q{n}-{i}", f"a{n}-{i}")
            store.history("shared")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    history = store.history("shared")
    assert len(history) == 800
    for user, reply in zip(history[::2], history[1::2], strict=True):
        assert user.role == "user" and reply.role == "assistant"
        assert reply.content == "a" + user.content[1:]


def test_threads_on_many_conversations_respect_the_cap():
    store = make_store(max_conversations=20)

    def worker(n: int) -> None:
        for i in range(100):
            store.save_exchange(f"c{n}-{i}", "q", "a")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store) == 20
