"""Driving Debian's Chromium with Playwright, for tests of the chat page.

Playwright's own browser download is not reachable here, so it drives the `chromium`
package through `executable_path`. Every visit watches what a person would not see: a
request to another host (refused before it leaves), a dialog, a script error, a
Content-Security-Policy violation. `check()` fails the test on any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    Route,
    sync_playwright,
)

from tests.components import require_program

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 800}

# Runs in every page before its own scripts (Playwright injects it past the CSP).
_RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's chromium, headless; skipped locally (failed in CI) when it is not installed."""
    path = require_program("chromium", "/usr/bin/chromium")
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)


@pytest.fixture(scope="module")
def module_chromium() -> Iterator[Browser]:
    """One Chromium for a test module (`browser = module_chromium` there)."""
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """One browser context on one origin, and what it saw go wrong."""

    context: BrowserContext
    page: Page
    origin: str  # host:port every request must go to
    requests: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Fail on a request to another host, a dialog, a script error or a CSP violation."""
        violations = [] if self.page.is_closed() else self.page.evaluate("window.__cspViolations")
        assert self.leaks == [], f"requests left the origin: {self.leaks}"
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"
        assert self.errors == [], f"script errors: {self.errors}"
        assert violations == [], f"Content-Security-Policy violations: {violations}"


def visit(browser: Browser, url: str, *, guard: bool = True, **context_options) -> Visit:
    """A fresh context (no storage, no cache) with a page on `url`'s origin, not yet loaded.

    With `guard`, requests to any other host are aborted and recorded; without it they
    are only recorded (routing turns the browser's cache off, which a transfer count
    must not depend on).
    """
    context = browser.new_context(**context_options)
    context.add_init_script(_RECORD_VIOLATIONS)
    page = context.new_page()
    seen = Visit(context, page, urlsplit(url).netloc)

    def elsewhere(request_url: str) -> bool:
        return urlsplit(request_url).netloc != seen.origin

    def route(route: Route) -> None:
        if elsewhere(route.request.url):
            seen.leaks.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def on_request(request) -> None:
        seen.requests.append(request.url)
        if not guard and elsewhere(request.url):
            seen.leaks.append(request.url)

    if guard:
        context.route("**/*", route)
    page.on("request", on_request)
    page.on("pageerror", lambda error: seen.errors.append(str(error)))

    def on_dialog(dialog) -> None:
        seen.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return seen


def message_box(page: Page) -> Locator:
    """The text area messages are written in."""
    return page.get_by_role("textbox", name="Message")


def send(page: Page, text: str) -> None:
    """Type a message and press Enter, as a person would."""
    box = message_box(page)
    box.fill(text)
    box.press("Enter")


def replies(page: Page) -> Locator:
    """Every reply of the model on the page, oldest first."""
    return page.locator("#messages .message.assistant")


def user_messages(page: Page) -> Locator:
    """Every message the person sent that is on the page, oldest first."""
    return page.locator("#messages .message.user .body")
