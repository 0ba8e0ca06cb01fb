"""Admission control: a few generations at once per worker, a short fair queue behind them.

A Pi generates one answer at a time. Requests beyond the running ones wait in a
bounded queue for a limited time; anything beyond the queue is refused at once, so a
burst never piles up inside Ollama while clients give up at nginx.

With API keys, each key waits in a line of its own, capped at `queue_max_per_key`, and
a freed place goes to the line whose key was served longest ago: a key sending a flood
fills its own line, not the queue, and takes every other turn at most. Without keys
there is one line, first come first served.

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

    key: str | None
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
    """At most `slots` holders at once; up to `queue_max` more wait, for `timeout_s`.

    Waiting requests are served round-robin by API key, FIFO within a key, and one key
    holds at most `queue_max_per_key` places in the queue (requests without a key are
    not capped: they are all the queue has when keys are off).
    """

    def __init__(
        self,
        *,
        slots: int,
        queue_max: int,
        timeout_s: float,
        queue_max_per_key: int | None = None,
        observer: AdmissionObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = slots
        self._queue_max = queue_max
        self._queue_max_per_key = queue_max if queue_max_per_key is None else queue_max_per_key
        self._timeout_s = timeout_s
        self._observer = observer or _NoObserver()
        self._clock = clock
        self._lock = threading.Lock()
        self._active = 0
        self._lines: dict[str | None, deque[_Ticket]] = {}  # by key, in order of arrival
        self._waiting = 0
        # When each key was last given a place (a count of places given), for the turns.
        self._served: dict[str | None, int] = {}
        self._places_given = 0
        self._average_hold_s: float | None = None

    def acquire(self, key: str | None = None) -> Slot:
        """Take a place now, or wait in `key`'s line; raise Overloaded when that is not possible.

        `key` is the id of the request's API key (None without keys).
        """
        started = self._clock()
        ticket: _Ticket | None = None
        refusal: Overloaded | None = None
        reason = "queue_full"
        with self._lock:
            line = self._lines.get(key, ())
            if self._active < self._slots:
                self._active += 1
                self._note_served(key)
            elif self._waiting >= self._queue_max:
                refusal = self._refusal(
                    f"{self._active} generation(s) running and {self._waiting} waiting, "
                    f"as many as this server queues (QUEUE_MAX={self._queue_max})"
                )
            elif key is not None and len(line) >= self._queue_max_per_key:
                reason = "key_queue_full"
                refusal = self._refusal(
                    f"API key {key} already has {len(line)} request(s) waiting, as many as "
                    f"one key may queue (QUEUE_MAX_PER_KEY={self._queue_max_per_key})"
                )
            else:
                ticket = _Ticket(key)
                self._lines.setdefault(key, deque()).append(ticket)
                self._waiting += 1
            snapshot = self._snapshot()
        if refusal is not None:
            self._observer.rejected(reason)
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
                    self._leave_line(ticket)
                snapshot = self._snapshot()
            self._observer.left_queue()
            self._observer.queue_changed(*snapshot)
            raise
        with self._lock:
            if ticket.admitted:  # a release may race with the timeout; the place wins
                return
            self._leave_line(ticket)
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
        """Hand a freed place straight to the next in line, or free it.

        The next line is that of the key served longest ago (a key never served first,
        then the line that formed first), so keys take turns.
        """
        if not self._lines:
            self._active -= 1
            return
        key = min(self._lines, key=lambda k: self._served.get(k, -1))
        ticket = self._lines[key][0]
        self._leave_line(ticket)
        self._note_served(key)
        ticket.admitted = True
        ticket.ready.set()

    def _leave_line(self, ticket: _Ticket) -> None:
        line = self._lines[ticket.key]
        line.remove(ticket)
        if not line:
            del self._lines[ticket.key]
        self._waiting -= 1

    def _note_served(self, key: str | None) -> None:
        self._places_given += 1
        self._served[key] = self._places_given

    def _snapshot(self) -> tuple[int, int]:
        return self._active, self._waiting

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
