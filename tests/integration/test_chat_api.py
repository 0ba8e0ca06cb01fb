"""POST /chat through the app with the real Ollama provider, against the fake Ollama."""

from __future__ import annotations

import json
import logging

import pytest

from piagent.app import create_app
from tests.conftest import MODEL
from tests.fake_ollama import count_prompt_tokens
from tests.servers import free_port


def chat(client, **body):
    return client.post("/chat", json={"message": "hi", **body})


# --- success, both modes -------------------------------------------------------------


def test_non_stream_reply_has_the_spec_fields(client, fake):
    fake.behave(tokens=["Hel", "lo", "!"], final_text="")
    response = chat(client)
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = response.get_json()
    assert body["reply"] == "Hello!"
    assert body["model"] == MODEL
    assert body["provider"] == "ollama"
    assert response.headers["X-Conversation-Id"] == body["conversation_id"]
    prompt_tokens = count_prompt_tokens(content for _, content in fake.last_messages())
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 3}
    assert body["done_reason"] == "stop"


def test_new_conversation_id_is_a_uuid4(client, fake):
    import uuid

    cid = chat(client).get_json()["conversation_id"]
    assert uuid.UUID(cid).version == 4


def test_stream_reply_is_the_fake_tokens_as_plain_text(client, fake):
    fake.behave(tokens=["One", " two", " three"], final_text=" four")
    response = chat(client, stream=True, conversation_id="s-1")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Conversation-Id"] == "s-1"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.get_data(as_text=True) == "One two three four"


@pytest.mark.parametrize("variant", ["split_lines", "pack_lines", "no_trailing_newline"])
def test_stream_survives_any_read_boundaries(client, fake, variant):
    fake.behave(tokens=["a", "é", "😀", "z"], **{variant: True})
    assert chat(client, stream=True).get_data(as_text=True) == "aé😀z"


def test_exact_upstream_request(make_settings, fake):
    client = create_app(
        make_settings(temperature=0.3, ctx_tokens=1024, max_tokens=50)
    ).test_client()
    chat(client, message="What is a Pi?", agent="shell")
    request = fake.requests[-1]
    assert request.path == "/api/chat"
    body = request.json
    assert body["model"] == MODEL
    assert body["stream"] is False
    assert body["options"] == {"temperature": 0.3, "num_ctx": 1024, "num_predict": 50}
    shell_prompt = (create_app(make_settings()).extensions["piagent"].agents["shell"]).system_prompt
    assert body["messages"] == [
        {"role": "system", "content": shell_prompt},
        {"role": "user", "content": "What is a Pi?"},
    ]


def test_stream_request_asks_ollama_to_stream(client, fake):
    chat(client, stream=True).get_data()
    assert fake.requests[-1].json["stream"] is True


# --- memory across requests ------------------------------------------------------------


def test_second_message_carries_the_first_exchange(client, fake):
    fake.behave(tokens=["first answer"])
    chat(client, message="first", conversation_id="c1")
    fake.behave(tokens=["second answer"])
    chat(client, message="second", conversation_id="c1", stream=True).get_data()
    assert fake.last_messages()[1:] == [
        ("user", "first"),
        ("assistant", "first answer"),
        ("user", "second"),
    ]


def test_streamed_reply_is_remembered_whole(client, fake):
    fake.behave(tokens=["a", "b"], final_text="c")
    chat(client, message="q", conversation_id="c2", stream=True).get_data()
    chat(client, message="next", conversation_id="c2")
    assert fake.last_messages()[1:3] == [("user", "q"), ("assistant", "abc")]


def test_conversations_do_not_mix(client, fake):
    chat(client, message="for A", conversation_id="A")
    chat(client, message="for B", conversation_id="B")
    assert fake.last_messages()[1:] == [("user", "for B")]


def test_memory_keeps_only_the_last_turns(make_settings, fake):
    client = create_app(make_settings(memory_max_turns=2)).test_client()
    for i in range(3):
        fake.behave(tokens=[f"a{i}"])
        chat(client, message=f"q{i}", conversation_id="m")
    assert fake.last_messages()[1:] == [("user", "q1"), ("assistant", "a1"), ("user", "q2")]


def test_disabled_memory_neither_reads_nor_writes(make_settings, fake):
    app = create_app(make_settings(enable_memory=False))
    client = app.test_client()
    chat(client, message="one", conversation_id="x")
    chat(client, message="two", conversation_id="x")
    assert fake.last_messages()[1:] == [("user", "two")]
    assert app.extensions["piagent"].memory is None


def test_failed_reply_is_not_remembered_so_a_retry_does_not_duplicate(client, fake):
    fake.behave(status=500)
    assert chat(client, message="q", conversation_id="r").status_code == 502
    fake.behave(tokens=["ok"])
    chat(client, message="q", conversation_id="r")
    assert fake.last_messages()[1:] == [("user", "q")]


def test_empty_reply_is_not_remembered(client, fake):
    fake.behave(tokens=[], final_text="")
    assert chat(client, message="q", conversation_id="e").get_json()["reply"] == ""
    chat(client, message="q2", conversation_id="e")
    assert fake.last_messages()[1:] == [("user", "q2")]


# --- the SPEC's error table ------------------------------------------------------------


def post_raw(client, data: bytes, **kwargs):
    return client.post("/chat", data=data, content_type="application/json", **kwargs)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'"hello"', None),
        (b'{"message": 42}', "message"),
        (b'{"agent": "general"}', "message"),
        (b'{"message": "   \\n\\t "}', "message"),
        (json.dumps({"message": "x" * 4001}).encode(), "message"),
        (b'{"message": "hi", "stream": "yes"}', "stream"),
        (b'{"message": "hi", "stream": 1}', "stream"),
        (b'{"message": "hi", "agent": 7}', "agent"),
        (b'{"message": "hi", "conversation_id": "a b"}', "conversation_id"),
        (b'{"message": "hi", "conversation_id": "a\\r\\nX-Evil: 1"}', "conversation_id"),
        (json.dumps({"message": "hi", "conversation_id": "c" * 129}).encode(), "conversation_id"),
        (b'{"message": "hi", "conversation_id": ""}', "conversation_id"),
        (b'{"message": "caf\xe9"}', None),  # latin-1, not UTF-8
        (b"\xff\xfe{}", None),
        (b'{"message": "\\ud800"}', None),  # a lone surrogate
        (b'{"message": ' + b"[" * 1000 + b"]" * 1000 + b"}", None),
    ],
)
def test_bad_input_is_422_naming_the_field_and_never_reaches_ollama(client, fake, data, field):
    response = post_raw(client, data)
    assert response.status_code == 422
    assert response.content_type == "application/json"
    detail = response.get_json()["detail"]
    assert detail and all(item["msg"] for item in detail)
    if field:
        assert ["body", field] in [item["loc"] for item in detail]
    assert fake.requests == []


def test_message_of_4000_emoji_fits_the_body_limit(make_settings, fake):
    # A context large enough for the message: this is about the body limit alone.
    client = create_app(make_settings(ctx_tokens=32768)).test_client()
    body = json.dumps({"message": "😀" * 4000}).encode()  # ascii-escaped: 48 kB
    assert post_raw(client, body).status_code == 200


def test_body_over_the_limit_is_413(client, fake):
    response = post_raw(client, b"x" * (10 * 1024 * 1024))
    assert response.status_code == 413
    assert "65536" in response.get_json()["detail"]
    assert fake.requests == []


def test_unknown_agent_is_404_naming_the_known_ones(client, fake):
    response = chat(client, agent="pirate")
    assert response.status_code == 404
    detail = response.get_json()["detail"]
    assert "pirate" in detail and "general" in detail and "shell" in detail
    assert fake.requests == []


def test_unknown_route_is_json_404(client):
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.get_json() == {"detail": "no such route: /nowhere"}


def test_wrong_method_is_json_405_with_allow(client):
    response = client.get("/chat")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert "GET" in response.get_json()["detail"]


@pytest.mark.parametrize("stream", [False, True])
def test_unreachable_ollama_is_502(make_settings, stream):
    port = free_port()  # nothing listens there
    client = create_app(make_settings(ollama_host=f"http://127.0.0.1:{port}")).test_client()
    response = chat(client, stream=stream)
    assert response.status_code == 502
    assert "not reachable" in response.get_json()["detail"]


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_502_saying_to_pull_it(make_settings, fake, stream):
    client = create_app(make_settings(ollama_model_general="tinyllama:1b")).test_client()
    response = chat(client, stream=stream)
    assert response.status_code == 502
    detail = response.get_json()["detail"]
    assert "tinyllama:1b" in detail and "ollama pull tinyllama:1b" in detail


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_500_is_502_with_its_message(client, fake, stream):
    fake.behave(status=500, error="llama runner process has terminated")
    response = chat(client, stream=stream)
    assert response.status_code == 502
    assert "llama runner process has terminated" in response.get_json()["detail"]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_refusing_the_request_is_400_with_its_message(client, fake, stream):
    fake.behave(status=400, error='json: cannot unmarshal string into "num_ctx"')
    response = chat(client, stream=stream)
    assert response.status_code == 400
    detail = response.get_json()["detail"]
    assert "refused the request" in detail and "cannot unmarshal" in detail


def test_message_too_long_for_the_context_stays_422_naming_the_field(make_settings, fake):
    client = create_app(make_settings(ctx_tokens=1000, max_tokens=200)).test_client()
    response = chat(client, message="x" * 3000)
    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == ["body", "message"]
    assert fake.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_busy_is_503_with_retry_after(client, fake, stream):
    fake.behave(status=503)
    response = chat(client, stream=stream)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "busy" in response.get_json()["detail"]


@pytest.mark.parametrize("stream", [False, True])
def test_unreadable_reply_is_502(client, fake, stream):
    fake.behave(tokens=["a", "b"], malformed_after=0)
    response = chat(client, stream=stream)
    assert response.status_code == 502
    assert "cannot read" in response.get_json()["detail"]


@pytest.mark.parametrize("stream", [False, True])
def test_error_line_before_any_text_is_502(client, fake, stream):
    fake.behave(tokens=["a"], error_after=0, error="out of memory")
    response = chat(client, stream=stream)
    assert response.status_code == 502
    assert "out of memory" in response.get_json()["detail"]


def test_non_stream_reply_slower_than_its_timeout_is_504(make_settings, fake):
    client = create_app(make_settings(reply_timeout_s=0.2)).test_client()
    fake.behave(first_token_delay=2)
    response = chat(client)
    assert response.status_code == 504
    assert "did not answer within 0.2 s" in response.get_json()["detail"]


def test_stream_without_a_first_token_in_time_is_504(make_settings, fake):
    client = create_app(make_settings(first_token_timeout_s=0.2)).test_client()
    fake.behave(first_token_delay=2)
    response = chat(client, stream=True)
    assert response.status_code == 504
    assert "no first token within 0.2 s" in response.get_json()["detail"]


def test_first_token_timeout_is_separate_from_the_idle_gap(make_settings, fake):
    settings = make_settings(first_token_timeout_s=5, stream_idle_timeout_s=0.3)
    fake.behave(tokens=["slow ", "start"], first_token_delay=0.6)
    response = chat(create_app(settings).test_client(), stream=True)
    assert response.get_data(as_text=True) == "slow start"


class ExplodingProvider:
    name = "exploding"

    def open_chat(self, messages, model, options, *, stream):
        raise RuntimeError("a bug")


def test_unhandled_bug_is_json_500_and_logged_with_traceback(make_settings, caplog):
    client = create_app(make_settings(), provider=ExplodingProvider()).test_client()
    with caplog.at_level(logging.ERROR, logger="piagent"):
        response = chat(client)
    assert response.status_code == 500
    assert "a bug" not in response.get_data(as_text=True)
    assert set(response.get_json()) == {"detail"}
    assert any(record.exc_info and "a bug" in str(record.exc_info[1]) for record in caplog.records)


def test_health_never_calls_ollama(client, fake):
    assert client.get("/health").get_json() == {"status": "ok"}
    assert fake.requests == []


def test_agents_lists_every_prompt_file(client):
    assert client.get("/agents").get_json() == {"agents": ["coder", "general", "shell"]}


def test_stream_body_closed_unread_releases_the_upstream(client, fake):
    fake.behave(tokens=["a", "b", "c"], token_delay=0.5)
    response = chat(client, stream=True)
    assert response.status_code == 200
    response.close()  # what a server does when the client is gone before any write
    generation = fake.generations[-1].wait_finished(timeout=5)
    assert generation.outcome == "client_closed"
