"""The one place where exceptions become status codes and JSON error bodies.

Every body is `{"detail": ...}` unless the blueprint that owns the request chose
another shape (the OpenAI-compatible API uses OpenAI's `{"error": {...}}`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from ..errors import (
    ClientGone,
    ConversationBusy,
    MemoryUnavailable,
    MessageTooLong,
    NotReady,
    Overloaded,
    PiagentError,
    ReplyNotKept,
    Unauthorized,
    UnknownAgent,
    UnknownConversation,
    UpstreamBusy,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from ..ops.logs import printable

log = logging.getLogger("piagent")


class InvalidRequest(PiagentError):
    """The body or path breaks a rule; the detail is a list of {loc, msg, type} per field."""

    @classmethod
    def from_validation(cls, exc: ValidationError, where: str) -> InvalidRequest:
        """One entry per broken rule, located in `where` ("body", "path")."""
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return cls([{**error, "loc": [where, *error["loc"]]} for error in errors])


# The most specific class in an error's ancestry decides its status.
_STATUS: dict[type[PiagentError], int] = {
    InvalidRequest: 422,
    MessageTooLong: 422,
    UnknownAgent: 404,
    UnknownConversation: 404,
    Unauthorized: 401,
    ConversationBusy: 409,
    ClientGone: 499,  # nginx's "client closed request"; only ever seen in access logs
    UpstreamError: 502,
    UpstreamRejected: 400,  # the request itself was refused: sending it again cannot help
    UpstreamTimeout: 504,
    UpstreamBusy: 503,
    MemoryUnavailable: 503,
    ReplyNotKept: 502,  # the model has worked: not a refusal, see CLUSTER_HEADER
    NotReady: 503,
}

# Where OpenAI's API answers otherwise: it refuses a request the model cannot take with
# 400 (its SDKs then raise BadRequestError, and retry nothing), never with 422.
OPENAI_STATUSES: dict[type[PiagentError], int] = {MessageTooLong: 400}

# Sent by the cluster site (config/nginx/piagent-cluster.conf), which passes a 503 on to
# the next Pi. Every 503 piagent sends is a refusal made before the model or the memory
# did anything, so passing it on never generates or keeps a reply twice; with this
# header, a model server that cannot be reached at all is such a refusal too (alone, it
# is the 502 clients of one Pi expect), so the request goes to a Pi whose model answers.
CLUSTER_HEADER = "X-Piagent-Cluster"


def status_of(exc: PiagentError, statuses: Mapping[type[PiagentError], int] = _STATUS) -> int:
    """The HTTP status that answers `exc` (`statuses` first, then piagent's own)."""
    for cls in type(exc).__mro__:
        if cls in statuses:
            return statuses[cls]
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def _status_here(exc: PiagentError) -> int:
    """The status that answers `exc` in this request: its API's, behind the cluster site or not."""
    if isinstance(exc, UpstreamUnreachable) and request.headers.get(CLUSTER_HEADER) == "1":
        return 503
    return status_of(exc, _dialect().statuses)


def _headers_of(exc: PiagentError) -> dict[str, str]:
    if isinstance(exc, UpstreamBusy):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": exc.challenge}
    return {}


def _detail_of(exc: PiagentError) -> Any:
    if isinstance(exc, MessageTooLong):  # the field at fault, like any broken rule
        return [{"type": "too_long_for_context", "loc": ["body", "message"], "msg": exc.detail}]
    return exc.detail


# An error body from the status, the detail and the error (None for HTTP-level errors).
ErrorShape = Callable[[int, Any, PiagentError | None], dict[str, Any]]


def detail_shape(status: int, detail: Any, exc: PiagentError | None) -> dict[str, Any]:
    """piagent's own error body, the one the original clients parse."""
    return {"detail": detail}


@dataclass(frozen=True)
class _Dialect:
    """How one API answers errors: the body's shape, and statuses that differ from piagent's."""

    shape: ErrorShape
    statuses: Mapping[type[PiagentError], int] = field(default_factory=dict)


_OWN = _Dialect(detail_shape)


def use_error_shape(
    blueprint: Blueprint,
    shape: ErrorShape,
    *,
    statuses: Mapping[type[PiagentError], int] | None = None,
) -> None:
    """Answer errors of `blueprint`'s routes (and of unknown URLs under its prefix) in `shape`.

    `statuses` (one of this module's tables) overrides piagent's own for some errors.
    """
    dialect = _Dialect(shape, statuses or {})
    blueprint.record(lambda setup: setup.app.extensions[_SHAPES].append((setup, dialect)))


_SHAPES = "piagent.error_shapes"


def _dialect() -> _Dialect:
    # A request that matched no route has no blueprint: it belongs to the blueprint
    # whose URL prefix it falls under.
    for setup, dialect in current_app.extensions[_SHAPES]:
        if request.blueprint == setup.name:
            return dialect
        prefix = setup.url_prefix or ""
        under = request.path == prefix or request.path.startswith(prefix + "/")
        if request.url_rule is None and prefix and under:
            return dialect
    return _OWN


def _json_error(
    status: int, detail: Any, headers: dict[str, str], exc: PiagentError | None = None
) -> Response:
    response = jsonify(_dialect().shape(status, detail, exc))
    response.status_code = status
    response.headers.update(headers)
    return response


def register_error_handlers(app: Flask) -> None:
    """Turn every exception a view can raise into a JSON error response."""
    app.extensions.setdefault(_SHAPES, [])

    @app.errorhandler(PiagentError)
    def piagent_error(exc: PiagentError) -> Response:
        # Rejections are counted and logged per request; a burst must not flood the log.
        status = _status_here(exc)
        if isinstance(exc, UpstreamError) and not isinstance(exc, Overloaded):
            # The model server's words: escaped here too, for a host's own log format.
            log.warning("upstream failure (%d): %s", status, printable(exc.detail))
        return _json_error(status, _detail_of(exc), _headers_of(exc), exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Keep the headers werkzeug chose (Allow on 405), drop its HTML body.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        detail = exc.description
        if isinstance(exc, RequestEntityTooLarge):
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            detail = f"request body is larger than the limit of {limit} bytes"
        elif isinstance(exc, NotFound):
            detail = f"no such route: {request.path}"
        elif isinstance(exc, MethodNotAllowed):
            detail = f"{request.method} is not allowed on {request.path}"
        return _json_error(exc.code or 500, detail, headers)

    @app.errorhandler(Exception)
    def unhandled_error(exc: Exception) -> Response:
        log.exception("unhandled error")
        return _json_error(500, "internal server error; the cause is in the server log", {})
