"""GET /openapi.json, the API document written from the routes, and GET /docs, a page to try it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, send_from_directory

from ..http.pages import serve_as_pages
from .apidoc import undocumented
from .openapi import build_document

bp = Blueprint("docs", __name__, template_folder="templates")
# Swagger UI sets styles from its scripts and draws icons from data: URIs.
serve_as_pages(bp, style_src="'self' 'unsafe-inline'", img_src="'self' data:")

STATIC_DIR = Path(__file__).resolve().parent / "static"

_DOCUMENT = "piagent.openapi"
_SELF = "the API document and its page describe the API; they are not part of it"


@bp.get("/openapi.json")
@undocumented(_SELF)
def openapi() -> Response:
    """The OpenAPI 3.1 document of every route, written once per app from its annotations."""
    return jsonify(document())


@bp.get("/docs")
@undocumented(_SELF)
def page() -> Response:
    """Swagger UI on /openapi.json, from files this server serves (no CDN)."""
    html = render_template("docs.html")
    response = Response(html, content_type="text/html; charset=utf-8")
    response.cache_control.no_cache = True
    return response


@bp.get("/docs/static/<path:filename>")
@undocumented(_SELF)
def asset(filename: str) -> Response:
    """Swagger UI's files and the script that starts it, revalidated on every load."""
    response = send_from_directory(STATIC_DIR, filename)
    response.cache_control.no_cache = True
    return response


def document() -> dict[str, Any]:
    """The current app's document: the routes do not change once the app is built."""
    extensions = current_app.extensions
    if _DOCUMENT not in extensions:
        extensions[_DOCUMENT] = build_document(current_app)
    return extensions[_DOCUMENT]
