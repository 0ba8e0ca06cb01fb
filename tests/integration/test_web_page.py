"""The chat page in a real Chromium, against real gunicorn (and nginx) with the fake Ollama."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser import (
    DESKTOP,
    PHONE,
    message_box,
    module_chromium,
    replies,
    send,
    user_messages,
    visit,
)
from tests.nginx import nginx, shipped_site
from tests.servers import REPO, free_port, gunicorn

pytestmark = pytest.mark.gunicorn
browser = module_chromium
# Room for a loaded CI machine; a passing wait returns as soon as its condition holds.
expect.set_options(timeout=10_000)

API_KEY = "page-key-0123456789abcdef"
# Everything the page loads, as sent over the wire; the budget is for compressed
# bytes, and piagent sends them uncompressed, so meeting it this way is the harder test.
BUDGET_BYTES = 150 * 1024
STATS = re.compile(r"\d+ tokens?")
INCOMPLETE = re.compile(r"\bincomplete\b")
SHELL_PROMPT = (REPO / "prompts" / "shell.md").read_text().strip()
# PIAGENT_SCREENSHOTS=docs keeps the README's picture up to date (see README, "The chat page").
SCREENSHOTS = os.environ.get("PIAGENT_SCREENSHOTS")

DISK_SPACE_REPLY = [
    "Use ",
    "`df` ",
    "with ",
    "`-h` ",
    "for sizes ",
    "a person ",
    "can read:\n\n",
    "```sh\n",
    "df -h /\n",
    "```\n\n",
    "The **Avail** ",
    "column is ",
    "what is ",
    "left. ",
    "For one ",
    "folder's ",
    "size, ",
    "use `du -sh <folder>`.",
]


@pytest.fixture(scope="module")
def server(module_fake, tmp_path_factory):
    env = {"OLLAMA_HOST": module_fake.url, "ACCESS_LOG": ""}
    with gunicorn(env, tmp_path_factory.mktemp("gunicorn")) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_server(module_fake, tmp_path_factory):
    env = {"OLLAMA_HOST": module_fake.url, "ACCESS_LOG": "", "API_KEYS": API_KEY}
    with gunicorn(env, tmp_path_factory.mktemp("gunicorn-keys")) as running:
        yield running


@pytest.fixture
def fake(module_fake, server):
    """The shared fake, reset, in front of a server that remembers no conversation."""
    module_fake.reset()
    listing = requests.get(f"{server.url}/conversations?limit=200", timeout=10).json()
    for conversation in listing["conversations"]:
        requests.delete(f"{server.url}/conversations/{conversation['conversation_id']}", timeout=10)
    return module_fake


@pytest.fixture
def open_page(browser):
    """Open pages in fresh contexts; each is checked for leaks, dialogs and errors at the end."""
    visits = []

    def open_(url: str, **options):
        seen = visit(browser, url, **options)
        visits.append(seen)
        seen.page.goto(url)
        return seen

    yield open_
    try:
        for seen in visits:
            seen.check()
    finally:
        for seen in visits:
            seen.context.close()


@pytest.fixture
def page(open_page, server, fake) -> Page:
    """The chat page at /, loaded, on a desktop-sized window."""
    opened = open_page(f"{server.url}/", viewport=DESKTOP).page
    expect(opened.get_by_label("Agent")).to_be_enabled()
    return opened


def wait_for_reply(page: Page, index: int = -1):
    """The reply once its stats line is shown (the stream's `done` event arrived)."""
    reply = replies(page).nth(index)
    expect(reply.locator(".meta")).to_contain_text(STATS)
    return reply


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=tmp_path / name)
    if SCREENSHOTS:
        page.screenshot(path=REPO / SCREENSHOTS / name)


def conversation_in_address(page: Page) -> str:
    return urlsplit(page.url).fragment


# --- streaming, stopping, the stats -------------------------------------------------------


def test_reply_grows_in_the_page_as_it_streams_then_shows_its_stats(page, fake, server, tmp_path):
    for earlier in ("Which Pi model do I have?", "Make a cron job that runs every hour"):
        requests.post(f"{server.url}/chat", json={"message": earlier}, timeout=10)
    page.reload()
    expect(page.locator("#conversations li")).to_have_count(2)
    page.get_by_label("Agent").select_option("shell")
    fake.behave(tokens=DISK_SPACE_REPLY, token_delay=0.12)
    # Every change to the reply's text, recorded by the page itself as it happens.
    page.evaluate(
        """() => {
        window.__seen = [];
        new MutationObserver(() => {
          const reply = document.querySelector('#messages .message.assistant:last-of-type');
          if (!reply) return;
          const done = reply.querySelector('.meta').textContent.includes('tokens');
          window.__seen.push({length: reply.querySelector('.body').textContent.length, done});
        }).observe(document.getElementById('messages'),
                   {childList: true, subtree: true, characterData: true});
      }"""
    )
    send(page, "How do I see free disk space?")
    reply = replies(page).last
    expect(reply.locator(".body")).to_contain_text("column is what")
    expect(reply).to_have_attribute("aria-busy", "true")
    screenshot(page, tmp_path, "chat-page.png")

    wait_for_reply(page)
    seen = page.evaluate("window.__seen")
    before_done = sorted({s["length"] for s in seen if not s["done"] and s["length"] > 0})
    final = reply.locator(".body").text_content()
    assert len(before_done) >= 5, seen  # many sizes on the way, not all at once
    assert before_done[0] < len(final) / 2
    assert reply.locator("pre code").text_content() == "df -h /\n"
    assert reply.locator("strong").text_content() == "Avail"
    stats = reply.locator(".meta").text_content()
    assert "qwen2.5:3b-instruct" in stats
    assert f"{len(DISK_SPACE_REPLY)} tokens" in stats
    assert "tokens/s" in stats and "first token" in stats
    expect(reply).not_to_have_attribute("aria-busy", "true")


def test_stop_closes_the_upstream_within_a_second_and_the_next_message_works(page, fake):
    fake.behave(tokens=[f"word{i} " for i in range(100)], token_delay=0.2)
    send(page, "Tell me a long story")
    expect(replies(page).last.locator(".body")).to_contain_text("word2")
    stop = page.get_by_role("button", name="Stop")
    stop.click()
    stopped_at = time.monotonic()
    generation = fake.wait_for_client_close(timeout=5)
    assert generation.client_closed_at - stopped_at < 1.0
    stopped = replies(page).last
    expect(stopped.locator(".meta")).to_contain_text("Stopped")
    expect(stopped).to_have_class(INCOMPLETE)
    expect(page.get_by_role("button", name="Send")).to_be_visible()

    fake.behave(tokens=["Here ", "again."])
    send(page, "Go on")
    expect(wait_for_reply(page).locator(".body")).to_have_text("Here again.")
    # The stopped reply was kept as far as it went, and the next turn followed it.
    history = fake.last_messages()
    assert history[1][1] == "Tell me a long story"
    assert history[2][1].startswith("word0 word1 word2")


def test_a_reply_cut_short_by_the_model_is_shown_incomplete_with_the_detail(page, fake):
    fake.behave(tokens=["Partial ", "answer ", "never finished"], error_after=2)
    send(page, "hello")
    reply = replies(page).last
    expect(reply.locator(".meta")).to_contain_text("Incomplete:")
    expect(reply.locator(".meta")).to_contain_text("unexpected EOF")
    expect(reply.locator(".body")).to_have_text("Partial answer")
    expect(reply).to_have_class(INCOMPLETE)


def test_a_broken_connection_is_shown_as_an_incomplete_reply(open_page, server, fake, tmp_path):
    fake.behave(tokens=[f"part{i} " for i in range(100)], token_delay=0.2)
    # The shipped site, which serves the page at its root.
    site = shipped_site(server.url.removeprefix("http://"), free_port())
    with nginx(site, tmp_path) as proxy:
        page = open_page(f"{proxy.url}/", viewport=DESKTOP).page
        expect(page.get_by_label("Agent")).to_be_enabled()
        send(page, "hello")
        expect(replies(page).last.locator(".body")).to_contain_text("part1")
    # nginx stopped in mid-reply: the browser's connection broke.
    meta = replies(page).last.locator(".meta")
    expect(meta).to_contain_text("Incomplete: the connection broke")


# --- conversations and agents -------------------------------------------------------------


def test_reload_keeps_the_conversation_and_its_history(page, fake):
    fake.behave(tokens=["Noted, ", "Ada."])
    send(page, "My name is Ada.")
    wait_for_reply(page)
    conversation_id = conversation_in_address(page)
    assert conversation_id
    page.reload()
    expect(user_messages(page)).to_have_text(["My name is Ada."])
    expect(replies(page).locator(".body")).to_have_text(["Noted, Ada."])
    assert conversation_in_address(page) == conversation_id
    current = page.locator("#conversations li.current")
    expect(current.locator(".title")).to_have_text("My name is Ada.")
    expect(current.locator(".when")).to_contain_text("2 messages")

    fake.behave(tokens=["Ada."])
    send(page, "What is my name?")
    wait_for_reply(page)
    assert fake.last_messages()[1:] == [
        ("user", "My name is Ada."),
        ("assistant", "Noted, Ada."),
        ("user", "What is my name?"),
    ]


def test_switching_conversations_and_agents(page, fake):
    send(page, "first conversation")
    wait_for_reply(page)
    first_id = conversation_in_address(page)

    page.get_by_role("button", name="New chat").click()
    expect(user_messages(page)).to_have_count(0)
    agent = page.get_by_label("Agent")
    agent.select_option("shell")
    expect(page.locator("#agent-description")).to_contain_text("Linux and shell commands")
    send(page, "second conversation")
    wait_for_reply(page)
    assert fake.last_messages()[0] == ("system", SHELL_PROMPT)
    second_id = conversation_in_address(page)
    assert second_id and second_id != first_id

    items = page.locator("#conversations li")
    expect(items.locator(".title")).to_have_text(["second conversation", "first conversation"])
    items.filter(has_text="first conversation").get_by_role("button").first.click()
    expect(user_messages(page)).to_have_text(["first conversation"])
    assert conversation_in_address(page) == first_id
    items.filter(has_text="second conversation").get_by_role("button").first.click()
    expect(user_messages(page)).to_have_text(["second conversation"])

    page.reload()  # the chosen agent is remembered too
    expect(page.get_by_label("Agent")).to_have_value("shell")


def test_delete_removes_a_conversation_from_the_sidebar(page, fake, server):
    send(page, "keep this one")
    wait_for_reply(page)
    page.get_by_role("button", name="New chat").click()
    send(page, "delete this one")
    wait_for_reply(page)
    doomed = conversation_in_address(page)

    delete = page.get_by_role("button", name="Delete conversation: delete this one")
    delete.click()
    page.get_by_role("button", name="Confirm: Delete conversation: delete this one").click()
    expect(page.locator("#conversations .title")).to_have_text(["keep this one"])
    expect(user_messages(page)).to_have_count(0)  # it was open: a new one starts
    assert conversation_in_address(page) == ""
    assert requests.get(f"{server.url}/conversations/{doomed}", timeout=10).status_code == 404


def test_sent_messages_carry_the_conversation_id_header(page, fake, server):
    send(page, "one")
    wait_for_reply(page)
    conversation_id = conversation_in_address(page)
    with page.expect_request(lambda request: request.url.endswith("/chat")) as sent:
        send(page, "two")
    wait_for_reply(page)
    assert sent.value.headers["x-conversation-id"] == conversation_id
    assert sent.value.headers["accept"] == "application/x-ndjson"


# --- errors in words ----------------------------------------------------------------------


def test_api_key_is_asked_for_kept_and_forgotten(open_page, keyed_server, fake):
    page = open_page(f"{keyed_server.url}/", viewport=DESKTOP).page
    key_field = page.get_by_role("textbox", name="API key")
    expect(key_field).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("needs an API key")

    key_field.fill("wrong-key-0123456789abcdef")
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#key-reason")).to_contain_text("did not accept")
    key_field.fill(API_KEY)
    page.get_by_role("button", name="Save key").click()
    expect(page.get_by_label("Agent")).to_be_enabled()
    expect(key_field).to_be_hidden()
    send(page, "hello with a key")
    wait_for_reply(page)
    assert fake.requests[-1].json["messages"][-1]["content"] == "hello with a key"

    page.reload()  # kept in the browser
    expect(user_messages(page)).to_have_text(["hello with a key"])
    assert page.evaluate("localStorage.getItem('piagent.apiKey')") == API_KEY

    page.get_by_role("button", name="API key settings").click()
    page.get_by_role("button", name="Forget key").click()
    assert page.evaluate("localStorage.getItem('piagent.apiKey')") is None
    page.reload()
    expect(key_field).to_be_visible()


def test_a_conversation_still_answering_is_409_in_words(page, fake, server):
    send(page, "first")
    wait_for_reply(page)
    conversation_id = conversation_in_address(page)
    fake.behave(tokens=["busy ", "busy"], stall_after=1)
    body = {"message": "from elsewhere", "conversation_id": conversation_id, "stream": True}
    with requests.post(f"{server.url}/chat", json=body, stream=True, timeout=10) as elsewhere:
        assert elsewhere.status_code == 200
        send(page, "second")
        notice = page.get_by_role("alert")
        expect(notice).to_contain_text("Still answering the previous message")
        expect(message_box(page)).to_have_value("second")  # ready to send again
        expect(user_messages(page)).to_have_text(["first"])


def test_a_busy_model_server_is_503_with_a_countdown(page, fake):
    fake.behave(status=503)
    send(page, "hello")
    notice = page.get_by_role("alert")
    expect(notice).to_contain_text("Cannot answer right now: Ollama is busy")
    expect(notice).to_contain_text("You can send again in 5 s.")
    send_button = page.get_by_role("button", name="Send")
    expect(send_button).to_be_disabled()
    expect(notice).to_contain_text("You can send again in 4 s.")
    expect(notice).to_contain_text("You can send again now.")
    expect(send_button).to_be_enabled()
    expect(message_box(page)).to_have_value("hello")


def test_a_failing_model_server_is_502_in_words(page, fake):
    fake.behave(status=404, error='model "qwen2.5:3b-instruct" not found, try pulling it first')
    send(page, "hello")
    notice = page.get_by_role("alert")
    expect(notice).to_contain_text("The model server has a problem:")
    expect(notice).to_contain_text("qwen2.5:3b-instruct")
    expect(replies(page)).to_have_count(0)


# --- never HTML from the model ------------------------------------------------------------

XSS_REPLY = [
    'Look: <img src=x onerror="alert(1)"> ',
    "and\n\n<script>alert(2)</script>\n\n",
    "[click me](javascript:alert(3)) ",
    "![pixel](http://127.0.0.2:9/pixel.png) ",
    "before <!-- hidden instructions --> after\n\n",
    '<a href="javascript:alert(4)">raw link</a> ',
    '<iframe src="http://127.0.0.2:9/frame"></iframe>',
]


def test_model_output_and_titles_never_run_as_html(page, fake):
    fake.behave(tokens=XSS_REPLY)
    title = "<img src=x onerror=alert(5)> <b>bold?</b>"
    send(page, title)
    wait_for_reply(page)
    for when in ("streamed", "after a reload"):
        reply = replies(page).last.locator(".body")
        text = reply.text_content()
        assert '<img src=x onerror="alert(1)">' in text, when
        assert "<script>alert(2)</script>" in text, when
        assert "<!-- hidden instructions -->" in text, when
        assert '<a href="javascript:alert(4)">raw link</a>' in text, when
        assert page.locator("#messages img, #messages script, #messages iframe").count() == 0
        assert page.locator("a[href^='javascript:'], #sidebar b, #messages b").count() == 0
        expect(reply.get_by_text("click me")).not_to_have_attribute("href", "javascript:alert(3)")
        # The image is a link to click, never loaded by itself.
        expect(reply.get_by_role("link", name="pixel")).to_have_attribute(
            "href", "http://127.0.0.2:9/pixel.png"
        )
        expect(user_messages(page).last).to_have_text(title)
        expect(page.locator("#conversations .title")).to_have_text([title])
        page.reload()
        expect(replies(page)).to_have_count(1)
    assert page.evaluate("typeof window.alert") == "function"  # nothing replaced it either


def test_copy_button_copies_a_code_block(open_page, server, fake):
    opened = open_page(
        f"{server.url}/", viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"]
    )
    page = opened.page
    fake.behave(tokens=["Run:\n\n```sh\n", "ls -la\n", "```\n"])
    send(page, "list files")
    reply = wait_for_reply(page)
    copy = reply.get_by_role("button", name="Copy code")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "ls -la\n"


# --- phone and desktop, light and dark, keyboard ------------------------------------------


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone-375", "desktop"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_page_fits_and_works_on_a_phone_and_a_desktop(
    open_page, server, fake, viewport, scheme, tmp_path
):
    page = open_page(f"{server.url}/", viewport=viewport, color_scheme=scheme).page
    expect(page.get_by_label("Agent")).to_be_enabled()
    fake.behave(tokens=["A reply ", "that fits ", "the screen, with `code` and **bold**."])
    send(page, "Does this fit on my screen?")
    wait_for_reply(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"]  # nothing to scroll sideways
    for control in (message_box(page), page.get_by_role("button", name="Send")):
        box = control.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
        assert box["y"] + box["height"] <= viewport["height"]

    sidebar = page.get_by_role("complementary", name="Conversations")
    toggle = page.get_by_role("button", name="Chats")
    if viewport == PHONE:
        expect(sidebar).to_be_hidden()
        toggle.click()
        expect(sidebar).to_be_visible()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        page.keyboard.press("Escape")
        expect(sidebar).to_be_hidden()
    else:
        expect(sidebar).to_be_visible()
        expect(toggle).to_be_hidden()

    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(part) for part in background[4:-1].split(","))
    brightness = (red + green + blue) / 3
    assert brightness < 60 if scheme == "dark" else brightness > 200
    screenshot(page, tmp_path, f"chat-page-{viewport['width']}-{scheme}.png")


def test_keyboard_alone_sends_and_every_control_is_labelled(page, fake):
    fake.behave(tokens=["Two lines received."])
    box = message_box(page)
    box.focus()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    page.keyboard.press("Enter")
    wait_for_reply(page)
    assert fake.last_messages()[-1] == ("user", "line one\nline two")
    expect(user_messages(page)).to_have_text(["line one\nline two"])

    expect(box).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Send")).to_be_focused()
    for role, name in [
        ("combobox", "Agent"),
        ("button", "API key settings"),
        ("button", "New chat"),
        ("button", "Delete conversation: line one line two"),
        ("textbox", "Message"),
        ("log", "Messages"),
    ]:
        expect(page.get_by_role(role, name=name)).to_have_count(1)


# --- behind nginx, at / and under a sub-path ------------------------------------------------


def subpath_site(upstream: str, port: int, prefix: str) -> str:
    """nginx proxying `prefix` (e.g. /piagent/) to piagent's /, streaming unbuffered."""
    return f"""
server {{
    listen 127.0.0.1:{port};
    location {prefix} {{
        proxy_pass http://{upstream}/;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
    }}
}}
"""


def test_page_works_behind_nginx_under_a_sub_path(open_page, server, fake, tmp_path):
    site = subpath_site(server.url.removeprefix("http://"), free_port(), "/piagent/")
    with nginx(site, tmp_path) as proxy:
        assert (
            requests.get(f"{proxy.url}/piagent", timeout=10, allow_redirects=False)
            .headers["Location"]
            .endswith("/piagent/")
        )
        seen = open_page(f"{proxy.url}/piagent/", viewport=PHONE)
        page = seen.page
        expect(page.get_by_label("Agent")).to_be_enabled()
        fake.behave(tokens=[f"piece{i} " for i in range(6)], token_delay=0.1)
        send(page, "through a sub-path")
        expect(replies(page).last.locator(".body")).to_contain_text("piece2")
        expect(replies(page).last).to_have_attribute("aria-busy", "true")  # still streaming
        wait_for_reply(page)
        page.reload()
        expect(user_messages(page)).to_have_text(["through a sub-path"])
        paths = [urlsplit(url).path for url in seen.requests]
        assert all(path.startswith("/piagent/") for path in paths), paths
        assert "/piagent/chat" in paths and "/piagent/conversations" in paths


# --- what the page costs -------------------------------------------------------------------


def test_page_loads_only_from_its_origin_within_the_budget(open_page, server, fake):
    # No routing here: it would turn the cache off, and every request is still recorded.
    seen = open_page(f"{server.url}/", viewport=PHONE, guard=False)
    page = seen.page
    expect(page.get_by_label("Agent")).to_be_enabled()
    page.wait_for_load_state("networkidle")
    total = page.evaluate(
        """() => performance.getEntriesByType('navigation')
             .concat(performance.getEntriesByType('resource'))
             .reduce((sum, entry) => sum + entry.transferSize, 0)"""
    )
    assert 20 * 1024 < total < BUDGET_BYTES, total
    assert {urlsplit(url).netloc for url in seen.requests} == {seen.origin}

    # Model output pointing elsewhere still loads nothing from there.
    fake.behave(tokens=XSS_REPLY)
    send(page, "hello")
    wait_for_reply(page)
    assert seen.leaks == []
