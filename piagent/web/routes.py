"""GET / (the chat page) and its static files, with headers that keep the page to itself."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, render_template, request, send_from_directory

from ..docs.apidoc import undocumented
from ..http.pages import serve_as_pages

bp = Blueprint("web", __name__, template_folder="templates")
# The page runs only its own files: no inline script or style, no eval.
serve_as_pages(bp, style_src="'self'", img_src="'self'")

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The API document is for programs; the page and its files are for a browser to load.
_FOR_BROWSERS = "the chat page, for a browser: HTML and its static files, not an API"
# An asset asked for with its current fingerprint (?v=) never changes under that URL.
IMMUTABLE_MAX_AGE_S = 365 * 24 * 3600


@bp.get("/")
@undocumented(_FOR_BROWSERS)
def page() -> Response:
    """The chat page; revalidated on every load (ETag), so a new version shows at once."""
    html = render_template("index.html", asset_url=asset_url)
    response = Response(html, content_type="text/html; charset=utf-8")
    response.cache_control.no_cache = True
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/static/<path:filename>")
@undocumented(_FOR_BROWSERS)
def asset(filename: str) -> Response:
    """A static file: cached for good under its fingerprinted URL, revalidated otherwise."""
    fingerprint = _fingerprints().get(filename)
    current = fingerprint is not None and request.args.get("v") == fingerprint
    response = send_from_directory(
        STATIC_DIR, filename, max_age=IMMUTABLE_MAX_AGE_S if current else None
    )
    if current:
        response.cache_control.public = True
        response.cache_control.immutable = True
    else:
        response.cache_control.no_cache = True
    return response


def asset_url(filename: str) -> str:
    """The relative URL of a static file, with its fingerprint (works under any sub-path)."""
    return f"static/{filename}?v={_fingerprints()[filename]}"


@cache
def _fingerprints() -> dict[str, str]:
    """A short hash of every static file's bytes, read once: they change only with a deploy."""
    return {
        path.relative_to(STATIC_DIR).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in sorted(STATIC_DIR.rglob("*"))
        if path.is_file()
    }
