"""The /docs page in a real Chromium: every operation shown and tried, nothing from elsewhere."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser import DESKTOP, module_chromium, visit
from tests.conftest import gunicorn_for_module, shared_fake
from tests.integration.test_web_page import subpath_site
from tests.nginx import nginx
from tests.servers import free_port

pytestmark = pytest.mark.gunicorn
expect.set_options(timeout=15_000)  # Swagger UI parses the document on a loaded CI machine

OPERATIONS = 12
fake = shared_fake
server = gunicorn_for_module(ACCESS_LOG="")
browser = module_chromium


def open_docs(browser, url: str):
    seen = visit(browser, url, viewport=DESKTOP)
    seen.page.goto(url)
    expect(seen.page.locator(".opblock")).to_have_count(OPERATIONS)
    return seen


def try_health(page: Page) -> None:
    """Run GET /health from the page, as a reader would."""
    operation = page.locator("#operations-health-health_health")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tr.response .response-col_status")
    expect(status).to_have_text("200")


def test_the_page_shows_every_operation_and_runs_them_here(browser, server, fake):
    seen = open_docs(browser, f"{server.url}/docs")
    try:
        try_health(seen.page)
        assert f"{server.url}/health" in seen.requests
        seen.check()  # nothing from another host, no script error, no CSP violation
    finally:
        seen.context.close()


def test_the_page_works_behind_nginx_under_a_sub_path(browser, server, fake, tmp_path):
    site = subpath_site(server.url.removeprefix("http://"), free_port(), "/piagent/")
    with nginx(site, tmp_path) as proxy:
        seen = open_docs(browser, f"{proxy.url}/piagent/docs")
        try:
            try_health(seen.page)
            paths = [urlsplit(url).path for url in seen.requests]
            assert all(path.startswith("/piagent/") for path in paths), paths
            assert "/piagent/openapi.json" in paths and "/piagent/health" in paths
            seen.check()
        finally:
            seen.context.close()
