"""requests' adapter for the model servers: pooled connections that send a request in one write.

http.client sends a request's header block and then its body, two system calls and
two packets for every chat, though the model server can do nothing before it has both.
On loopback a send also pays for the receiving side's network stack, so the second one
was about a twentieth of a non-stream chat's CPU. The connections here hold the header
block back and send it together with the body: the same bytes, in one write.
"""

from __future__ import annotations

from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class _OneWrite(HTTPConnection):
    """Sends a request with a body in one write: the header block waits for the body."""

    # None: send as they come; b"": hold the next write (the header block); else held.
    _held: bytes | None = None

    def request(self, method: str, url: str, body: Any = None, *args: Any, **kwargs: Any) -> None:
        """Send the request as urllib3 does, the header block together with the body."""
        self._held = b"" if isinstance(body, bytes) and body else None
        try:
            super().request(method, url, body, *args, **kwargs)
        finally:
            held, self._held = self._held, None
        if held:  # nothing followed the header block after all
            super().send(held)

    def send(self, data: Any) -> None:
        """Send `data`, after the header block held for it; the header block itself waits."""
        held = self._held
        if held is None:
            super().send(data)
        elif not held:
            self._held = bytes(data)
        else:
            self._held = None
            super().send(held + data)


class _OneWriteHTTPS(_OneWrite, HTTPSConnection):
    """The same over TLS."""


class _Pool(HTTPConnectionPool):
    ConnectionCls = _OneWrite


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _OneWriteHTTPS


class OneWriteAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools send each request with a body in one write."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """requests' pool manager, with these connections for http and https."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _HTTPSPool}
