"""Errors as OpenAI's clients read them: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from typing import Any

from ..errors import MessageTooLong, PiagentError, UnknownAgent

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


def openai_error(
    status: int, detail: Any, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object for a status and a detail (a sentence, or field errors)."""
    if isinstance(detail, list):  # field errors, located under "body"
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
        "type": _TYPES.get(status, default_type),
        "param": param,
        "code": code,
    }


def openai_shape(status: int, detail: Any, exc: PiagentError | None) -> dict[str, Any]:
    """The error body of every /v1 route."""
    if isinstance(exc, UnknownAgent):  # under /v1 the agent is named by `model`
        return {"error": openai_error(status, detail, param="model", code="model_not_found")}
    if isinstance(exc, MessageTooLong):  # OpenAI's own code for it, on the whole history
        error = openai_error(status, exc.detail, param="messages", code="context_length_exceeded")
        return {"error": error}
    return {"error": openai_error(status, detail)}
