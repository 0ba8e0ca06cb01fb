"""Readiness: can the model server answer with every model the agents use, and can the
conversation memory be reached? Cached briefly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import PiagentError


class ReadinessProbe:
    """Runs `check` (which raises a PiagentError saying what to do) at most once per `cache_s`."""

    def __init__(
        self,
        check: Callable[[], None],
        *,
        cache_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._cache_s = cache_s
        self._clock = clock
        # One check at a time: a burst of probes waits for it instead of piling onto Ollama.
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._problem: str | None = None

    def problem(self) -> str | None:
        """Why the server is not ready, or None when it is."""
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self._cache_s:
                try:
                    self._check()
                    self._problem = None
                except PiagentError as exc:
                    self._problem = str(exc.detail)
                self._checked_at = self._clock()
            return self._problem
