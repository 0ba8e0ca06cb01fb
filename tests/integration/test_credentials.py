"""Credentials in OLLAMA_HOST, OPENAI_BASE_URL, OPENAI_API_KEY and REDIS_URL never show:
not in a reply (the unauthenticated /ready included), a log line or /metrics, on every
error path that names the server's address."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from piagent.app import create_app
from piagent.settings import Settings
from tests.conftest import MODEL
from tests.fake_openai import MODEL as OPENAI_MODEL
from tests.fake_openai import FakeOpenAI
from tests.servers import free_port, wait_until

USER, PASSWORD, API_KEY = "pi-user", "s3cret-pw", "sk-piagent-key-0123456789"
SECRETS = (f"{USER}:", PASSWORD, API_KEY)


def with_credentials(url: str) -> str:
    """`url` with a user name and password in it."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{USER}:{PASSWORD}@{rest}"


def assert_hidden(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} shows in: {text}"


def everything_shown(settings: Settings, caplog, *, chat_path: str = "/chat") -> list[str]:
    """A chat in both modes, /ready and /metrics: their bodies, and every log line."""
    client = create_app(settings).test_client()
    shown = []
    for stream in (False, True):
        if chat_path == "/chat":
            body = {"message": "hi", "stream": stream}
        else:
            body = {"model": "general", "messages": [{"role": "user", "content": "hi"}]}
        reply = client.post(chat_path, json={**body, "stream": stream})
        assert reply.status_code >= 500
        shown.append(reply.get_data(as_text=True))
    ready = client.get("/ready")
    assert ready.status_code == 503
    shown.append(ready.get_data(as_text=True))
    shown.append(client.get("/metrics").get_data(as_text=True))
    return [*shown, caplog.text]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (backlog) but never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        yield silent.getsockname()[1]


def test_unreachable_ollama(caplog):
    url = f"http://127.0.0.1:{free_port()}"
    shown = everything_shown(Settings(ollama_host=with_credentials(url)), caplog)
    assert f"not reachable at {url}:" in shown[0]
    assert_hidden(*shown)


def test_unresolvable_ollama(caplog):
    url = "http://-piagent.invalid:11434"
    shown = everything_shown(Settings(ollama_host=with_credentials(url)), caplog)
    assert "host name -piagent.invalid not found" in shown[0]
    assert_hidden(*shown)


def test_ollama_timing_out(caplog, silent_port):
    url = f"http://127.0.0.1:{silent_port}"
    settings = Settings(
        ollama_host=with_credentials(url), reply_timeout_s=0.2, first_token_timeout_s=0.2
    )
    shown = everything_shown(settings, caplog)
    assert f"at {url} did not answer within" in shown[2]  # /ready
    assert_hidden(*shown)


def test_ollama_without_the_model(fake, caplog):
    settings = Settings(ollama_host=with_credentials(fake.url), ollama_model_general="absent:1b")
    shown = everything_shown(settings, caplog)
    assert "ollama pull absent:1b" in shown[0]
    assert_hidden(*shown)


def test_a_server_that_is_not_ollama(caplog):
    with FakeOpenAI() as other:  # answers 404 to Ollama's paths
        url = other.base_url.removesuffix("/v1")
        shown = everything_shown(Settings(ollama_host=with_credentials(url)), caplog)
    assert f"Ollama at {url} answered HTTP 404 for /api/tags" in shown[2]
    assert_hidden(*shown)


def test_openai_base_url_without_v1_and_a_wrong_key(caplog):
    with FakeOpenAI(api_key="the-right-key-0123456789") as server:
        url = server.base_url.removesuffix("/v1")
        settings = Settings(
            provider="openai",
            openai_base_url=with_credentials(url),
            openai_model=OPENAI_MODEL,
            openai_api_key=API_KEY,
        )
        shown = everything_shown(settings, caplog)
        shown += everything_shown(settings, caplog, chat_path="/v1/chat/completions")
    assert f"has no {url}/chat/completions" in shown[0]
    assert_hidden(*shown)


def test_openai_server_refusing_the_key_and_lacking_the_model(caplog):
    with FakeOpenAI(api_key="the-right-key-0123456789") as server:
        settings = Settings(
            provider="openai",
            openai_base_url=with_credentials(server.base_url),
            openai_model="absent",
            openai_api_key=API_KEY,
        )
        shown = everything_shown(settings, caplog)
    assert "check OPENAI_API_KEY" in shown[0]
    assert f"at {server.base_url} does not serve the model(s) absent" in shown[2]
    assert_hidden(*shown)


def test_warm_up_log(caplog):
    url = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.INFO, logger="piagent")
    create_app(Settings(ollama_host=with_credentials(url), warmup=True))
    wait_until(lambda: "warm-up: model" in caplog.text, 10, what="the warm-up's log line")
    assert f"not reachable at {url}:" in caplog.text
    assert_hidden(caplog.text)


@pytest.mark.parametrize("credentials", [f"{USER}:{PASSWORD}@", f":{PASSWORD}@"])
def test_unreachable_redis(fake, caplog, credentials):
    port = free_port()
    settings = Settings(
        ollama_host=fake.url,
        memory_backend="redis",
        redis_url=f"redis://{credentials}127.0.0.1:{port}/0?password={PASSWORD}",
    )
    client = create_app(settings).test_client()
    chat = client.post("/chat", json={"message": "hi"})
    ready = client.get("/ready")
    assert (chat.status_code, ready.status_code) == (503, 503)
    assert f"the conversation memory at redis://127.0.0.1:{port}/0 " in chat.get_json()["detail"]
    assert_hidden(chat.get_data(as_text=True), ready.get_data(as_text=True), caplog.text)
    assert_hidden(client.get("/metrics").get_data(as_text=True))


def test_ready_and_chat_name_the_model_server_with_its_address_alone(fake, caplog):
    """A model server that works with credentials in its URL: nothing shows them either."""
    settings = Settings(ollama_host=with_credentials(fake.url), ollama_model_general=MODEL)
    client = create_app(settings).test_client()
    assert client.post("/chat", json={"message": "hi"}).status_code == 200
    assert client.get("/ready").status_code == 200
    assert_hidden(client.get("/metrics").get_data(as_text=True), caplog.text)
