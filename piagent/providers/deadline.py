"""Read timeouts for a streamed HTTP reply: a gap limit between reads and an overall limit."""

from __future__ import annotations

import time

import requests

from ..errors import UpstreamTimeout


class ReadDeadline:
    """Keeps a response's socket timeout at min(idle gap, time left before the deadline).

    requests applies one read timeout to every socket read, the first body read
    included (which may wait for the first token). After it, the timeout becomes the
    idle gap, and is shortened again only once the deadline is nearer than that gap,
    so that neither a silent stream nor a slow endless one outlives its limit by more
    than one read.
    """

    def __init__(
        self, response: requests.Response, *, server: str, idle_s: float, deadline: float
    ) -> None:
        self._response = response
        self._server = server
        self._idle_s = idle_s
        self._deadline = deadline
        self._total_s = deadline - time.monotonic()
        self._gap_set = False

    def after_read(self) -> None:
        """Set the timeout for the next read if it changes; raise when the deadline has passed."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self.timeout_error()
        if self._gap_set and left >= self._idle_s:
            return  # the socket's timeout is the idle gap already
        connection = self._response.raw.connection
        if connection is not None and connection.sock is not None:
            connection.sock.settimeout(min(self._idle_s, left))
        self._gap_set = True

    def timeout_error(self) -> UpstreamTimeout:
        """The error for a read that timed out, naming the limit that was reached."""
        if time.monotonic() >= self._deadline - 0.01:
            return UpstreamTimeout(
                f"{self._server} did not finish the reply within {self._total_s:.0f} s"
            )
        return UpstreamTimeout(
            f"{self._server} sent nothing for {self._idle_s:g} s in the middle of the reply"
        )
