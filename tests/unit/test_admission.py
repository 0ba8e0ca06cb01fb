"""The admission gate with real threads (the threaded-server case; gevent is tested live)."""

from __future__ import annotations

import threading

import pytest

from piagent.chat.admission import AdmissionGate, Slot
from piagent.errors import Overloaded
from tests.servers import wait_until


class Recorder:
    """An AdmissionObserver that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.lock = threading.Lock()

    def queue_changed(self, active: int, waiting: int) -> None:
        with self.lock:
            self.events.append(("queue", active, waiting))

    def rejected(self, reason: str) -> None:
        with self.lock:
            self.events.append(("rejected", reason))

    def admitted(self, waited_s: float) -> None:
        with self.lock:
            self.events.append(("admitted",))

    def left_queue(self) -> None:
        with self.lock:
            self.events.append(("left",))

    @property
    def last_queue(self) -> tuple | None:
        with self.lock:
            return next((e for e in reversed(self.events) if e[0] == "queue"), None)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gate(**overrides) -> tuple[AdmissionGate, Recorder]:
    recorder = Recorder()
    options = {"slots": 1, "queue_max": 2, "timeout_s": 5.0, **overrides}
    return AdmissionGate(observer=recorder, **options), recorder


def acquire_in_thread(gate: AdmissionGate, key: str | None = None) -> tuple[threading.Thread, list]:
    """Start a thread that waits for a place; its result lands in the returned list."""
    result: list = []

    def run() -> None:
        try:
            result.append(gate.acquire(key))
        except Overloaded as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_free_place_is_taken_at_once():
    admission, recorder = gate()
    slot = admission.acquire()
    assert isinstance(slot, Slot)
    assert recorder.last_queue == ("queue", 1, 0)


def test_a_full_queue_refuses_at_once_with_retry_after():
    admission, recorder = gate(queue_max=1)
    admission.acquire()
    acquire_in_thread(admission)
    wait_until(lambda: recorder.last_queue == ("queue", 1, 1), 5, what="one queued")
    with pytest.raises(Overloaded) as refused:
        admission.acquire()
    assert refused.value.retry_after_s == 5  # nothing measured yet: the default
    assert "QUEUE_MAX=1" in refused.value.detail
    assert ("rejected", "queue_full") in recorder.events


def test_zero_queue_refuses_whenever_every_place_is_taken():
    admission, _ = gate(slots=2, queue_max=0)
    admission.acquire()
    admission.acquire()
    with pytest.raises(Overloaded):
        admission.acquire()


def test_released_place_goes_to_the_first_in_line():
    admission, recorder = gate(queue_max=2)
    holder = admission.acquire()
    first, first_result = acquire_in_thread(admission)
    wait_until(lambda: recorder.last_queue == ("queue", 1, 1), 5, what="first queued")
    second, second_result = acquire_in_thread(admission)
    wait_until(lambda: recorder.last_queue == ("queue", 1, 2), 5, what="second queued")

    holder.release()
    first.join(5)
    assert isinstance(first_result[0], Slot)
    assert second_result == []  # still waiting: one place, handed over, not shared
    first_result[0].release()
    second.join(5)
    assert isinstance(second_result[0], Slot)


def test_release_is_idempotent():
    admission, recorder = gate(queue_max=0)
    slot = admission.acquire()
    slot.release()
    slot.release()
    assert recorder.last_queue == ("queue", 0, 0)
    admission.acquire()
    with pytest.raises(Overloaded):  # a double release did not make room for two
        admission.acquire()


def test_waiting_longer_than_the_timeout_is_refused_and_leaves_the_queue():
    admission, recorder = gate(timeout_s=0.05, queue_max=1)
    admission.acquire()
    with pytest.raises(Overloaded) as refused:
        admission.acquire()
    assert "QUEUE_TIMEOUT_S" in refused.value.detail
    assert ("rejected", "queue_timeout") in recorder.events
    assert recorder.last_queue == ("queue", 1, 0)
    thread, result = acquire_in_thread(admission)  # the place in the queue is free again
    wait_until(lambda: recorder.last_queue == ("queue", 1, 1), 5, what="queued again")


def test_retry_after_follows_how_long_generations_take():
    clock = Clock()
    admission = AdmissionGate(slots=2, queue_max=0, timeout_s=1, clock=clock)
    slot = admission.acquire()
    clock.now += 12
    slot.release()  # one generation took 12 s; two places share the load
    admission.acquire()
    admission.acquire()
    with pytest.raises(Overloaded) as refused:
        admission.acquire()
    assert refused.value.retry_after_s == 6


# --- fairness between API keys --------------------------------------------------------


def queue_up(admission, recorder, keys: list[str | None]) -> list[tuple[threading.Thread, list]]:
    """Queue one waiter per key, in this order, each seen waiting before the next."""
    waiters = []
    for key in keys:
        waiters.append(acquire_in_thread(admission, key))
        count = len(waiters)
        wait_until(lambda n=count: recorder.last_queue[2] == n, 5, what=f"{count} queued")
    return waiters


def admitted_order(holder: Slot, waiters, names: list[str]) -> list[str]:
    """Free the place and let each admitted waiter pass it on; the names in admission order."""
    order: list[str] = []
    pending = dict(zip(names, waiters, strict=True))
    holder.release()
    while pending:

        def admitted():
            return next((n for n, (_, r) in pending.items() if r and isinstance(r[0], Slot)), None)

        name = wait_until(admitted, 5, what="the next admission")
        thread, result = pending.pop(name)
        thread.join(5)
        order.append(name)
        result[0].release()
    return order


def test_waiting_keys_take_turns_instead_of_first_come_first_served():
    admission, recorder = gate(queue_max=6, queue_max_per_key=3)
    holder = admission.acquire("flood")
    waiters = queue_up(admission, recorder, ["flood", "flood", "flood", "calm", "other"])
    order = admitted_order(holder, waiters, ["f1", "f2", "f3", "calm", "other"])
    # "flood" was served last (it holds the place), so the others go first, then turns.
    assert order == ["calm", "other", "f1", "f2", "f3"]


def test_keys_alternate_while_both_have_requests_waiting():
    admission, recorder = gate(queue_max=6, queue_max_per_key=3)
    holder = admission.acquire(None)
    waiters = queue_up(admission, recorder, ["a", "a", "a", "b", "b", "b"])
    order = admitted_order(holder, waiters, ["a1", "a2", "a3", "b1", "b2", "b3"])
    assert order == ["a1", "b1", "a2", "b2", "a3", "b3"]


def test_one_key_over_its_share_of_the_queue_is_refused_naming_the_limit():
    admission, recorder = gate(queue_max=4, queue_max_per_key=2)
    admission.acquire("flood")
    queue_up(admission, recorder, ["flood", "flood"])
    with pytest.raises(Overloaded) as refused:
        admission.acquire("flood")
    assert "QUEUE_MAX_PER_KEY=2" in refused.value.detail and "flood" in refused.value.detail
    assert ("rejected", "key_queue_full") in recorder.events
    # Another key still finds room in the queue.
    _, result = acquire_in_thread(admission, "calm")
    wait_until(lambda: recorder.last_queue == ("queue", 1, 3), 5, what="calm queued")
    assert result == []


def test_without_keys_the_whole_queue_is_one_line_first_come_first_served():
    admission, recorder = gate(queue_max=4, queue_max_per_key=1)
    holder = admission.acquire()
    waiters = queue_up(admission, recorder, [None, None, None, None])
    assert admitted_order(holder, waiters, ["1", "2", "3", "4"]) == ["1", "2", "3", "4"]
