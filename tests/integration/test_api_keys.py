"""API keys on every route but /health and /ready; one conversation space per key."""

from __future__ import annotations

import json
import re
import socket

import openai
import pytest

from piagent.app import create_app
from piagent.http.auth import PUBLIC_ENDPOINTS
from tests.http_raw import read_response
from tests.servers import gunicorn

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def app(make_settings):
    return create_app(make_settings(api_keys=f"{KEY_A},{KEY_B}"))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def protected_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route that needs a key, read from the app itself."""
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        routes.append((method, re.sub(r"<[^>]+>", "x", rule.rule)))
    return sorted(routes) + [("GET", "/no-such-route")]


def call(client, method: str, path: str, headers: dict[str, str]):
    return client.open(path, method=method, json={"message": "hi"}, headers=headers)


WRONG = {
    "missing": {},
    "wrong key": bearer("key-c-0123456789abcdef"),
    "prefix of a key": bearer(KEY_A[:-1]),
    "key plus more": bearer(KEY_A + "x"),
    "another scheme": {"Authorization": f"Basic {KEY_A}"},
    "scheme only": {"Authorization": "Bearer"},
    "non-ASCII key": {"Authorization": "Bearer ключ-ключ-ключ-ключ".encode().decode("latin-1")},
}


@pytest.mark.parametrize("case", WRONG)
def test_every_protected_route_refuses_without_the_right_key(app, fake, case):
    client = app.test_client()
    routes = protected_routes(app)
    assert ("POST", "/chat") in routes and ("GET", "/metrics") in routes
    for method, path in routes:
        response = call(client, method, path, WRONG[case])
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        body = response.get_json()
        if path.startswith("/v1/"):  # OpenAI's error shape there
            assert body["error"]["type"] == "authentication_error"
            assert body["error"]["message"]
        else:
            assert body["detail"]
    assert fake.requests == []


def test_every_protected_route_accepts_the_right_key(app, fake):
    client = app.test_client()
    for key in (KEY_A, KEY_B):
        for method, path in protected_routes(app)[:-1]:
            response = call(client, method, path, bearer(key))
            assert response.status_code != 401, (method, path)
        assert client.post("/chat", json={"message": "hi"}, headers=bearer(key)).status_code == 200


def test_health_and_ready_need_no_key(app, fake):
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_a_conversation_is_invisible_to_another_key(app, fake):
    client = app.test_client()
    fake.behave(tokens=["A's answer"])
    client.post(
        "/chat", json={"message": "A's secret", "conversation_id": "shared"}, headers=bearer(KEY_A)
    )

    client.post(
        "/chat", json={"message": "B asks", "conversation_id": "shared"}, headers=bearer(KEY_B)
    )
    seen_by_b = [m["content"] for m in fake.requests[-1].json["messages"][1:]]
    assert seen_by_b == ["B asks"]

    client.post(
        "/chat", json={"message": "A again", "conversation_id": "shared"}, headers=bearer(KEY_A)
    )
    seen_by_a = [m["content"] for m in fake.requests[-1].json["messages"][1:]]
    assert seen_by_a == ["A's secret", "A's answer", "A again"]


def test_another_key_can_neither_read_nor_delete_a_conversation(app, fake):
    client = app.test_client()
    fake.behave(tokens=["A's answer"])
    client.post(
        "/chat", json={"message": "A's secret", "conversation_id": "mine"}, headers=bearer(KEY_A)
    )

    assert client.get("/conversations/mine", headers=bearer(KEY_B)).status_code == 404
    assert client.delete("/conversations/mine", headers=bearer(KEY_B)).status_code == 404

    shown = client.get("/conversations/mine", headers=bearer(KEY_A))
    assert [m["content"] for m in shown.json["messages"]] == ["A's secret", "A's answer"]
    assert client.delete("/conversations/mine", headers=bearer(KEY_A)).status_code == 204
    assert client.get("/conversations/mine", headers=bearer(KEY_A)).status_code == 404


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    """gunicorn with one key; /agents never reaches Ollama, so none is needed."""
    with gunicorn({"API_KEYS": KEY_A}, tmp_path_factory.mktemp("gunicorn")) as server:
        yield server


def get_with_raw_key(url: str, path: str, key: bytes):
    """GET with the key's bytes sent as they are, whatever their encoding."""
    host = url.removeprefix("http://")
    name, port = host.split(":")
    with socket.create_connection((name, int(port)), timeout=10) as sock:
        head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
        sock.sendall(head + b"Authorization: Bearer " + key + b"\r\n\r\n")
        return read_response(sock)


@pytest.mark.parametrize(
    ("key", "status"),
    [("ключ-ключ-ключ".encode(), 401), (b"\xff\xfe\x80", 401), (KEY_A.encode(), 200)],
)
def test_under_gunicorn_raw_key_bytes_are_compared_not_decoded(keyed_server, key, status):
    response = get_with_raw_key(keyed_server.url, "/agents", key)
    assert response.status == status
    assert json.loads(response.body)  # JSON either way, never an HTML 500


def test_openai_sdk_sends_its_api_key_as_the_bearer_key(served, fake):
    url = f"{served.url}/v1"
    with openai.OpenAI(base_url=url, api_key=KEY_A, max_retries=0) as sdk:
        completion = sdk.chat.completions.create(model="general", messages=MESSAGES)
        assert completion.choices[0].message.content == "Hello!"
    with openai.OpenAI(base_url=url, api_key="wrong", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            sdk.models.list()


def test_a_busy_conversation_is_named_as_the_client_named_it(app, fake):
    client = app.test_client()
    fake.behave(tokens=["a", "b"])
    first = client.post(
        "/chat",
        json={"message": "q", "conversation_id": "busy-one", "stream": True},
        headers=bearer(KEY_A),
    )  # its body is not read yet, so the conversation is still being answered
    again = client.post(
        "/chat", json={"message": "q2", "conversation_id": "busy-one"}, headers=bearer(KEY_A)
    )
    first.close()
    assert again.status_code == 409
    detail = again.get_json()["detail"]
    assert "'busy-one'" in detail and "/" not in detail.split("'")[1]
