"""Turning a generation into a response: a whole reply, or a stream in one of its formats."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

from flask import Response, request

from ..chat.disconnect import DisconnectWatch
from ..chat.generation import Generation
from ..errors import ClientGone, PiagentError, UpstreamError
from ..messages import Message
from ..ops.logs import printable
from ..providers.base import ChatStats, GenerationOptions
from .auth import api_key_id
from .state import get_state
from .stream_formats import SSE, SSE_HEARTBEAT, STREAM_HEADERS, StreamFormat
from .trace import current_trace

log = logging.getLogger("piagent")

# What the model is asked: the messages, the model, and its options.
Call = tuple[Sequence[Message], str, GenerationOptions]


class StreamInterrupted(RuntimeError):
    """Raised out of a started stream so the WSGI server drops the connection unfinished."""


# Ends a started response so that its client can tell it is incomplete.
CutShort = Callable[[str], None]


def _interrupt(detail: str) -> None:
    raise StreamInterrupted(detail) from None


def _cut_short_here(environ: Mapping[str, Any]) -> CutShort:
    """How to end this request's started response without its final chunk.

    A body that raises does it under any WSGI server, but gunicorn logs every such
    error as "Error handling request" with a traceback, though piagent has handled the
    fault and logged it in one line. Under gunicorn the connection is the request's own
    (HTTP/1), so it is shut down instead and the body ends: gunicorn's write of the
    final chunk then fails with EPIPE, which it passes over as a client gone.
    """
    client = environ.get("gunicorn.socket")
    if client is None or not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1."):
        return _interrupt

    def shut_down(detail: str) -> None:
        try:
            client.shutdown(socket.SHUT_RDWR)  # after what was written, which is sent first
        except OSError:  # the client has gone already: nothing left to end
            pass

    return shut_down


def new_generation(*, stream: bool) -> Generation:
    """A generation for the request being handled, watching its client from now on."""
    state = get_state()
    return Generation(
        provider=state.provider,
        admission=state.admission,
        metrics=state.metrics,
        trace=current_trace(),
        watch=DisconnectWatch(request.environ),
        stream=stream,
        key=api_key_id(),
    )


def collect_reply(generation: Generation, call: Call) -> tuple[str, ChatStats | None]:
    """Read the whole reply and keep it in the conversation."""
    generation.start(*call)
    reply = "".join(chain.from_iterable(generation.fragments()))
    generation.keep()
    return reply, generation.stats


class StreamBody:
    """A stream's response body; the server's close() closes the generation, however it ended."""

    def __init__(self, chunks: Iterator[bytes], generation: Generation) -> None:
        self._chunks = chunks
        self._generation = generation

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        """Called by the WSGI server when the response is over (even if never iterated)."""
        try:
            self._chunks.close()
        finally:
            self._generation.close()


def stream_body(
    generation: Generation, call: Call, fmt: StreamFormat, heartbeat_s: float
) -> StreamBody:
    """The body of a stream, returned once the first fragment is known.

    Waiting for it before the response starts means a failure before any text (a
    timeout, an unknown model) still gets its own status code. SSE waits at most one
    heartbeat interval: after that the response starts and comments keep it alive.
    """
    if fmt.media_type != SSE:
        cut_short = _cut_short_here(request.environ)
        generation.start(*call)
        return StreamBody(_relay(generation, fmt, cut_short), generation)
    starter = _Starter(lambda: generation.start(*call), heartbeat_s)
    with generation.waiting():
        started = starter.wait(heartbeat_s)
    chunks = _relay(generation, fmt) if started else _after_heartbeats(generation, starter, fmt)
    return StreamBody(chunks, generation)


def stream_response(
    body: StreamBody, content_type: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The response of a stream: its body goes to the WSGI server as it is.

    Werkzeug would otherwise wrap it twice (a check that each chunk is bytes, and an
    iterator that closes it), two more steps for every chunk relayed; the chunks are
    bytes already, and the server closes the body itself.
    """
    return Response(
        body,
        content_type=content_type,
        headers={**(headers or {}), **STREAM_HEADERS},
        direct_passthrough=True,
    )


def _relay(
    generation: Generation, fmt: StreamFormat, cut_short: CutShort = _interrupt
) -> Iterator[bytes]:
    """Yield the fragments as they arrive (those that arrived together in one write), then the end.

    A client that leaves keeps what it saw (the generation's close does that). An
    upstream failure, or a memory that cannot keep the reply, keeps nothing: plain
    text is cut short, without the final chunk (see _cut_short_here); SSE and NDJSON
    end with an `error` event. The generation is closed as soon as the last chunk is
    out: not every caller closes a body the moment it ends (a test client may never),
    and the place in the queue should not wait for it. A body closed before it started
    skips this: StreamBody.close covers that case.
    """
    conversation_id = generation.trace.conversation_id
    try:
        for fragments in generation.fragments():
            yield fmt.deltas(fragments)
        generation.keep()
        if fmt.structured:
            yield fmt.event(_done_event(generation))
    except ClientGone:
        log.info("stream %s: client left, upstream closed", conversation_id)
    except PiagentError as exc:
        log.warning(
            "stream %s cut short after it started: %s", conversation_id, printable(exc.detail)
        )
        generation.settle()  # before the client hears of it, so it may ask again at once
        if not fmt.structured:
            cut_short(exc.detail)
            return
        yield fmt.event({"type": "error", "detail": exc.detail})
    finally:
        generation.close()


def _after_heartbeats(
    generation: Generation, starter: _Starter, fmt: StreamFormat
) -> Iterator[bytes]:
    conversation_id = generation.trace.conversation_id
    started = False
    try:
        while not started:
            yield SSE_HEARTBEAT
            with generation.waiting():
                started = starter.wait(starter.heartbeat_s)
    except ClientGone:
        log.info("stream %s: client left before the first token", conversation_id)
    except UpstreamError as exc:
        log.warning(
            "stream %s failed before its first token: %s", conversation_id, printable(exc.detail)
        )
        generation.settle()
        yield fmt.event({"type": "error", "detail": exc.detail})
    else:
        yield from _relay(generation, fmt)
        return
    generation.close()  # as _relay does, once the last chunk is out


def _done_event(generation: Generation) -> dict[str, Any]:
    stats = generation.stats or ChatStats()
    return {
        "type": "done",
        "conversation_id": generation.trace.conversation_id,
        "model": generation.trace.model,
        "done_reason": stats.done_reason,
        "usage": stats.usage,
    }


class _Starter:
    """Runs a generation's start in a helper thread, so the request can send heartbeats.

    Under gevent the thread is a greenlet, and the disconnect watch interrupts it there
    too; a generation closed meanwhile releases whatever the late start acquires.
    """

    def __init__(self, start: Callable[[], None], heartbeat_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self._done = threading.Event()
        self._error: BaseException | None = None
        thread = threading.Thread(target=self._run, args=(start,), daemon=True)
        thread.name = "piagent-first-token"
        thread.start()

    def _run(self, start: Callable[[], None]) -> None:
        try:
            start()
        except BaseException as exc:  # handed to the waiting request, raised there
            self._error = exc
        finally:
            self._done.set()

    def wait(self, timeout_s: float) -> bool:
        """Whether the start is over within `timeout_s`; raises what the start raised."""
        if not self._done.wait(timeout_s):
            return False
        if self._error is not None:
            raise self._error
        return True
