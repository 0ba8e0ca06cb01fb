"""One request's generation: the single owner of what it holds, from admission to the last byte.

Whatever a generation acquires (the disconnect watch, the place in the queue, the
upstream reply) is registered the moment it is acquired and released once, in reverse
order, by `close()`, however the request ended: complete, client gone (queued, before
the first token, mid-stream), upstream failure, or a body the server never iterated.
The conversation turn is ended before any of them, so that whoever sees the upstream
close may send the next message at once; a stream cut short by its client keeps what
the client saw, a failure keeps nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import Any

from ..errors import ClientGone, MemoryUnavailable, Overloaded, UpstreamError
from ..messages import Message
from ..ops.metrics import Arrival, Metrics, tokens_per_second
from ..ops.trace import RequestTrace
from ..providers.base import ChatStats, ChatStream, GenerationOptions, Provider
from .admission import AdmissionGate
from .conversation import Turn
from .disconnect import DisconnectWatch

log = logging.getLogger("piagent")


class Generation:
    """One call to the model and everything it holds, released together by `close()`."""

    def __init__(
        self,
        *,
        provider: Provider,
        admission: AdmissionGate,
        metrics: Metrics,
        trace: RequestTrace,
        watch: DisconnectWatch,
        stream: bool,
        key: str | None = None,
    ) -> None:
        """`key` is the id of the request's API key (None without keys): its line in the queue."""
        self.trace = trace
        self._key = key
        self._provider = provider
        self._admission = admission
        self._metrics = metrics
        self._watch = watch
        self._stream = stream
        self._resources = ExitStack()
        self._resources.callback(watch.close)
        # close() may come from the request while start() runs in a helper thread (SSE).
        self._lock = threading.Lock()
        self._closed = False
        self._admitted = False
        self._turn: Turn | None = None
        self._upstream: ChatStream | None = None
        self._fragments: Iterator[list[str]] = iter(())
        self._pending: list[str] | None = None
        self._delivered: list[str] = []
        # When the text arrived, to time the reply when the model server does not.
        self._first_read: tuple[float, int] | None = None  # (time, fragments)
        self._last_read_at = 0.0

    @property
    def stats(self) -> ChatStats | None:
        """What the model server reported at the end of the reply, once it has ended."""
        return self._upstream.stats if self._upstream is not None else None

    def take(self, turn: Turn) -> None:
        """Own the conversation turn: it ends with this generation."""
        self._turn = turn

    def waiting(self) -> AbstractContextManager[None]:
        """A block in which a client that leaves raises ClientGone (see DisconnectWatch)."""
        return self._watch.guard()

    def start(self, messages: Sequence[Message], model: str, options: GenerationOptions) -> None:
        """Wait for a place, open the reply and wait for its first fragment (or its end)."""
        try:
            with self._watch.guard():
                slot = self._admission.acquire(self._key)
                self._admitted = True
                self._own(slot.release)
                upstream = self._provider.open_chat(messages, model, options, stream=self._stream)
                self._own(upstream.close)
                self._upstream = upstream
                self._fragments = iter(upstream)
                self._pending = self._read()
        except BaseException as exc:
            self._failed(exc)
            raise

    def fragments(self) -> Iterator[list[str]]:
        """The reply's fragments as they arrive, in lists of those that arrived together.

        A list counts as delivered once the next is asked for.
        """
        fragments = self._pending
        while fragments is not None:
            yield fragments
            self._delivered += fragments
            try:
                with self._watch.guard():
                    fragments = self._read()
            except BaseException as exc:
                self._failed(exc)
                raise
        stats = self.stats
        speed = tokens_per_second(stats, self._arrival())
        self.trace.stats, self.trace.tokens_per_s = stats, speed
        self.trace.outcome = "complete"
        self._metrics.generation_done(stats, speed)

    def keep(self) -> None:
        """Keep the whole reply in the conversation; MemoryUnavailable when it cannot be kept."""
        self._end_turn("".join(self._delivered))

    def settle(self) -> None:
        """End the turn now, keeping nothing: the reply failed, and the client is about to hear."""
        self._end_turn(None)

    def close(self) -> None:
        """Release everything, once; never raises, so the server's own cleanup always runs."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self.trace.outcome is None and self._admitted:  # closed before the reply ended
                self.trace.outcome = "cancelled"
                self._metrics.cancelled()
            try:
                cut_short = self._stream and self.trace.outcome == "cancelled"
                self._end_turn("".join(self._delivered) if cut_short else None)
            except MemoryUnavailable as exc:
                log.warning("request %s: its reply was not kept: %s", self.trace.request_id, exc)
            finally:
                self._resources.close()
        except Exception:
            log.exception("request %s: releasing its generation failed", self.trace.request_id)

    def _own(self, release: Callable[[], Any]) -> None:
        """Register a resource just acquired; a generation already closed releases it at once."""
        with self._lock:
            if not self._closed:
                self._resources.callback(release)
                return
        release()
        raise ClientGone("the request ended while its reply was being opened")

    def _read(self) -> list[str] | None:
        fragments = next(self._fragments, None)
        if fragments is not None:
            now = self._last_read_at = time.monotonic()
            trace = self.trace
            if self._first_read is None:
                self._first_read = (now, len(fragments))
                trace.first_token_s = now - trace.started
                self._metrics.first_token(trace.first_token_s)
            if trace.reply_parts is not None:  # LOG_CONTENT=true
                trace.reply_parts += fragments
        return fragments

    def _arrival(self) -> Arrival | None:
        if self._first_read is None:
            return None
        first_at, first_fragments = self._first_read
        return Arrival(first_fragments, self._last_read_at - first_at)

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, ClientGone):
            self.trace.outcome = "cancelled"
            if self._admitted:  # a client leaving the queue is counted by the gate
                self._metrics.cancelled()
        elif isinstance(exc, UpstreamError) and not isinstance(exc, Overloaded):
            self.trace.outcome = "upstream_error"
            self._metrics.upstream_error(exc.kind)

    def _end_turn(self, reply: str | None) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.finish(reply, self.stats)
