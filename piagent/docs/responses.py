"""The responses of an operation in the API document: its success, and each error status.

Statuses come from the error map in `http/errors.py` (with the blueprint's own table),
so the document cannot say one thing while piagent answers another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from ..errors import PiagentError, Unauthorized, UpstreamBusy
from ..http.errors import status_of
from ..http.request_log import REQUEST_ID_HEADER
from ..http.schemas import CONVERSATION_HEADER
from ..http.stream_formats import SSE
from .apidoc import Media, Operation

# A $ref to each model's component schema, by model and by what it is used for.
Refs = dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]]

# The reply headers operations refer to by name.
REPLY_HEADERS: dict[str, dict[str, Any]] = {
    REQUEST_ID_HEADER: {
        "description": "The request's id, as in the log line piagent writes for it.",
        "required": True,
        "schema": {"type": "string"},
    },
    CONVERSATION_HEADER: {
        "description": "The conversation this exchange belongs to: the one named, or a new one.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds after which asking again may succeed.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {
        "description": "How to authenticate: a Bearer key.",
        "required": True,
        "schema": {"type": "string"},
    },
}
_TOO_LARGE = "The body is larger than MAX_BODY_BYTES."


def success(spec: Operation, refs: Refs) -> dict[str, Any]:
    """The successful response: its body in every media type, and its headers."""
    content: dict[str, Any] = {}
    if spec.reply is not None:
        content["application/json"] = {"schema": refs[(spec.reply, "serialization")]}
    for media in spec.media:
        content[media.media_type] = {"schema": _media_schema(media, refs)}
    names = (*spec.reply_headers, REQUEST_ID_HEADER)
    described = spec.reply.__doc__ if spec.reply is not None else spec.reply_text
    response: dict[str, Any] = {
        "description": first_line(described) or "Done.",
        "headers": {name: header_ref(name) for name in names},
    }
    if content:
        response["content"] = content
    return response


def _media_schema(media: Media, refs: Refs) -> dict[str, Any]:
    """Text; an SSE event whose data is a JSON event; or NDJSON as an array of events."""
    if media.event is None:
        return {"type": "string"}
    event = refs[(media.event, "serialization")]
    if media.media_type != SSE:
        return {
            "type": "array",
            "items": event,
            "description": "One JSON event a line, each written as it happens.",
        }
    data: dict[str, Any] = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": event,
    }
    if media.last_data is not None:
        data = {"anyOf": [data, {"const": media.last_data}]}
    return {
        "type": "object",
        "description": "One server-sent event; its data is a JSON event.",
        "required": ["data"],
        "properties": {"data": data},
    }


def failures(spec: Operation, needs_key: bool) -> dict[int, tuple[list[str], dict[str, Any]]]:
    """Each error status the operation can answer: why, and the headers it carries."""
    causes: list[type[PiagentError]] = list(spec.raises)
    if needs_key:
        causes.insert(0, Unauthorized)
    found: dict[int, tuple[list[str], dict[str, Any]]] = {}
    for cause in causes:
        why, headers = found.setdefault(_status(cause, spec.statuses), ([], {}))
        text = first_line(cause.__doc__)
        if text not in why:
            why.append(text)
        if issubclass(cause, Unauthorized):
            headers["WWW-Authenticate"] = header_ref("WWW-Authenticate")
    if spec.body is not None:
        found.setdefault(413, ([_TOO_LARGE], {}))
    for status, (_, headers) in found.items():
        # Only a busy model server says when to come back; other 503s do not.
        busy = [
            c for c in causes if _status(c, spec.statuses) == status and issubclass(c, UpstreamBusy)
        ]
        if busy:
            headers["Retry-After"] = header_ref("Retry-After")
    return found


def _status(cause: type[PiagentError], statuses: Mapping[type[PiagentError], int]) -> int:
    # status_of reads nothing but the error's class, so an uninitialised instance will do.
    return status_of(cause.__new__(cause), statuses)


def header_ref(name: str) -> dict[str, str]:
    """A reference to one of REPLY_HEADERS."""
    return {"$ref": f"#/components/headers/{name}"}


def first_line(text: str | None) -> str:
    """The summary line of a docstring."""
    return (text or "").strip().split("\n", 1)[0]
