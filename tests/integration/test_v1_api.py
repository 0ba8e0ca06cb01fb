"""The OpenAI-compatible API in front: /v1/chat/completions and /v1/models, on the fake Ollama."""

from __future__ import annotations

import json

import pytest

from piagent.app import create_app

USER = {"role": "user", "content": "hi"}


def complete(client, **body):
    return client.post(
        "/v1/chat/completions", json={"model": "general", "messages": [USER], **body}
    )


def events(response) -> list:
    """The data of each server-sent event, JSON-decoded except the final [DONE]."""
    text = response.get_data(as_text=True)
    assert text.endswith("\n\n")
    frames = text.split("\n\n")[:-1]
    assert all(frame.startswith("data: ") for frame in frames)
    data = [frame.removeprefix("data: ") for frame in frames]
    return [d if d == "[DONE]" else json.loads(d) for d in data]


def system_prompt(client, agent: str) -> str:
    return client.application.extensions["piagent"].agents[agent].system_prompt


# --- answers ---------------------------------------------------------------------------


def test_non_stream_completion_has_openai_fields(client, fake):
    fake.behave(tokens=["Hel", "lo"], prompt_eval_count=12)
    response = complete(client)
    assert response.status_code == 200
    body = response.get_json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "general"
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
    ]
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}


def test_stream_is_server_sent_chunks_ending_in_done(client, fake):
    fake.behave(tokens=["One", " two", " é😀"], done_reason="length")
    response = complete(client, stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    *chunks, done = events(response)
    assert done == "[DONE]"
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert [d["content"] for d in deltas[:-1]] == ["One", " two", " é😀"]  # one per fragment
    assert all(d["role"] == "assistant" for d in deltas[:-1])
    assert deltas[-1] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c for c in chunks)


def test_stream_with_include_usage_ends_with_a_usage_chunk(client, fake):
    fake.behave(tokens=["a", "b"], prompt_eval_count=5)
    response = complete(client, stream=True, stream_options={"include_usage": True})
    *chunks, done = events(response)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def test_the_agent_named_by_model_supplies_the_system_prompt(client, fake):
    complete(client, model="shell")
    assert fake.last_messages() == [("system", system_prompt(client, "shell")), ("user", "hi")]


@pytest.mark.parametrize("role", ["system", "developer"])
def test_clients_own_system_message_replaces_the_agents(client, fake, role):
    history = [
        {"role": role, "content": "Talk like a pirate."},
        USER,
        {"role": "assistant", "content": "Arr."},
        {"role": "user", "content": [{"type": "text", "text": "more"}]},
    ]
    complete(client, model="shell", messages=history)
    assert fake.last_messages() == [
        ("system", "Talk like a pirate."),
        ("user", "hi"),
        ("assistant", "Arr."),
        ("user", "more"),
    ]


def test_requests_are_stateless(client, fake):
    complete(client)
    complete(client, messages=[{"role": "user", "content": "again"}])
    assert fake.last_messages()[1:] == [("user", "again")]
    assert len(client.application.extensions["piagent"].memory) == 0


def test_long_history_is_trimmed_to_the_context_budget_oldest_first(make_settings, fake):
    client = create_app(make_settings(ctx_tokens=1000, max_tokens=200)).test_client()
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} " + "x" * 600}
        for i in range(20)
    ] + [{"role": "user", "content": "newest"}]
    complete(client, messages=history)
    sent = fake.last_messages()
    assert sent[0][0] == "system" and sent[-1] == ("user", "newest")
    assert 2 < len(sent) < len(history)
    assert sent[1][0] == "user"
    kept = [content for _, content in sent[1:-1]]
    assert kept == [m["content"] for m in history[-1 - len(kept) : -1]]  # the newest ones


@pytest.mark.parametrize("stream", [False, True])
def test_message_too_long_for_the_context_alone_is_400_before_the_model_is_called(
    make_settings, fake, stream
):
    client = create_app(make_settings(ctx_tokens=1000, max_tokens=200)).test_client()
    history = [
        {"role": "user", "content": "an old question"},
        {"role": "assistant", "content": "ok"},
    ]
    huge = {"role": "user", "content": "x" * 6000}  # some 2000 tokens: more than the 800 left
    error = openai_error(complete(client, messages=[*history, huge], stream=stream), 400)
    assert (error["type"], error["param"]) == ("invalid_request_error", "messages")
    assert error["code"] == "context_length_exceeded"
    assert "CTX_TOKENS 1000" in error["message"] and "MAX_TOKENS 200" in error["message"]
    assert fake.requests == []


def test_a_lower_max_tokens_leaves_room_for_a_longer_message(make_settings, fake):
    client = create_app(make_settings(ctx_tokens=1000, max_tokens=200)).test_client()
    message = {"role": "user", "content": "x" * 2200}  # fits 950 tokens, not 800
    assert complete(client, messages=[message]).status_code == 400
    assert complete(client, messages=[message], max_tokens=50).status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_model_server_refusing_the_request_is_400_not_a_retried_502(client, fake, stream):
    fake.behave(status=400, error="invalid option: num_ctx")
    error = openai_error(complete(client, stream=stream), 400)
    assert error["type"] == "invalid_request_error"
    assert "invalid option: num_ctx" in error["message"]


def test_unknown_fields_are_ignored_and_never_forwarded(client, fake):
    response = complete(
        client, n=3, tools=[{"type": "function"}], logprobs=True, user="me", seed=4, top_p=0.1
    )
    assert response.status_code == 200
    body = fake.requests[-1].json
    assert set(body) == {"model", "messages", "stream", "options", "keep_alive"}
    assert set(body["options"]) == {"temperature", "num_ctx", "num_predict"}


def test_client_temperature_is_used_and_its_token_limit_only_lowers_the_agents(client, fake):
    complete(client, temperature=0.1, max_tokens=20)
    assert fake.requests[-1].json["options"]["temperature"] == 0.1
    assert fake.requests[-1].json["options"]["num_predict"] == 20
    complete(client, max_completion_tokens=5000)
    assert fake.requests[-1].json["options"]["num_predict"] == 200  # MAX_TOKENS


# --- models ----------------------------------------------------------------------------


def test_models_lists_one_model_per_agent(client, fake):
    body = client.get("/v1/models").get_json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["coder", "general", "shell"]
    assert all(m["object"] == "model" and m["owned_by"] == "piagent" for m in body["data"])
    assert client.get("/v1/models/shell").get_json()["id"] == "shell"
    assert fake.requests == []


# --- errors in OpenAI's shape, with the statuses of the rest of the API -----------------


def openai_error(response, status: int) -> dict:
    assert response.status_code == status
    assert response.content_type == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_unknown_model_is_404_naming_the_agents(client, fake):
    error = openai_error(complete(client, model="gpt-4o"), 404)
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert "gpt-4o" in error["message"] and "general" in error["message"]
    assert openai_error(client.get("/v1/models/gpt-4o"), 404)["code"] == "model_not_found"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [USER]}, "model"),
        ({"model": "general", "messages": []}, "messages"),
        ({"model": "general", "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        (
            {
                "model": "general",
                "messages": [{"role": "user", "content": [{"type": "image_url"}]}],
            },
            "messages.0.content",
        ),
        ({"model": "general", "messages": [USER], "stream": "yes"}, "stream"),
        ({"model": "general", "messages": [USER], "temperature": 3}, "temperature"),
        ({"model": "general", "messages": [USER], "max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_request_is_422_naming_the_param(client, fake, body, param):
    response = client.post("/v1/chat/completions", json=body)
    error = openai_error(response, 422)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and param in error["message"]
    assert fake.requests == []


def test_body_that_is_not_json_is_422(client):
    response = client.post("/v1/chat/completions", data=b"{", content_type="application/json")
    assert openai_error(response, 422)["type"] == "invalid_request_error"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failure_is_502_in_openai_shape(client, fake, stream):
    fake.behave(status=500, error="llama runner process has terminated")
    error = openai_error(complete(client, stream=stream), 502)
    assert error["type"] == "server_error"
    assert "llama runner process has terminated" in error["message"]


def test_busy_upstream_is_503_with_retry_after(client, fake):
    fake.behave(status=503)
    response = complete(client)
    assert openai_error(response, 503)["type"] == "server_error"
    assert int(response.headers["Retry-After"]) > 0


def test_unknown_route_and_method_under_v1_are_openai_shaped(client):
    assert "/v1/nowhere" in openai_error(client.get("/v1/nowhere"), 404)["message"]
    assert openai_error(client.get("/v1/chat/completions"), 405)
    assert openai_error(
        client.post("/v1/chat/completions", data=b"x" * 100_000, content_type="application/json"),
        413,
    )


def test_errors_outside_v1_keep_the_detail_shape(client):
    assert set(client.get("/nowhere").get_json()) == {"detail"}
    assert set(client.post("/chat", json={"agent": "pirate"}).get_json()) == {"detail"}
