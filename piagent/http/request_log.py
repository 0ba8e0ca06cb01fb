"""Request ids, and one structured log line and one set of metrics per request.

A streamed response is logged when its body ends (the WSGI server closes it), so
its duration, first token and token counts are those of the whole stream. That is
done around the app (RecordWhenClosed), not with Flask's `call_on_close`: Werkzeug
skips those callbacks when the body's own close raises, and never calls them for a
body it hands over as it is (a static file in the server's file wrapper).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from flask import Flask, Response, request

from ..ops.metrics import Metrics
from .auth import api_key_id
from .trace import RequestTrace, current_trace

REQUEST_ID_HEADER = "X-Request-Id"
UNMATCHED_ROUTE = "unmatched"  # the route label of a request no rule matched (404, 405)
# What a proxy or client may send as its own request id (uuid, nginx's $request_id, ...).
# Matched whole (fullmatch): `$` would also accept the id followed by a newline.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

access_log = logging.getLogger("piagent.access")
log = logging.getLogger("piagent")
# Where a streamed response leaves its recording for RecordWhenClosed.
_RECORD = "piagent.record_request"


def install_request_log(app: Flask, metrics: Metrics, *, log_content: bool) -> None:
    """Register the hooks; they run before any other, so even a 401 has its id and line."""
    app.wsgi_app = RecordWhenClosed(app.wsgi_app)  # type: ignore[method-assign]

    @app.before_request
    def start_trace() -> None:
        trace = current_trace()
        sent = request.headers.get(REQUEST_ID_HEADER, "")
        if _VALID_REQUEST_ID.fullmatch(sent):
            trace.request_id = sent
        if log_content:
            trace.reply_parts = []

    @app.after_request
    def finish_trace(response: Response) -> Response:
        trace = current_trace()
        response.headers[REQUEST_ID_HEADER] = trace.request_id
        rule = request.url_rule
        done = partial(
            _record,
            trace,
            metrics,
            # The rule, never the path, so that unknown paths all count as one route.
            route=rule.rule if rule is not None else UNMATCHED_ROUTE,
            method=request.method,
            path=request.path,
            status=response.status_code,
            key=api_key_id(),
        )
        if response.is_streamed:
            request.environ[_RECORD] = done
        else:
            done()
        return response


class RecordWhenClosed:
    """WSGI middleware: a streamed response is recorded once the server closes its body."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self._app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Run the app; wrap the body of a streamed response so that its close records it."""
        body = self._app(environ, start_response)
        record = environ.pop(_RECORD, None)
        return body if record is None else _RecordedBody(body, record)


class _RecordedBody:
    """A response body whose close records the request, whatever the body's own close does.

    Iterating it iterates the body itself, so relaying costs nothing more per chunk; a
    file wrapper is then read in blocks rather than sent with sendfile.
    """

    def __init__(self, body: Iterable[bytes], record: Callable[[], None]) -> None:
        self._body = body
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        """Close the body, then record the request even if that failed."""
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._record()


def _record(
    trace: RequestTrace,
    metrics: Metrics,
    *,
    route: str,
    method: str,
    path: str,
    status: int,
    key: str | None,
) -> None:
    duration_s = time.monotonic() - trace.started
    # Each on its own, so that a failing metric (a full multiprocess folder) still leaves
    # the line; neither may break the server's cleanup.
    try:
        metrics.request_done(route, method, status, duration_s)
    except Exception:
        log.exception("could not count request %s", trace.request_id)
    try:
        fields = _fields(trace, method, path, status, duration_s, key)
        access_log.info("request", extra={"fields": fields})
    except Exception:
        log.exception("could not log request %s", trace.request_id)


def _fields(
    trace: RequestTrace, method: str, path: str, status: int, duration_s: float, key: str | None
) -> dict[str, object]:
    stats = trace.stats
    fields: dict[str, object] = {
        "request_id": trace.request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": _ms(duration_s),
        "ttft_ms": _ms(trace.first_token_s),
        "prompt_tokens": stats.prompt_tokens if stats else None,
        "tokens": stats.completion_tokens if stats else None,
        "tokens_per_s": _round(trace.tokens_per_s, 2),
        "agent": trace.agent,
        "model": trace.model,
        "conversation_id": trace.conversation_id,
        "outcome": trace.outcome,
        "key": key,
    }
    if trace.reply_parts is not None:  # LOG_CONTENT=true
        fields["message"] = trace.message
        fields["reply"] = "".join(trace.reply_parts)
    return fields


def _ms(seconds: float | None) -> float | None:
    return _round(None if seconds is None else seconds * 1000, 1)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
