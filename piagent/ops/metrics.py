"""Prometheus metrics: one registry per app, shared across gunicorn workers when asked.

prometheus_client switches to its multiprocess mode (values in files under
PROMETHEUS_MULTIPROC_DIR, summed at scrape time) when that variable is set before it is
imported; gunicorn.conf.py sets it when it runs more than one worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from ..providers.base import ChatStats

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_FIRST_TOKEN_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
_TOKENS_PER_SECOND = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100, 200)
# Label values shown (at 0) before they first happen, so rate() and alerts work from the start.
_REJECTION_REASONS = ("queue_full", "key_queue_full", "queue_timeout")
_UPSTREAM_ERROR_KINDS = ("unreachable", "timeout", "busy", "rejected", "error")
_CANCELLATION_STAGES = ("queued", "generating")
# A request's method is the client's to invent (`curl -X AAAB`): each new one would be a
# new series, so anything outside the usual methods is counted as "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


@dataclass(frozen=True, slots=True)
class Arrival:
    """How a reply's text arrived: the fragments of the first read, and the time to the last."""

    first_fragments: int
    span_s: float


def tokens_per_second(stats: ChatStats | None, arrival: Arrival | None = None) -> float | None:
    """Generation speed: the model server's own (Ollama's eval_duration), else as it arrived.

    A server that reports no duration (an OpenAI-compatible one) is timed from the first
    read of text to the last: the tokens after those of the first read took that long.
    A reply read in one piece (not streamed) has no speed rather than a wrong one.
    """
    if stats is None or not stats.completion_tokens:
        return None
    if stats.eval_duration_ns:
        return stats.completion_tokens / (stats.eval_duration_ns / 1e9)
    if arrival is None or arrival.span_s <= 0:
        return None
    later = stats.completion_tokens - arrival.first_fragments
    return later / arrival.span_s if later > 0 else None


def multiprocess_dir() -> str | None:
    """The folder shared by gunicorn's workers, when there is one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """Every metric piagent exports, and the few ways to move them."""

    def __init__(self) -> None:
        registry = CollectorRegistry(auto_describe=True)
        # What /metrics shows: this worker's registry, or with several workers the sum of
        # the files they all write (read afresh at every scrape).
        self._exposed = registry
        if multiprocess_dir() is not None:
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed)
        self.requests = Counter(
            "piagent_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "piagent_http_request_duration_seconds",
            "Time from request to the end of the response body (streams included).",
            ["route"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.first_token_seconds = Histogram(
            "piagent_time_to_first_token_seconds",
            "Time from request to the model's first fragment (queue wait included).",
            buckets=_FIRST_TOKEN_SECONDS,
            registry=registry,
        )
        self.generated_tokens = Counter(
            "piagent_generated_tokens",
            "Tokens the model generated (Ollama's eval_count).",
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "piagent_prompt_tokens",
            "Prompt tokens the model evaluated (Ollama's prompt_eval_count).",
            registry=registry,
        )
        self.generation_speed = Histogram(
            "piagent_tokens_per_second",
            "Generation speed per reply (eval_count / eval_duration, or timed as it streamed).",
            buckets=_TOKENS_PER_SECOND,
            registry=registry,
        )
        self.active_generations = Gauge(
            "piagent_active_generations",
            "Requests talking to the model now, streamed or not.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "piagent_queue_depth",
            "Requests waiting for a place to talk to the model.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.queue_wait_seconds = Histogram(
            "piagent_queue_wait_seconds",
            "Time admitted requests waited for a place.",
            buckets=_SECONDS,
            registry=registry,
        )
        self.rejections = Counter(
            "piagent_rejections",
            "Requests refused with 503 by admission control, by reason.",
            ["reason"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "piagent_upstream_errors",
            "Failures of the model server, by kind.",
            ["kind"],
            registry=registry,
        )
        self.cancellations = Counter(
            "piagent_cancellations",
            "Requests whose client left before the reply was complete, by stage.",
            ["stage"],
            registry=registry,
        )
        self.conversations = Gauge(
            "piagent_conversations",
            "Conversations held in memory (updated at each scrape).",
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        # Its own gauge, so /metrics keeps answering while the memory is down: monitoring
        # must not go blind during the very outage it should report.
        self.memory_up = Gauge(
            "piagent_memory_up",
            "1 when the conversation memory answered at the last scrape (or is off), else 0.",
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        for counter, values in (
            (self.rejections, _REJECTION_REASONS),
            (self.upstream_errors, _UPSTREAM_ERROR_KINDS),
            (self.cancellations, _CANCELLATION_STAGES),
        ):
            for value in values:
                counter.labels(value)

    # --- admission control (AdmissionObserver) ---------------------------------------

    def queue_changed(self, active: int, waiting: int) -> None:
        """Record how many hold a place and how many wait."""
        self.active_generations.set(active)
        self.queue_depth.set(waiting)

    def rejected(self, reason: str) -> None:
        """Count a 503 from admission control."""
        self.rejections.labels(reason).inc()

    def admitted(self, waited_s: float) -> None:
        """Record how long an admitted request waited."""
        self.queue_wait_seconds.observe(waited_s)

    def left_queue(self) -> None:
        """Count a client that left while queued."""
        self.cancellations.labels("queued").inc()

    # --- requests and generations ------------------------------------------------------

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count a finished request and its duration; `route` is a rule, never a raw path."""
        method = method if method in _METHODS else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def first_token(self, seconds: float) -> None:
        """Record the time to a reply's first fragment."""
        self.first_token_seconds.observe(seconds)

    def generation_done(self, stats: ChatStats | None, speed: float | None) -> None:
        """Count a complete reply's tokens, and its speed in tokens a second when known."""
        if stats is not None and stats.prompt_tokens:
            self.prompt_tokens.inc(stats.prompt_tokens)
        if stats is not None and stats.completion_tokens:
            self.generated_tokens.inc(stats.completion_tokens)
        if speed is not None:
            self.generation_speed.observe(speed)

    def upstream_error(self, kind: str) -> None:
        """Count a model server failure."""
        self.upstream_errors.labels(kind).inc()

    def cancelled(self) -> None:
        """Count a client that left while its reply was being generated."""
        self.cancellations.labels("generating").inc()

    # --- exposition ----------------------------------------------------------------------

    def render(self, conversations: int | None, *, memory_up: bool) -> tuple[bytes, str]:
        """The text exposition format, summed over every worker in multiprocess mode.

        `conversations` is None when there is no count (memory off or down): the gauge
        keeps its last value.
        """
        if conversations is not None:
            self.conversations.set(conversations)
        self.memory_up.set(1 if memory_up else 0)
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST
