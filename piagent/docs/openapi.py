"""The OpenAPI 3.1 document of an app, written from the operations recorded on its views.

Schemas come from the pydantic models themselves (`models_json_schema`), each response
from responses.py, security from whether API keys are on. Nothing here
describes a route by hand: a route without `@operation` is simply missing, which
tests/unit/test_openapi.py catches.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from werkzeug.routing import Rule

from ..http.auth import PUBLIC_ENDPOINTS, api_keys_on
from ..http.request_log import REQUEST_ID_HEADER
from .apidoc import Operation, operation_of
from .responses import REPLY_HEADERS, Refs, failures, header_ref, success

OPENAPI_VERSION = "3.1.0"
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
        "headers": REPLY_HEADERS,
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
        "responses": {str(spec.status): success(spec, refs)},
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
    for status, (why, headers) in sorted(failures(spec, needs_key).items()):
        found["responses"][str(status)] = {
            "description": " ".join(why),
            "headers": headers | {REQUEST_ID_HEADER: header_ref(REQUEST_ID_HEADER)},
            "content": {"application/json": {"schema": errors}},
        }
    return found


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
            "schema": _absent_not_null(_schema_only(field)),
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


def _schema_only(schema: dict[str, Any]) -> dict[str, Any]:
    """A field's schema without the title and description its parameter shows itself."""
    return {key: value for key, value in schema.items() if key not in ("title", "description")}


def _absent_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional header or query value is left out, never sent as null: drop that choice."""
    choices = schema.get("anyOf", [])
    if schema.get("default", 0) is not None or {"type": "null"} not in choices:
        return schema
    kept = [choice for choice in choices if choice != {"type": "null"}]
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**rest, **kept[0]} if len(kept) == 1 else {**rest, "anyOf": kept}


def _version() -> str:
    try:
        return version("piagent")
    except PackageNotFoundError:  # a checkout that was never installed
        return "0+unknown"
