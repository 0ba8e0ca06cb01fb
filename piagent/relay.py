"""Turning the model's reply into a client response, and remembering the exchange."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

from .disconnect import ClientGone, DisconnectWatch
from .errors import ApiError, StreamInterrupted, UpstreamError
from .providers.base import ChatStats, ChatStream
from .stream_formats import SSE, SSE_HEARTBEAT, StreamFormat

log = logging.getLogger("piagent")

OpenUpstream = Callable[[], ChatStream]


def keep_nothing(reply: str | None, stats: ChatStats | None) -> None:
    """The end of a request that has no conversation to keep its reply in."""


@dataclass(frozen=True)
class Exchange:
    """One request's identity, and how to end its turn in the conversation."""

    conversation_id: str
    model: str
    # Called with the reply to keep (None: keep nothing) once the outcome is known, and
    # before the client can see the end: it frees the conversation for the next message.
    finish: Callable[[str | None, ChatStats | None], None] = keep_nothing


@dataclass
class _Started:
    """An upstream reply whose first fragment (or end) has arrived."""

    upstream: ChatStream
    fragments: Iterator[str]
    first: str | None


def collect_reply(
    open_upstream: OpenUpstream, watch: DisconnectWatch, exchange: Exchange
) -> tuple[str, ChatStats | None]:
    """Read a whole reply and end the turn with it; the watch ends with the call."""
    try:
        with watch.guard():
            upstream = open_upstream()
            try:
                reply = "".join(upstream)
            finally:
                upstream.close()
        exchange.finish(reply, upstream.stats)
    finally:
        watch.close()
    return reply, upstream.stats


def _start(open_upstream: OpenUpstream, watch: DisconnectWatch) -> _Started:
    """Open the upstream and wait for its first fragment, closing it on any failure."""
    with watch.guard():
        upstream = open_upstream()
        try:
            fragments = iter(upstream)
            return _Started(upstream, fragments, next(fragments, None))
        except BaseException:
            upstream.close()
            raise


def stream_reply(
    open_upstream: OpenUpstream,
    watch: DisconnectWatch,
    fmt: StreamFormat,
    exchange: Exchange,
    heartbeat_s: float,
) -> Iterator[bytes]:
    """Return the response body of a stream, once the first fragment is known.

    Waiting for it before the response starts means a failure before any text (a
    timeout, an unknown model) still gets its own status code. SSE waits at most one
    heartbeat interval: after that the response starts and comments keep it alive.
    The returned body closes the watch; if none is returned, this does.
    """
    try:
        if fmt.media_type != SSE:
            started = _start(open_upstream, watch)
        else:
            waiter = _FirstFragmentWaiter(open_upstream, watch)
            try:
                started = waiter.wait(heartbeat_s)
            except BaseException:
                waiter.abandon()
                raise
            if started is None:
                body = _relay_after_heartbeats(waiter, watch, fmt, exchange, heartbeat_s)
                return _Body(body, waiter.abandon, watch)
    except BaseException:
        watch.close()
        raise
    return _Body(_relay(started, watch, fmt, exchange), started.upstream.close, watch)


class _Body:
    """A response body that releases the upstream even if the server never iterates it.

    Closing a generator that has not started skips its `finally`, so close() also
    runs the cleanup itself (both cleanups are safe to repeat).
    """

    def __init__(
        self, chunks: Iterator[bytes], release: Callable[[], None], watch: DisconnectWatch
    ) -> None:
        self._chunks = chunks
        self._release = release
        self._watch = watch

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        """Called by the WSGI server when the response is over, however it ended."""
        try:
            self._chunks.close()
        finally:
            self._release()
            self._watch.close()


def _relay_after_heartbeats(
    waiter: _FirstFragmentWaiter,
    watch: DisconnectWatch,
    fmt: StreamFormat,
    exchange: Exchange,
    heartbeat_s: float,
) -> Iterator[bytes]:
    started = None
    try:
        while started is None:
            yield SSE_HEARTBEAT
            started = waiter.wait(heartbeat_s)
    except ClientGone:
        log.info("stream %s: client left before the first token", exchange.conversation_id)
        return
    except UpstreamError as exc:
        log.warning("stream %s failed before its first token: %s", exchange.conversation_id, exc)
        exchange.finish(None, None)
        yield fmt.event({"type": "error", "detail": exc.detail})
        return
    finally:
        if started is None:
            exchange.finish(None, None)
            waiter.abandon()
            watch.close()
    yield from _relay(started, watch, fmt, exchange)


def _relay(
    started: _Started, watch: DisconnectWatch, fmt: StreamFormat, exchange: Exchange
) -> Iterator[bytes]:
    """Yield each fragment as it arrives, then the end of the stream.

    The server asks for the next item only after writing the last, so a fragment
    counts as delivered once its yield returns. A client that leaves (ClientGone
    while we wait on the model, or GeneratorExit at a yield) keeps what it saw in
    memory. An upstream failure, or a memory that cannot keep the reply, keeps
    nothing: plain text escapes with an error so the server drops the connection
    without the final chunk; SSE and NDJSON end with an `error` event.
    """
    upstream = started.upstream
    head = [] if started.first is None else [started.first]
    delivered: list[str] = []
    failed = False
    try:
        for fragment in chain(head, _guarded(started.fragments, watch)):
            yield fmt.delta(fragment)
            delivered.append(fragment)
        exchange.finish("".join(delivered), upstream.stats)
        if fmt.structured:
            yield fmt.event(_done_event(upstream, exchange))
    except ClientGone:
        log.info("stream %s: client left, upstream closed", exchange.conversation_id)
    except ApiError as exc:
        failed = True
        exchange.finish(None, None)
        log.warning("stream %s cut short after it started: %s", exchange.conversation_id, exc)
        if not fmt.structured:
            raise StreamInterrupted(exc.detail) from None
        yield fmt.event({"type": "error", "detail": exc.detail})
    except Exception:
        failed = True
        raise
    finally:
        try:
            # End the turn before closing: whoever sees the upstream close may ask again at once.
            exchange.finish(None if failed else "".join(delivered), upstream.stats)
        finally:
            upstream.close()
            watch.close()


def _guarded(fragments: Iterator[str], watch: DisconnectWatch) -> Iterator[str]:
    """The fragments, each awaited where a disconnect can interrupt the wait."""
    while True:
        with watch.guard():
            fragment = next(fragments, None)
        if fragment is None:
            return
        yield fragment


def _done_event(upstream: ChatStream, exchange: Exchange) -> dict[str, Any]:
    stats = upstream.stats or ChatStats()
    return {
        "type": "done",
        "conversation_id": exchange.conversation_id,
        "model": exchange.model,
        "done_reason": stats.done_reason,
        "usage": stats.usage,
    }


class _FirstFragmentWaiter:
    """Opens the upstream in a helper thread so the caller can wait in slices.

    Under gevent the thread is a greenlet, and `guard()` inside it lets a client
    disconnect interrupt the upstream call there too.
    """

    def __init__(self, open_upstream: OpenUpstream, watch: DisconnectWatch) -> None:
        self._result: queue.SimpleQueue[_Started | BaseException] = queue.SimpleQueue()
        self._lock = threading.Lock()  # makes "abandoned?" and "put the result" one step
        self._abandoned = False
        self._thread = threading.Thread(
            target=self._run, args=(open_upstream, watch), daemon=True, name="piagent-first-token"
        )
        self._watch = watch
        self._thread.start()

    def _run(self, open_upstream: OpenUpstream, watch: DisconnectWatch) -> None:
        try:
            started: _Started | BaseException = _start(open_upstream, watch)
        except BaseException as exc:  # handed to the waiting request, raised there
            started = exc
        with self._lock:
            if self._abandoned and isinstance(started, _Started):
                started.upstream.close()
            self._result.put(started)

    def wait(self, timeout_s: float) -> _Started | None:
        """The started upstream, None if still waiting after `timeout_s`; raises its error."""
        with self._watch.guard():
            try:
                result = self._result.get(timeout=timeout_s)
            except queue.Empty:
                return None
        if isinstance(result, BaseException):
            raise result
        return result

    def abandon(self) -> None:
        """Nobody will read the result: close the upstream as soon as it is open."""
        with self._lock:
            self._abandoned = True
            try:
                result = self._result.get_nowait()
            except queue.Empty:
                return
        if isinstance(result, _Started):
            result.upstream.close()
