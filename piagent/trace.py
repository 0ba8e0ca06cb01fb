"""What one request did, gathered as it happens, for its log line and the metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from flask import g

from .agents import Agent
from .disconnect import ClientGone
from .errors import UpstreamError
from .metrics import Metrics
from .providers.base import ChatStats, ChatStream


@dataclass
class RequestTrace:
    """Facts about one request; generation fields stay None for requests that have none."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.monotonic)
    key_id: str | None = None
    agent: str | None = None
    conversation_id: str | None = None
    model: str | None = None
    first_token_s: float | None = None
    stats: ChatStats | None = None
    # complete | cancelled | upstream_error; None when no generation ran
    outcome: str | None = None
    # Message text, kept only with LOG_CONTENT=true (None otherwise).
    message: str | None = None
    reply_parts: list[str] | None = None

    def chat(self, agent: Agent, conversation_id: str | None, message: str) -> None:
        """Note what a chat request asks for; the message only when content is logged."""
        self.agent, self.model, self.conversation_id = agent.name, agent.model, conversation_id
        if self.reply_parts is not None:  # LOG_CONTENT=true
            self.message = message


def current_trace() -> RequestTrace:
    """The trace of the request being handled, made on first use."""
    if "piagent_trace" not in g:
        g.piagent_trace = RequestTrace()
    return g.piagent_trace


def observed(
    open_upstream: Callable[[], ChatStream], trace: RequestTrace, metrics: Metrics
) -> Callable[[], ChatStream]:
    """Wrap an upstream opener so its reply is timed, counted and its end recorded."""

    def open_observed() -> ChatStream:
        try:
            return ObservedStream(open_upstream(), trace, metrics)
        except UpstreamError as exc:
            _failed(trace, metrics, exc)
            raise
        except ClientGone:
            trace.outcome = "cancelled"
            metrics.cancelled()
            raise

    return open_observed


class ObservedStream:
    """An upstream reply that records its first fragment, its stats and how it ended."""

    def __init__(self, upstream: ChatStream, trace: RequestTrace, metrics: Metrics) -> None:
        self._upstream = upstream
        self._trace = trace
        self._metrics = metrics

    @property
    def stats(self) -> ChatStats | None:
        """The upstream's stats, once its last fragment is read."""
        return self._upstream.stats

    def __iter__(self) -> Iterator[str]:
        trace = self._trace
        try:
            for fragment in self._upstream:
                if trace.first_token_s is None:
                    trace.first_token_s = time.monotonic() - trace.started
                    self._metrics.first_token(trace.first_token_s)
                if trace.reply_parts is not None:
                    trace.reply_parts.append(fragment)
                yield fragment
        except UpstreamError as exc:
            _failed(trace, self._metrics, exc)
            raise
        trace.stats = self._upstream.stats
        trace.outcome = "complete"
        self._metrics.generation_done(trace.stats)

    def close(self) -> None:
        """Close the upstream; a reply closed before its end was cancelled by the client."""
        try:
            self._upstream.close()
        finally:
            if self._trace.outcome is None:
                self._trace.outcome = "cancelled"
                self._metrics.cancelled()


def _failed(trace: RequestTrace, metrics: Metrics, exc: UpstreamError) -> None:
    trace.outcome = "upstream_error"
    metrics.upstream_error(exc.kind)
