"""Admission control: a few generations at once per worker, a short FIFO queue behind them.

A Pi generates one answer at a time. Requests beyond the running ones wait in a
bounded queue for a limited time; anything beyond the queue is refused at once, so a
burst never piles up inside Ollama while clients give up at nginx.

Waiting happens inside the caller's `DisconnectWatch.guard()` (the relay opens the
upstream there), so under gunicorn's gevent worker a queued client that leaves is
interrupted with ClientGone and gives its place back at once. `threading` primitives
are cooperative under gevent and real under a threaded server, so both work.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import Overloaded

# Retry-After bounds, in seconds; the default applies before any generation has finished.
_RETRY_AFTER_MIN, _RETRY_AFTER_MAX, _RETRY_AFTER_DEFAULT = 1, 60, 5
# Weight of the newest generation in the running average of how long one takes.
_AVERAGE_WEIGHT = 0.3


class AdmissionObserver(Protocol):
    """What the gate reports, for metrics."""

    def queue_changed(self, active: int, waiting: int) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def admitted(self, waited_s: float) -> None: ...

    def left_queue(self) -> None: ...


class _NoObserver:
    def queue_changed(self, active: int, waiting: int) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass

    def admitted(self, waited_s: float) -> None:
        pass

    def left_queue(self) -> None:
        pass


@dataclass(eq=False)
class _Ticket:
    """A queued request; `admitted` is set under the gate's lock when a slot is handed over."""

    ready: threading.Event = field(default_factory=threading.Event)
    admitted: bool = False


class Slot:
    """A place to talk to the model; `release()` is safe to call more than once."""

    def __init__(self, gate: AdmissionGate, since: float) -> None:
        self._gate = gate
        self._since = since
        self.held = True  # guarded by the gate's lock

    def release(self) -> None:
        """Give the place back (to the first queued request, if any)."""
        self._gate._release(self)


class AdmissionGate:
    """At most `slots` holders at once; up to `queue_max` more wait, FIFO, for `timeout_s`."""

    def __init__(
        self,
        *,
        slots: int,
        queue_max: int,
        timeout_s: float,
        observer: AdmissionObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = slots
        self._queue_max = queue_max
        self._timeout_s = timeout_s
        self._observer = observer or _NoObserver()
        self._clock = clock
        self._lock = threading.Lock()
        self._active = 0
        self._queue: deque[_Ticket] = deque()
        self._average_hold_s: float | None = None

    def acquire(self) -> Slot:
        """Take a place now, or wait in the queue; raise Overloaded when that is not possible."""
        started = self._clock()
        ticket: _Ticket | None = None
        refusal: Overloaded | None = None
        with self._lock:
            if self._active < self._slots:
                self._active += 1
            elif len(self._queue) < self._queue_max:
                ticket = _Ticket()
                self._queue.append(ticket)
            else:
                refusal = self._refusal(
                    f"{self._active} generation(s) running and {len(self._queue)} waiting, "
                    f"as many as this server queues (QUEUE_MAX={self._queue_max})"
                )
            snapshot = self._snapshot()
        if refusal is not None:
            self._observer.rejected("queue_full")
            raise refusal
        self._observer.queue_changed(*snapshot)
        if ticket is not None:
            self._wait(ticket)
        now = self._clock()
        self._observer.admitted(now - started)
        return Slot(self, now)

    def _wait(self, ticket: _Ticket) -> None:
        try:
            ticket.ready.wait(self._timeout_s)
        except BaseException:  # the client left (ClientGone) or the worker is stopping
            with self._lock:
                if ticket.admitted:  # handed a place in the same instant: pass it on
                    self._pass_on_locked()
                else:
                    self._queue.remove(ticket)
                snapshot = self._snapshot()
            self._observer.left_queue()
            self._observer.queue_changed(*snapshot)
            raise
        with self._lock:
            if ticket.admitted:  # a release may race with the timeout; the place wins
                return
            self._queue.remove(ticket)
            snapshot = self._snapshot()
            refusal = self._refusal(
                f"waited {self._timeout_s:g} s for a free place (QUEUE_TIMEOUT_S)"
            )
        self._observer.queue_changed(*snapshot)
        self._observer.rejected("queue_timeout")
        raise refusal

    def _release(self, slot: Slot) -> None:
        held_s = self._clock() - slot._since
        with self._lock:
            if not slot.held:
                return
            slot.held = False
            self._average_hold_s = (
                held_s
                if self._average_hold_s is None
                else (1 - _AVERAGE_WEIGHT) * self._average_hold_s + _AVERAGE_WEIGHT * held_s
            )
            self._pass_on_locked()
            snapshot = self._snapshot()
        self._observer.queue_changed(*snapshot)

    def _pass_on_locked(self) -> None:
        """Hand a freed place straight to the first in line, or free it."""
        if self._queue:
            ticket = self._queue.popleft()
            ticket.admitted = True
            ticket.ready.set()
        else:
            self._active -= 1

    def _snapshot(self) -> tuple[int, int]:
        return self._active, len(self._queue)

    def _refusal(self, why: str) -> Overloaded:
        """The 503 for a refused request, with a Retry-After from recent generation times."""
        if self._average_hold_s is None:
            retry_after = _RETRY_AFTER_DEFAULT
        else:
            retry_after = math.ceil(self._average_hold_s / self._slots)
            retry_after = min(_RETRY_AFTER_MAX, max(_RETRY_AFTER_MIN, retry_after))
        return Overloaded(
            f"piagent is busy: {why}; try again in {retry_after} s",
            retry_after_s=retry_after,
        )
