"""The OpenAPI 3.1 document of an app, written from the operations recorded on its views.

Schemas come from the pydantic models themselves (`models_json_schema`), statuses from
the error map in `http/errors.py`, security from whether API keys are on. Nothing here
describes a route by hand: a route without `@operation` is simply missing, which
tests/unit/test_openapi.py catches.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from werkzeug.routing import Rule

from ..errors import PiagentError, Unauthorized, UpstreamBusy
from .apidoc import Media, Operation, operation_of
from .auth import PUBLIC_ENDPOINTS, api_keys_on
from .errors import status_of
from .request_log import REQUEST_ID_HEADER
from .schemas import CONVERSATION_HEADER
from .stream_formats import SSE

OPENAPI_VERSION = "3.1.0"
# A $ref to each model's component schema, by model and by what it is used for.
Refs = dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]]
_REF = "#/components/schemas/{model}"
_SECURITY = "apiKey"
# Flask's <converter(args):name> and <name> become OpenAPI's {name}.
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")
# The request id a client may send, on every operation. piagent accepts any value and
# replaces one it would not log, so the document sets no pattern.
_REQUEST_ID = {
    "description": "Names the request in piagent's log and is sent back, if it is 1 to 128 "
    "of the characters A-Z a-z 0-9 . _ : - (otherwise piagent makes an id of its own).",
    "schema": {"type": "string"},
}
# The reply headers operations refer to by name.
_REPLY_HEADERS: dict[str, dict[str, Any]] = {
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
_TOO_LONG = (
    "The request line (path and query) is longer than the WSGI server reads: gunicorn's "
    "limit_request_line, 4094 bytes by default. gunicorn answers this one itself, in HTML."
)
_DESCRIPTION = """\
A small agent server in front of a local model server. Errors of piagent's own routes
are `{"detail": ...}`: a sentence, or a list of broken rules each naming its field; those
of `/v1` are OpenAI's `{"error": {...}}`. A stream answers 200 and sends the reply as it
is generated; a failure after that ends it with an `error` event (SSE, NDJSON) or cuts
it short (text).
"""


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of every annotated route of `app`."""
    keys_on = api_keys_on(app)
    routes = [
        (rule, view, found)
        for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint))
        if (found := operation_of(view := app.view_functions[rule.endpoint])) is not None
    ]
    refs, schemas = _schemas([spec for _, _, spec in routes])
    paths: dict[str, dict[str, Any]] = {}
    for rule, view, spec in routes:
        public = rule.endpoint in PUBLIC_ENDPOINTS
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            item = paths.setdefault(openapi_path(rule), {})
            item[method.lower()] = _operation(rule, view, spec, refs, keys_on and not public)
            if keys_on:
                item[method.lower()]["security"] = [] if public else [{_SECURITY: []}]
    components: dict[str, Any] = {
        "schemas": schemas,
        "headers": _REPLY_HEADERS,
        "parameters": {"RequestId": {"name": REQUEST_ID_HEADER, "in": "header", **_REQUEST_ID}},
    }
    if keys_on:
        components["securitySchemes"] = {
            _SECURITY: {
                "type": "http",
                "scheme": "bearer",
                "description": "One of the keys in API_KEYS or API_KEYS_FILE.",
            }
        }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "piagent", "version": _version(), "description": _DESCRIPTION},
        # Relative to the document, so it works behind a proxy's sub-path too.
        "servers": [{"url": ".", "description": "this piagent"}],
        "paths": paths,
        "components": components,
    }


def openapi_path(rule: Rule) -> str:
    """The rule's path as OpenAPI writes it: /conversations/{conversation_id}."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule.rule)


def _schemas(
    specs: list[Operation],
) -> tuple[Refs, dict[str, Any]]:
    """Every model the operations name, as component schemas, and a $ref to each."""
    wanted: set[tuple[type[BaseModel], JsonSchemaMode]] = set()
    for spec in specs:
        for model in (spec.body, spec.query, spec.path, spec.headers):
            if model is not None:
                wanted.add((model, "validation"))
        events = [media.event for media in spec.media if media.event is not None]
        for model in (spec.reply, spec.error_reply, *events):
            if model is not None:
                wanted.add((model, "serialization"))
    ordered = sorted(wanted, key=lambda pair: (pair[0].__name__, pair[1]))
    refs, definitions = models_json_schema(ordered, ref_template=_REF)
    return refs, definitions.get("$defs", {})


def _operation(
    rule: Rule,
    view: Callable[..., object],
    spec: Operation,
    refs: Refs,
    needs_key: bool,
) -> dict[str, Any]:
    summary, _, description = (view.__doc__ or rule.endpoint).strip().partition("\n")
    found: dict[str, Any] = {
        "operationId": rule.endpoint.replace(".", "_"),
        "summary": summary,
        "tags": [rule.endpoint.partition(".")[0]],
        "parameters": [
            *_path_parameters(rule, spec.path),
            *_parameters(spec.query, "query"),
            *_parameters(spec.headers, "header"),
            {"$ref": "#/components/parameters/RequestId"},
        ],
        "responses": {str(spec.status): _success(spec, refs)},
    }
    if description.strip():
        found["description"] = inspect.cleandoc(description)
    if spec.body is not None:
        found["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(spec.body, "validation")]}},
        }
    if spec.query is not None or _RULE_ARGUMENT.search(rule.rule):
        # Not piagent's answer: the WSGI server refuses such a request line before it runs.
        found["responses"]["414"] = {
            "description": _TOO_LONG,
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    errors = refs[(spec.error_reply, "serialization")]
    for status, (why, headers) in sorted(_failures(spec, needs_key).items()):
        found["responses"][str(status)] = {
            "description": " ".join(why),
            "headers": headers | {REQUEST_ID_HEADER: _header_ref(REQUEST_ID_HEADER)},
            "content": {"application/json": {"schema": errors}},
        }
    return found


def _success(spec: Operation, refs: Refs) -> dict[str, Any]:
    """The successful response: its body in every media type, and its headers."""
    content: dict[str, Any] = {}
    if spec.reply is not None:
        content["application/json"] = {"schema": refs[(spec.reply, "serialization")]}
    for media in spec.media:
        content[media.media_type] = {"schema": _media_schema(media, refs)}
    names = (*spec.reply_headers, REQUEST_ID_HEADER)
    described = spec.reply.__doc__ if spec.reply is not None else spec.reply_text
    response: dict[str, Any] = {
        "description": _first_line(described) or "Done.",
        "headers": {name: _header_ref(name) for name in names},
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


def _failures(spec: Operation, needs_key: bool) -> dict[int, tuple[list[str], dict[str, Any]]]:
    """Each error status the operation can answer: why, and the headers it carries."""
    causes: list[type[PiagentError]] = list(spec.raises)
    if needs_key:
        causes.insert(0, Unauthorized)
    found: dict[int, tuple[list[str], dict[str, Any]]] = {}
    for cause in causes:
        why, headers = found.setdefault(_status(cause, spec.statuses), ([], {}))
        text = _first_line(cause.__doc__)
        if text not in why:
            why.append(text)
        if issubclass(cause, Unauthorized):
            headers["WWW-Authenticate"] = _header_ref("WWW-Authenticate")
    if spec.body is not None:
        found.setdefault(413, ([_TOO_LARGE], {}))
    for status, (_, headers) in found.items():
        # Only a busy model server says when to come back; other 503s do not.
        busy = [
            c for c in causes if _status(c, spec.statuses) == status and issubclass(c, UpstreamBusy)
        ]
        if busy:
            headers["Retry-After"] = _header_ref("Retry-After")
    return found


def _status(cause: type[PiagentError], statuses: Mapping[type[PiagentError], int]) -> int:
    # status_of reads nothing but the error's class, so an uninitialised instance will do.
    return status_of(cause.__new__(cause), statuses)


def _parameters(model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
    """One parameter per field of the model that validates the query or the headers."""
    if model is None:
        return []
    schema = model.model_json_schema(mode="validation", ref_template=_REF)
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "in": where,
            "required": name in required,
            "schema": _untitled(field),
            **({"description": field["description"]} if "description" in field else {}),
        }
        for name, field in schema.get("properties", {}).items()
    ]


def _path_parameters(rule: Rule, model: type[BaseModel] | None) -> list[dict[str, Any]]:
    """Every argument of the rule; its schema from the path model when there is one."""
    fields = {p["name"]: p for p in _parameters(model, "path")}
    return [
        {**fields.get(name, {"schema": {"type": "string"}}), "name": name, "in": "path"}
        | {"required": True}
        for name in _RULE_ARGUMENT.findall(rule.rule)
    ]


def _untitled(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in schema.items() if key != "title"}


def _header_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0]


def _version() -> str:
    try:
        return version("piagent")
    except PackageNotFoundError:  # a checkout that was never installed
        return "0+unknown"
