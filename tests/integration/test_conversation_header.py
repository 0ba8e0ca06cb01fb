"""POST /chat names its conversation in an X-Conversation-Id header as well as in the body."""

from __future__ import annotations

import pytest

HEADER = "X-Conversation-Id"


def chat(client, headers=None, **body):
    return client.post("/chat", json={"message": "hi", **body}, headers=headers or {})


@pytest.mark.parametrize("stream", [False, True])
def test_the_header_alone_continues_the_conversation(client, fake, stream):
    fake.behave(tokens=["first answer"])
    chat(client, message="first", conversation_id="by-header")
    fake.behave(tokens=["second answer"])
    response = chat(client, {HEADER: "by-header"}, message="second", stream=stream)
    assert response.status_code == 200
    assert response.headers[HEADER] == "by-header"
    response.get_data()
    assert fake.last_messages()[1:] == [
        ("user", "first"),
        ("assistant", "first answer"),
        ("user", "second"),
    ]


def test_the_same_id_in_header_and_body_is_accepted(client, fake):
    response = chat(client, {HEADER: "same"}, conversation_id="same")
    assert response.status_code == 200
    assert response.get_json()["conversation_id"] == "same"


def test_header_and_body_naming_different_conversations_is_422_naming_the_header(client, fake):
    response = chat(client, {HEADER: "one"}, conversation_id="two")
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert error["loc"] == ["header", HEADER]
    assert "'one'" in error["msg"] and "'two'" in error["msg"]
    assert fake.requests == []


@pytest.mark.parametrize("value", ["", "has space", "x" * 129, "slash/inside", "é"])
def test_a_header_breaking_the_id_rules_is_422_naming_it(client, fake, value):
    response = chat(client, {HEADER: value})
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert error["loc"] == ["header", HEADER]
    assert fake.requests == []


def test_without_either_a_new_conversation_is_made(client, fake):
    first = chat(client).get_json()["conversation_id"]
    second = chat(client).get_json()["conversation_id"]
    assert first != second


def test_the_openai_api_ignores_the_header(client, fake):
    fake.behave(tokens=["ok"])
    body = {"model": "general", "messages": [{"role": "user", "content": "hi"}]}
    chat(client, message="remembered", conversation_id="not-for-v1")
    response = client.post("/v1/chat/completions", json=body, headers={HEADER: "not-for-v1"})
    assert response.status_code == 200
    assert HEADER not in response.headers
    assert fake.last_messages()[1:] == [("user", "hi")]  # /v1 keeps no conversations


def test_a_balancers_new_id_names_a_conversation_the_request_does_not(client, fake):
    new = {"X-New-Conversation-Id": "from-nginx"}
    assert chat(client, new).get_json()["conversation_id"] == "from-nginx"
    named = chat(client, new | {HEADER: "by-header"}).get_json()["conversation_id"]
    in_body = chat(client, new, conversation_id="in-body").get_json()["conversation_id"]
    assert (named, in_body) == ("by-header", "in-body")


def test_a_balancers_new_id_breaking_the_rules_is_422_naming_it(client, fake):
    response = chat(client, {"X-New-Conversation-Id": "no spaces allowed"})
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert error["loc"] == ["header", "X-New-Conversation-Id"]
