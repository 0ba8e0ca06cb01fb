"""piagent under uWSGI's http-socket, with its responses framed the way clients expect.

uWSGI's own HTTP server sends a body of unknown length as is and closes the connection
after it, so a client cannot tell a whole stream from one cut short. This entry point
asks uWSGI (its `chunked` transformation) to send such bodies chunked on HTTP/1.1, and
when the body fails after it started (piagent raises out of a stream whose upstream
failed) it shuts the connection down before uWSGI writes the final empty chunk, which
it would otherwise add: the client sees the stream unfinished, as under gunicorn.

Loaded by config/uwsgi/piagent.ini (wsgi-file), never imported by piagent itself.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import uwsgi  # only inside a uWSGI worker

# uWSGI (with need-app and lazy-apps) stops the whole instance when a worker exits with
# this code; with any other it respawns the worker, forever.
_UWSGI_FAILED_APP_CODE = 22

try:
    from wsgi import app
except SystemExit:
    # A setting piagent cannot read: it has already said which, in one line on stderr.
    raise SystemExit(_UWSGI_FAILED_APP_CODE) from None

log = logging.getLogger("piagent")

# Responses that never carry a body (RFC 9110), so never a chunked one.
_BODILESS = ("1", "204", "304")


def application(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    """piagent's app, with chunked framing for bodies of unknown length."""
    # WSGI lets start_response be called again (with exc_info) until the headers are
    # out; the transformation must still be added once only.
    chunkable = environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and environ["REQUEST_METHOD"] != "HEAD"

    def framing_start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any):
        nonlocal chunkable
        known_length = any(name.lower() == "content-length" for name, _ in headers)
        if chunkable and not known_length and not status.startswith(_BODILESS):
            # Before the first body byte: uWSGI sends the headers with it.
            if uwsgi.route("chunked", "") < 0:
                raise RuntimeError("uWSGI cannot chunk: load its transformation_chunked plugin")
            chunkable = False
        return start_response(status, headers, *exc_info)

    return _CutOnFailure(app(environ, framing_start_response))


class _CutOnFailure:
    """The body, whose failure after the start leaves the response visibly unfinished."""

    def __init__(self, body: Iterable[bytes]) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except Exception:
            _shut_connection_down()
            raise

    def close(self) -> None:
        """Close the body, as a WSGI server must (piagent releases its upstream there)."""
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def _shut_connection_down() -> None:
    # shutdown() on a duplicate acts on the connection itself, while uWSGI keeps its own
    # descriptor open until the request ends, so no other request can reuse the number.
    try:
        with socket.socket(fileno=os.dup(uwsgi.connection_fd())) as connection:
            connection.shutdown(socket.SHUT_RDWR)
    except OSError as exc:
        log.info("could not cut the connection of a failed stream: %s", exc)
