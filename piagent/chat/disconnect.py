"""Noticing at once that a client went away while we wait on the model.

A WSGI app only learns of a disconnect when a write fails, which may be long after
the client left (Ollama still loading the model, or a non-stream reply). Under
gunicorn's gevent worker the client socket is in the environ: we watch it with an
event-loop callback and, when it closes, raise `ClientGone` in every greenlet that is
waiting on the model inside `guard()`. The wait is interrupted where it blocks, so
the upstream connection is dropped and Ollama stops generating.

Under other servers (threads, no gevent) `guard()` does nothing and a disconnect is
noticed at the next write, as WSGI allows.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from ..errors import ClientGone


def _gevent_client_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    """The client socket when it can be watched cooperatively, else None."""
    client = environ.get("gunicorn.socket")
    if client is None:
        return None
    from gevent import monkey

    return client if monkey.is_module_patched("socket") else None


class DisconnectWatch:
    """Raises ClientGone inside `guard()` as soon as the client's socket closes."""

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.gone = False
        self._waiting: set[Any] = set()
        self._peer: socket.socket | None = None
        self._watcher: Any = None
        self._current: Callable[[], Any] | None = None
        client = _gevent_client_socket(environ)
        if client is None:
            return
        from gevent import get_hub, getcurrent

        self._current = getcurrent
        # A duplicate descriptor we may peek on without disturbing the server's socket.
        self._peer = client.dup()
        self._peer.setblocking(False)
        self._watcher = get_hub().loop.io(self._peer.fileno(), 1)
        self._watcher.start(self._on_readable)

    def guard(self) -> DisconnectWatch:
        """Wait on the model inside this block; a disconnect raises ClientGone here."""
        # The watch is its own context manager: entered once per read of the model, it
        # is kept to a set insert and a discard.
        return self

    def __enter__(self) -> None:
        if self.gone:
            raise ClientGone("the client went away")
        if self._watcher is not None:
            self._waiting.add(self._current())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._waiting:
            self._waiting.discard(self._current())

    def close(self) -> None:
        """Stop watching; safe to call more than once."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._peer is not None:
            self._peer.close()
            self._peer = None

    def _on_readable(self) -> None:
        # Runs in gevent's hub, so every greenlet in `_waiting` is parked where it blocks.
        try:
            data = self._peer.recv(1, socket.MSG_PEEK) if self._peer else b"x"
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.close()
        if data:
            return  # the client sent more (a pipelined request): it is still there
        self.gone = True
        for greenlet in list(self._waiting):
            if not greenlet.dead:
                greenlet.throw(ClientGone("the client went away"))
