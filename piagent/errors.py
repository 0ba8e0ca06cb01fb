"""The one place where exceptions become status codes and JSON error bodies.

Everywhere the body is `{"detail": ...}`, except under /v1, where OpenAI's clients
expect `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import (
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
)

log = logging.getLogger("piagent")


class ApiError(Exception):
    """An error with a status code and a detail a client can act on."""

    status = 500
    # What OpenAI's error body says under /v1: the field at fault and a machine code.
    openai_param: str | None = None
    openai_code: str | None = None

    def __init__(self, detail: Any, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class InvalidRequest(ApiError):
    """The body is not JSON, has wrong types or breaks a rule (detail: a list per field)."""

    status = 422

    @classmethod
    def from_validation(cls, exc: ValidationError, where: str) -> InvalidRequest:
        """One entry per broken rule, located in `where` ("body", "path")."""
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return cls([{**error, "loc": [where, *error["loc"]]} for error in errors])


class UnknownAgent(ApiError):
    """The request names an agent that does not exist."""

    status = 404
    openai_param = "model"  # under /v1 the agent is named by `model`
    openai_code = "model_not_found"


class UpstreamError(ApiError):
    """The model server failed: unreachable, answered an error, or sent garbage."""

    status = 502
    kind = "error"  # the label of piagent_upstream_errors_total


class UpstreamUnreachable(UpstreamError):
    """No connection to the model server could be made."""

    kind = "unreachable"


class UpstreamTimeout(UpstreamError):
    """The model server took longer than its timeout."""

    status = 504
    kind = "timeout"


class UpstreamBusy(UpstreamError):
    """The model server said it is busy; the client may retry shortly."""

    status = 503
    kind = "busy"

    def __init__(self, detail: str, *, retry_after_s: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class Overloaded(UpstreamBusy):
    """piagent's own queue for the model is full, or a queued request waited too long.

    A kind of UpstreamBusy, so that every stream path reports it as the model being
    busy, even once an SSE stream has started (heartbeats while queued).
    """


class NotReady(ApiError):
    """The model server cannot serve yet (down, or a model is not pulled)."""

    status = 503


class Unauthorized(ApiError):
    """A missing or wrong API key."""

    status = 401

    def __init__(self, detail: str, *, challenge: str = "Bearer") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class StreamInterrupted(RuntimeError):
    """Raised out of a started stream so the WSGI server drops the connection unfinished."""


_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


def openai_error(
    status: int, detail: Any, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object for a status and a detail (a sentence, or field errors)."""
    if isinstance(detail, list):  # pydantic's field errors, located under "body"
        fields = [".".join(str(part) for part in error["loc"][1:]) for error in detail]
        message = "; ".join(
            f"{name}: {error['msg']}" if name else error["msg"]
            for name, error in zip(fields, detail, strict=True)
        )
        param = param or fields[0] or None
    else:
        message = str(detail)
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    return {
        "message": message,
        "type": _OPENAI_TYPES.get(status, default_type),
        "param": param,
        "code": code,
    }


def _json_error(
    status: int,
    detail: Any,
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
) -> Response:
    if request.path == "/v1" or request.path.startswith("/v1/"):
        response = jsonify(error=openai_error(status, detail, param=param, code=code))
    else:
        response = jsonify(detail=detail)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    """Turn every exception a view can raise into a JSON error response."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        # Rejections are counted and logged per request; a burst must not flood the log.
        if isinstance(exc, UpstreamError) and not isinstance(exc, Overloaded):
            log.warning("upstream failure (%d): %s", exc.status, exc.detail)
        return _json_error(
            exc.status, exc.detail, exc.headers, param=exc.openai_param, code=exc.openai_code
        )

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
        return _json_error(500, "internal server error; the cause is in the server log")
