"""The official openai SDK as a client of piagent's /v1, across a real socket (waitress)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.http_raw import read_response, send_request

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def sdk(served):
    # No retries: a failure must show at once, not after the SDK's back-off.
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_sdk_non_stream_completion(sdk, fake):
    fake.behave(tokens=["Hel", "lo", "!"], prompt_eval_count=8)
    completion = sdk.chat.completions.create(model="general", messages=MESSAGES)
    assert completion.choices[0].message.content == "Hello!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "general"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (8, 3)


def test_sdk_stream_with_usage(sdk, fake):
    fake.behave(tokens=["One", " two", " three"], prompt_eval_count=8)
    stream = sdk.chat.completions.create(
        model="shell", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "One two three"
    assert chunks[-1].usage.completion_tokens == 3
    assert chunks[-1].usage.total_tokens == 11


def test_sdk_lists_one_model_per_agent(sdk):
    assert [model.id for model in sdk.models.list()] == ["coder", "general", "shell"]
    assert sdk.models.retrieve("coder").owned_by == "piagent"


def test_sdk_raises_not_found_for_an_unknown_model(sdk, fake):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 404
    assert error.code == "model_not_found" and error.param == "model"
    assert "unknown agent 'gpt-4o'" in error.message and "general" in error.message


def test_sdk_raises_a_server_error_when_the_model_server_fails(sdk, fake):
    fake.behave(status=500, error="llama runner process has terminated")
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="general", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert "llama runner process has terminated" in caught.value.message


@pytest.fixture
def retrying_sdk(served):
    # The SDK's default: two retries of a 408, 409, 429 or 5xx, none of a 400.
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=2) as client:
        yield client


def test_sdk_does_not_retry_when_the_model_server_refuses_the_request(retrying_sdk, fake):
    fake.behave(status=400, error="the request exceeds the available context size")
    with pytest.raises(openai.BadRequestError) as caught:
        retrying_sdk.chat.completions.create(model="general", messages=MESSAGES)
    assert "exceeds the available context size" in caught.value.message
    assert len(fake.generations) == 1  # asked once, not three times


def test_sdk_message_too_long_is_context_length_exceeded_and_never_sent(retrying_sdk, fake):
    too_long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(openai.BadRequestError) as caught:
        retrying_sdk.chat.completions.create(model="general", messages=too_long)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    assert fake.requests == []


def test_failure_mid_stream_ends_with_an_error_event_and_no_done(served, fake):
    fake.behave(tokens=["a", "b", "c", "d"], error_after=2, error="out of memory")
    body = {"model": "general", "messages": MESSAGES, "stream": True}
    with send_request(served.url, "/v1/chat/completions", body) as sock:
        response = read_response(sock)
    assert response.status == 200
    frames = response.body.decode().split("\n\n")
    assert "data: [DONE]" not in frames
    error = json.loads(frames[-2].removeprefix("data: "))["error"]
    assert "out of memory" in error["message"] and error["type"] == "server_error"


def test_sdk_stream_fails_loudly_when_cut_mid_stream(sdk, fake):
    fake.behave(tokens=["a", "b", "c", "d"], error_after=2, error="out of memory")
    stream = sdk.chat.completions.create(model="general", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="out of memory"):
        list(stream)


def test_stream_closes_upstream_when_client_disconnects(served, fake):
    fake.behave(tokens=[f"t{i} " for i in range(40)], token_delay=0.02)
    body = {"model": "general", "messages": MESSAGES, "stream": True}
    with send_request(served.url, "/v1/chat/completions", body) as sock:
        seen = read_response(sock, max_chunks=3)
    assert b"t1 " in seen.body
    generation = fake.generations[-1].wait_finished(timeout=5)
    assert generation.outcome == "client_closed"
    assert generation.tokens_sent < 40
