"""The generation owns everything a request holds and releases each thing exactly once.

The collaborators are the real ones (admission gate, in-process store, turn, trace,
metrics) with a counter on each release; the model server is a scripted ChatStream.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from piagent.chat.admission import AdmissionGate
from piagent.chat.conversation import Turn
from piagent.chat.disconnect import DisconnectWatch
from piagent.chat.generation import Generation
from piagent.errors import ClientGone, Overloaded, UpstreamError, UpstreamTimeout
from piagent.memory.base import MemoryLimits
from piagent.memory.in_process import InProcessStore
from piagent.messages import Message
from piagent.ops.metrics import Metrics
from piagent.ops.trace import RequestTrace
from piagent.providers.base import ChatStats, GenerationOptions
from tests.unit.test_admission import Recorder

OPTIONS = GenerationOptions(temperature=0.5, ctx_tokens=2048, max_tokens=100)
CALL = ([Message("user", "hi")], "m", OPTIONS)
LIMITS = MemoryLimits(
    max_messages=8, ttl_s=0, max_conversations=10, max_message_chars=4000, trim="block"
)


class Upstream:
    """A scripted reply: its fragments, then an error or the end (with stats).

    Each item of `fragments` arrives on its own: a string, or a list arriving together.
    """

    def __init__(self, fragments: list[str | list[str]], error: BaseException | None = None):
        self.stats: ChatStats | None = None
        self.closed = 0
        self._fragments = fragments
        self._error = error
        self.fail_on_close: Exception | None = None

    def __iter__(self) -> Iterator[list[str]]:
        batches = [[item] if isinstance(item, str) else item for item in self._fragments]
        yield from batches
        if self._error is not None:
            raise self._error
        self.stats = ChatStats(prompt_tokens=3, completion_tokens=sum(map(len, batches)))

    def close(self) -> None:
        self.closed += 1
        if self.fail_on_close is not None:
            raise self.fail_on_close


class Provider:
    """Opens the scripted reply, or fails before any fragment."""

    name = "scripted"

    def __init__(self, upstream: Upstream | None = None, error: BaseException | None = None):
        self.upstream = upstream
        self.error = error

    def open_chat(self, messages, model, options, *, stream):
        if self.error is not None:
            raise self.error
        return self.upstream


class CountingStore(InProcessStore):
    """The in-process store, counting how often a turn lets go of its conversation."""

    def __init__(self) -> None:
        super().__init__(LIMITS)
        self.ends = 0

    def end(self, conversation_id, holder, exchange=None):
        self.ends += 1
        super().end(conversation_id, holder, exchange)


class CountingWatch(DisconnectWatch):
    """A watch with nothing to watch (no gevent socket), counting its close."""

    def __init__(self) -> None:
        super().__init__({})
        self.closes = 0

    def close(self) -> None:
        self.closes += 1
        super().close()


class Setup:
    """One generation and every counter around it."""

    def __init__(self, provider: Provider, *, stream: bool = True, queue_max: int = 0) -> None:
        self.store = CountingStore()
        self.queue = Recorder()
        self.gate = AdmissionGate(slots=1, queue_max=queue_max, timeout_s=5, observer=self.queue)
        self.watch = CountingWatch()
        self.trace = RequestTrace()
        self.metrics = Metrics()
        self.generation = Generation(
            provider=provider,
            admission=self.gate,
            metrics=self.metrics,
            trace=self.trace,
            watch=self.watch,
            stream=stream,
        )
        self.turn = Turn(self.store, "c1", "hello", lease_s=60, trim="block")
        self.generation.take(self.turn)

    def queue_changes(self) -> list[tuple[int, int]]:
        return [event[1:] for event in self.queue.events if event[0] == "queue"]

    def kept(self) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in self.store.transcript("c1") or []]

    def metric(self, name: str, **labels: str) -> float:
        collected = {
            sample.name: sample.value
            for family in self.metrics._exposed.collect()
            for sample in family.samples
            if sample.labels == labels
        }
        return collected.get(name, 0.0)

    def assert_released_once(self) -> None:
        assert self.store.ends == 1  # the turn
        assert self.watch.closes == 1
        # Each place taken is given back once: the gate is empty, and one more fits.
        assert self.queue.events.count(("queue", 0, 0)) <= 1
        assert self.gate.acquire()
        assert self.store.begin("c1", "next", 10) is not None  # nobody holds it


def test_complete_stream_keeps_the_reply_and_releases_everything_once():
    upstream = Upstream(["a", "b"])
    setup = Setup(Provider(upstream))
    generation = setup.generation
    generation.start(*CALL)
    assert list(generation.fragments()) == [["a"], ["b"]]
    generation.keep()
    generation.close()
    generation.close()  # the server's close after the body's own end: nothing twice
    assert upstream.closed == 1
    assert setup.queue_changes() == [(1, 0), (0, 0)]
    setup.assert_released_once()
    assert setup.kept() == [("user", "hello"), ("assistant", "ab")]
    assert setup.trace.outcome == "complete" and setup.trace.stats == upstream.stats
    assert setup.metric("piagent_generated_tokens_total") == 2


def test_client_gone_mid_stream_keeps_what_it_saw():
    upstream = Upstream(["a", "b", "c"], error=ClientGone("gone"))
    setup = Setup(Provider(upstream))
    generation = setup.generation
    generation.start(*CALL)
    fragments = generation.fragments()
    assert [next(fragments), next(fragments)] == [["a"], ["b"]]  # "b" not yet written
    with pytest.raises(ClientGone):
        list(fragments)
    generation.close()
    assert upstream.closed == 1
    setup.assert_released_once()
    assert setup.kept() == [("user", "hello"), ("assistant", "abc")]
    assert setup.trace.outcome == "cancelled"
    assert setup.metric("piagent_cancellations_total", stage="generating") == 1


def test_client_gone_at_a_write_keeps_only_what_was_written():
    upstream = Upstream(["a", "b", "c"])
    setup = Setup(Provider(upstream))
    generation = setup.generation
    generation.start(*CALL)
    fragments = generation.fragments()
    next(fragments), next(fragments)
    fragments.close()  # the server could not write "b": the generator is closed there
    generation.close()
    setup.assert_released_once()
    assert setup.kept() == [("user", "hello"), ("assistant", "a")]
    assert setup.trace.outcome == "cancelled"
    assert setup.metric("piagent_cancellations_total", stage="generating") == 1


def test_fragments_that_arrived_together_are_delivered_together():
    upstream = Upstream(["a", ["b", "c"], "d"])
    setup = Setup(Provider(upstream))
    generation = setup.generation
    generation.start(*CALL)
    fragments = generation.fragments()
    assert [next(fragments), next(fragments)] == [["a"], ["b", "c"]]
    next(fragments)
    fragments.close()  # the server could not write "d"
    generation.close()
    assert setup.kept() == [("user", "hello"), ("assistant", "abc")]


def test_client_gone_before_the_first_token_keeps_nothing():
    upstream = Upstream([], error=ClientGone("gone"))
    setup = Setup(Provider(upstream))
    with pytest.raises(ClientGone):
        setup.generation.start(*CALL)
    setup.generation.close()
    assert upstream.closed == 1
    setup.assert_released_once()
    assert setup.kept() == []
    assert setup.trace.outcome == "cancelled"


def test_client_gone_during_a_whole_reply_keeps_nothing():
    upstream = Upstream(["a", "b"], error=ClientGone("gone"))
    setup = Setup(Provider(upstream), stream=False)
    generation = setup.generation
    generation.start(*CALL)
    with pytest.raises(ClientGone):
        list(generation.fragments())
    generation.close()
    setup.assert_released_once()
    assert setup.kept() == []  # a non-stream client saw nothing of it


@pytest.mark.parametrize("error", [UpstreamError("broke"), UpstreamTimeout("slow")])
def test_upstream_failure_mid_stream_keeps_nothing_and_is_counted(error):
    upstream = Upstream(["a"], error=error)
    setup = Setup(Provider(upstream))
    generation = setup.generation
    generation.start(*CALL)
    with pytest.raises(UpstreamError):
        list(generation.fragments())
    generation.settle()  # the relay ends the turn before telling the client
    generation.close()
    assert upstream.closed == 1
    setup.assert_released_once()
    assert setup.kept() == []
    assert setup.trace.outcome == "upstream_error"
    assert setup.metric("piagent_upstream_errors_total", kind=error.kind) == 1


@pytest.mark.parametrize("error", [UpstreamError("down"), UpstreamTimeout("slow")])
def test_upstream_failure_before_the_reply_opens_releases_the_place(error):
    setup = Setup(Provider(error=error))
    with pytest.raises(UpstreamError):
        setup.generation.start(*CALL)
    setup.generation.close()
    assert setup.queue_changes() == [(1, 0), (0, 0)]
    setup.assert_released_once()
    assert setup.trace.outcome == "upstream_error"


def test_refused_by_a_full_queue_holds_nothing():
    setup = Setup(Provider(Upstream(["a"])))
    setup.gate.acquire()  # another request has the only place; none may wait
    with pytest.raises(Overloaded):
        setup.generation.start(*CALL)
    setup.generation.close()
    assert setup.store.ends == 1 and setup.watch.closes == 1
    assert setup.trace.outcome is None  # refused, not a generation
    assert setup.metric("piagent_cancellations_total", stage="generating") == 0


def test_a_body_never_iterated_still_releases_everything():
    upstream = Upstream(["a"])
    setup = Setup(Provider(upstream))
    setup.generation.start(*CALL)
    setup.generation.close()
    assert upstream.closed == 1
    setup.assert_released_once()
    assert setup.kept() == []  # the client saw nothing
    assert setup.trace.outcome == "cancelled"


def test_a_failing_release_does_not_stop_the_others(caplog):
    upstream = Upstream(["a"])
    upstream.fail_on_close = RuntimeError("socket already gone")
    setup = Setup(Provider(upstream))
    generation = setup.generation
    generation.start(*CALL)
    list(generation.fragments())
    generation.keep()
    generation.close()  # does not raise: the server's own cleanup must still run
    assert upstream.closed == 1
    setup.assert_released_once()
    assert "releasing its generation failed" in caplog.text


def test_a_generation_closed_while_opening_releases_what_it_gets_late():
    upstream = Upstream(["a"])
    setup = Setup(Provider(upstream))
    setup.generation.close()  # e.g. the request ended while a helper thread opens the reply
    with pytest.raises(ClientGone):
        setup.generation.start(*CALL)
    assert upstream.closed == 0  # never opened: the place was given back at once
    assert setup.queue_changes() == [(1, 0), (0, 0)]
    setup.assert_released_once()
