"""The chat page as HTTP: its headers, caching, the size budget, WEB_UI and API keys."""

from __future__ import annotations

import gzip
import re
from html.parser import HTMLParser

import pytest

from piagent.app import create_app
from piagent.web.routes import STATIC_DIR

KEY = "web-key-0123456789abcdef"
BUDGET_BYTES = 150 * 1024
EXPECTED_CSP = {
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
}


class _PageParts(HTMLParser):
    """What the page's HTML loads, and anything that would run outside its own files."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}={value!r}>")
        if tag == "script":
            self._in_script = True
            self.loads.append(found["src"])
        elif tag == "link":
            self.loads.append(found["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script>{data[:40]}")


def page_parts(html: str) -> _PageParts:
    parser = _PageParts()
    parser.feed(html)
    return parser


@pytest.fixture
def client(make_settings):
    return create_app(make_settings()).test_client()


def assets(client) -> list[str]:
    """The URLs the page loads, as written in it."""
    return page_parts(client.get("/").get_data(as_text=True)).loads


def assert_secured(response) -> None:
    policy = {part.strip() for part in response.headers["Content-Security-Policy"].split(";")}
    assert policy == EXPECTED_CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_page_and_every_asset_carry_the_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.content_type == "text/html; charset=utf-8"
    assert_secured(page)
    for url in assets(client):
        response = client.get(f"/{url}")
        assert response.status_code == 200, url
        assert_secured(response)
    missing = client.get("/static/no-such-file.js")
    assert missing.status_code == 404
    assert "detail" in missing.get_json()
    assert_secured(missing)


def test_page_has_no_inline_script_or_style_and_only_relative_urls(client):
    parts = page_parts(client.get("/").get_data(as_text=True))
    assert parts.inline == []
    assert len(parts.loads) == 5  # icon, styles, marked, DOMPurify, the page's script
    for url in parts.loads:
        assert re.fullmatch(r"static/[\w./-]+\?v=[0-9a-f]{16}", url), url


def test_page_script_never_evaluates_strings_or_writes_unsanitised_html():
    script = (STATIC_DIR / "app.js").read_text()
    assert not re.search(r"\beval\(|new Function|setTimeout\(\s*['\"`]|insertAdjacentHTML", script)
    # One HTML sink in the whole page, fed only by DOMPurify.
    sinks = re.findall(r".*\.(?:inner|outer)HTML\s*=.*", script)
    assert sinks == ["    target.innerHTML = DOMPurify.sanitize(markdown.parse(text), SANITIZE);"]


def test_page_is_revalidated_by_its_etag(client):
    first = client.get("/")
    assert first.headers["Cache-Control"] == "no-cache"
    again = client.get("/", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""


def test_fingerprinted_assets_are_cached_for_good_and_others_revalidated(client):
    url = next(u for u in assets(client) if u.startswith("static/app.js"))
    cached = client.get(f"/{url}")
    assert cached.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert cached.content_type == "text/javascript; charset=utf-8"
    for stale in ("/static/app.js", "/static/app.js?v=0123456789abcdef"):
        response = client.get(stale)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-cache"
        revalidated = client.get(stale, headers={"If-None-Match": response.headers["ETag"]})
        assert revalidated.status_code == 304


def test_everything_the_page_loads_fits_the_budget_compressed(client):
    sizes = {"/": len(gzip.compress(client.get("/").data))}
    for url in assets(client):
        sizes[url] = len(gzip.compress(client.get(f"/{url}").data))
    assert sum(sizes.values()) < BUDGET_BYTES, sizes


def test_page_and_its_files_need_no_key_but_every_api_call_does(make_settings):
    client = create_app(make_settings(api_keys=KEY)).test_client()
    assert client.get("/").status_code == 200
    for url in assets(client):
        assert client.get(f"/{url}").status_code == 200, url
    for path in ("/agents", "/conversations", "/conversations/x"):
        assert client.get(path).status_code == 401, path
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/conversations", headers=bearer).status_code == 200


def test_web_ui_false_serves_no_page(make_settings):
    client = create_app(make_settings(web_ui=False)).test_client()
    for path in ("/", "/static/app.js"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.get_json() == {"detail": f"no such route: {path}"}
    assert client.get("/health").status_code == 200
