"""PROVIDER=openai: the app against a fake OpenAI-compatible server, failures included."""

from __future__ import annotations

import logging
import uuid

import pytest
import requests

from piagent.app import create_app
from piagent.settings import Settings
from tests.fake_openai import MODEL, FakeOpenAI
from tests.http_raw import read_response, send_request
from tests.prom import samples, value
from tests.servers import access_fields, free_port, gunicorn, wait_until, waitress_server

TOKENS = [f"w{i} " for i in range(20)]


@pytest.fixture
def upstream():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def settings_for(upstream):
    def build(**overrides) -> Settings:
        fields = {"provider": "openai", "openai_base_url": upstream.base_url, "openai_model": MODEL}
        return Settings(**{**fields, **overrides})

    return build


@pytest.fixture
def app(settings_for):
    return create_app(settings_for())


def chat(client, headers=None, **body):
    return client.post("/chat", json={"message": "hi", **body}, headers=headers)


def detail_of(response) -> str:
    detail = response.get_json()["detail"]
    assert "Ollama" not in detail and "ollama" not in detail
    return detail


# --- success ---------------------------------------------------------------------------


def test_non_stream_reply_names_the_openai_model_and_its_usage(client, upstream):
    upstream.behave(tokens=["Hel", "lo", "!"], prompt_tokens=21, finish_reason="length")
    body = chat(client).get_json()
    assert body["reply"] == "Hello!"
    assert (body["model"], body["provider"]) == (MODEL, "openai")
    assert body["usage"] == {"prompt_tokens": 21, "completion_tokens": 3}
    assert body["done_reason"] == "length"


def test_stream_reply_is_the_event_text(client, upstream):
    upstream.behave(tokens=["One", " two", " é😀"])
    response = chat(client, stream=True)
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "One two é😀"


@pytest.mark.parametrize("stream", [False, True])
def test_exact_upstream_request_and_nothing_more(make_settings, upstream, stream):
    settings = Settings(
        provider="openai",
        openai_base_url=upstream.base_url,
        openai_model=MODEL,
        temperature=0.3,
        max_tokens=50,
    )
    client = create_app(settings).test_client()
    chat(client, message="What is a Pi?", agent="shell", stream=stream).get_data()
    sent = upstream.last.body
    expected_keys = {"model", "messages", "stream", "temperature", "max_tokens"}
    assert set(sent) == expected_keys | ({"stream_options"} if stream else set())
    assert (sent["model"], sent["stream"], sent["temperature"], sent["max_tokens"]) == (
        MODEL,
        stream,
        0.3,
        50,
    )
    if stream:
        assert sent["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["messages"][1]["content"] == "What is a Pi?"
    assert "Authorization" not in upstream.last.headers


def test_api_key_is_sent_as_a_bearer_token(settings_for):
    with FakeOpenAI(api_key="sk-local") as keyed:
        settings = settings_for(openai_base_url=keyed.base_url, openai_api_key="sk-local")
        response = chat(create_app(settings).test_client())
        assert response.status_code == 200
        assert keyed.last.headers["Authorization"] == "Bearer sk-local"


def test_agent_settings_choose_the_model_and_options(settings_for, upstream, tmp_path):
    (tmp_path / "general.md").write_text("Be brief.")
    (tmp_path / "poet.md").write_text("Answer in verse.")
    (tmp_path / "poet.toml").write_text('model = "verse-1"\ntemperature = 1.2\nmax_tokens = 40\n')
    upstream.models.add("verse-1")
    client = create_app(settings_for(prompts_dir=tmp_path)).test_client()
    assert chat(client, agent="poet").get_json()["model"] == "verse-1"
    sent = upstream.last.body
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("verse-1", 1.2, 40)
    assert chat(client).get_json()["model"] == MODEL


def test_second_turn_carries_the_first(client, upstream):
    upstream.behave(tokens=["first answer"])
    chat(client, message="first", conversation_id="c1")
    chat(client, message="second", conversation_id="c1", stream=True).get_data()
    sent = [(m["role"], m["content"]) for m in upstream.last.body["messages"][1:]]
    assert sent == [("user", "first"), ("assistant", "first answer"), ("user", "second")]


def test_stream_ending_without_done_but_with_a_finish_reason_is_whole(client, upstream):
    upstream.behave(tokens=["a", "b"], send_done=False)
    response = chat(client, stream=True, conversation_id="nd")
    assert response.get_data(as_text=True) == "ab"
    assert len(client.application.extensions["piagent"].memory.transcript("nd")) == 2


# --- failures before the response starts: a real status, and words to act on ---------


@pytest.mark.parametrize("stream", [False, True])
def test_rejected_api_key_is_502_saying_to_check_the_key(settings_for, stream):
    with FakeOpenAI(api_key="sk-right") as keyed:
        settings = settings_for(openai_base_url=keyed.base_url, openai_api_key="sk-wrong")
        response = chat(create_app(settings).test_client(), stream=stream)
    assert response.status_code == 502
    detail = detail_of(response)
    assert "401" in detail and "Incorrect API key" in detail and "OPENAI_API_KEY" in detail


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_502_naming_it(settings_for, stream):
    client = create_app(settings_for(openai_model="gpt-9")).test_client()
    response = chat(client, stream=stream)
    assert response.status_code == 502
    detail = detail_of(response)
    assert "'gpt-9'" in detail and "OPENAI_MODEL" in detail


def test_base_url_without_v1_is_502_saying_so(settings_for, upstream):
    client = create_app(settings_for(openai_base_url=upstream.base_url[:-3])).test_client()
    response = chat(client)
    assert response.status_code == 502
    assert "OPENAI_BASE_URL" in detail_of(response) and "/v1" in detail_of(response)


@pytest.mark.parametrize("stream", [False, True])
def test_server_error_is_502_with_its_message(client, upstream, stream):
    upstream.behave(status=500, error="CUDA out of memory")
    response = chat(client, stream=stream)
    assert response.status_code == 502
    assert "HTTP 500" in detail_of(response) and "CUDA out of memory" in detail_of(response)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [400, 413, 422])
def test_request_refused_by_the_server_is_400_with_its_message(client, upstream, status, stream):
    # What llama.cpp answers for a prompt longer than its context.
    upstream.behave(status=status, error="the request exceeds the available context size")
    response = chat(client, stream=stream)
    assert response.status_code == 400
    detail = detail_of(response)
    assert f"HTTP {status}" in detail and "exceeds the available context size" in detail


@pytest.mark.parametrize("status", [429, 503])
def test_busy_or_rate_limited_is_503_passing_on_retry_after(client, upstream, status):
    upstream.behave(status=status, error="slow down", retry_after="7")
    response = chat(client)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert "slow down" in detail_of(response)


@pytest.mark.parametrize("stream", [False, True])
def test_unreachable_server_is_502_naming_the_variable(settings_for, stream):
    port = free_port()  # nothing listens there
    client = create_app(settings_for(openai_base_url=f"http://127.0.0.1:{port}/v1")).test_client()
    response = chat(client, stream=stream)
    assert response.status_code == 502
    assert "not reachable" in detail_of(response) and "OPENAI_BASE_URL" in detail_of(response)


def test_stream_silent_before_its_first_token_is_504(settings_for, upstream):
    upstream.behave(stall_after=0)
    client = create_app(settings_for(stream_idle_timeout_s=0.2)).test_client()
    response = chat(client, stream=True)
    assert response.status_code == 504
    assert "sent nothing for 0.2 s" in detail_of(response)


@pytest.mark.parametrize(
    ("behaviour", "words"),
    [
        ({"malformed_after": 0}, "cannot read"),
        ({"error_event_after": 0, "error": "model crashed"}, "model crashed"),
        ({"drop_after": 0}, "broke in the middle"),
        ({"tokens": [], "send_done": False, "send_finish": False}, "ended before its final"),
        ({"content_type": "application/json"}, "instead of an event stream"),
    ],
    ids=["malformed", "error-event", "dropped", "no-end", "not-sse"],
)
def test_broken_stream_before_any_text_is_502(client, upstream, behaviour, words):
    upstream.behave(**behaviour)
    response = chat(client, stream=True, conversation_id="b")
    assert response.status_code == 502
    assert words in detail_of(response)
    assert client.application.extensions["piagent"].memory.transcript("b") is None


# --- failures after the response started, and the client leaving, on a real socket ----


def stream_request(served, conversation_id: str):
    body = {"message": "hi", "stream": True, "conversation_id": conversation_id}
    return send_request(served.url, "/chat", body)


@pytest.mark.parametrize(
    "failure",
    [{"malformed_after": 3}, {"error_event_after": 3}, {"drop_after": 3}, {"stall_after": 3}],
    ids=lambda f: next(iter(f)),
)
def test_failure_after_start_ends_the_stream_unfinished_and_saves_nothing(
    settings_for, upstream, failure
):
    app = create_app(settings_for(stream_idle_timeout_s=0.3))
    upstream.behave(tokens=TOKENS[:8], **failure)
    conversation_id = uuid.uuid4().hex
    with waitress_server(app) as served, stream_request(served, conversation_id) as sock:
        response = read_response(sock)
    assert response.status == 200
    # Tokens sent at once may share a write; what matters is every byte before the failure.
    assert response.body == "".join(TOKENS[:3]).encode()
    assert not response.complete
    assert app.extensions["piagent"].memory.transcript(conversation_id) is None


def test_stream_closes_upstream_when_client_disconnects(app, served, upstream):
    upstream.behave(tokens=TOKENS, token_delay=0.05)
    conversation_id = uuid.uuid4().hex
    with stream_request(served, conversation_id) as sock:
        seen = read_response(sock, max_chunks=2)
    assert seen.chunks == [t.encode() for t in TOKENS[:2]]
    assert upstream.last.finished.wait(5)
    assert upstream.last.outcome == "client_closed"
    assert upstream.last.tokens_sent < len(TOKENS)
    remembered = app.extensions["piagent"].memory.transcript(conversation_id)
    assert remembered[1].content.startswith(seen.body.decode())


@pytest.mark.gunicorn
def test_under_gunicorn_a_client_leaving_closes_the_upstream_at_once(tmp_path):
    with FakeOpenAI() as fake_openai:
        env = {"PROVIDER": "openai", "OPENAI_BASE_URL": fake_openai.base_url, "OPENAI_MODEL": MODEL}
        with gunicorn(env, tmp_path) as running:
            fake_openai.behave(tokens=TOKENS, token_delay=0.05)
            body = {"model": "general", "messages": [{"role": "user", "content": "hi"}]}
            with send_request(
                running.url, "/v1/chat/completions", {**body, "stream": True}
            ) as sock:
                seen = read_response(sock, max_chunks=2)
            assert seen.status == 200 and b"w1 " in seen.body
            assert fake_openai.last.finished.wait(5)
            assert fake_openai.last.outcome == "client_closed"
            assert fake_openai.last.tokens_sent < len(TOKENS)


# --- generation speed --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/chat", "/v1/chat/completions"])
def test_tokens_per_second_is_measured_from_the_stream_itself(app, upstream, caplog, path):
    # Six tokens 50 ms apart: five gaps of 50 ms after the first, at most 20 tokens a second.
    upstream.behave(tokens=[f"t{i} " for i in range(6)], token_delay=0.05)
    body = (
        {"message": "hi", "stream": True}
        if path == "/chat"
        else {"model": "general", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    with waitress_server(app) as served:
        before = samples(requests.get(f"{served.url}/metrics", timeout=5).text)
        with caplog.at_level(logging.INFO, logger="piagent.access"):
            reply = requests.post(
                f"{served.url}{path}", json=body, headers={"X-Request-Id": "speed"}, timeout=10
            )
            assert reply.status_code == 200 and "t5" in reply.text
            line = wait_until(lambda: access_fields(caplog, "speed"), 5, what="the log line")
        after = samples(requests.get(f"{served.url}/metrics", timeout=5).text)
    assert line["tokens"] == 6
    assert 5 < line["tokens_per_s"] <= 20.5
    count = "piagent_tokens_per_second_count"
    assert value(after, count) - value(before, count) == 1
    speed = value(after, "piagent_tokens_per_second_sum") - value(
        before, "piagent_tokens_per_second_sum"
    )
    assert speed == pytest.approx(line["tokens_per_s"], abs=0.01)


def test_a_reply_in_one_piece_has_no_speed_rather_than_a_wrong_one(client, upstream, caplog):
    upstream.behave(tokens=["all ", "at ", "once"])
    with caplog.at_level(logging.INFO, logger="piagent.access"):
        assert chat(client, headers={"X-Request-Id": "whole"}).status_code == 200
    line = access_fields(caplog, "whole")
    assert line["tokens"] == 3 and line["tokens_per_s"] is None
