"""Request ids, and one structured log line and one set of metrics per request.

A streamed response is logged when its body ends (the WSGI server closes it), so
its duration, first token and token counts are those of the whole stream.
"""

from __future__ import annotations

import logging
import re
import time
from functools import partial

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


def install_request_log(app: Flask, metrics: Metrics, *, log_content: bool) -> None:
    """Register the hooks; they run before any other, so even a 401 has its id and line."""

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
            response.call_on_close(done)
        else:
            done()
        return response


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
    try:
        metrics.request_done(route, method, status, duration_s)
        access_log.info(
            "request", extra={"fields": _fields(trace, method, path, status, duration_s, key)}
        )
    except Exception:  # a close callback must never break the server's cleanup
        logging.getLogger("piagent").exception("could not record request %s", trace.request_id)


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
