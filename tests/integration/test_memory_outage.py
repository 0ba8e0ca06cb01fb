"""When the conversation memory goes away (Redis stopped, the SQLite file deleted), piagent
says so in a 503 that names it, keeps serving what needs no memory, and keeps nothing
half-saved."""

from __future__ import annotations

import json

import pytest

from piagent.app import create_app
from tests.redis_server import redis_server

NDJSON = {"Accept": "application/x-ndjson"}


def chat_requests(fake) -> int:
    return sum(1 for r in fake.requests if r.path == "/api/chat")


def test_redis_gone_is_a_503_that_names_it_and_never_reaches_the_model(
    make_settings, fake, tmp_path
):
    with redis_server(tmp_path) as redis:
        app = create_app(
            make_settings(memory_backend="redis", redis_url=redis.url, ready_cache_s=0)
        )
        client = app.test_client()
        assert (
            client.post("/chat", json={"message": "hi", "conversation_id": "c"}).status_code == 200
        )
        assert client.get("/ready").status_code == 200
    asked = chat_requests(fake)

    for response in (
        client.post("/chat", json={"message": "again", "conversation_id": "c"}),
        client.get("/conversations/c"),
        client.delete("/conversations/c"),
        client.get("/ready"),
    ):
        assert response.status_code == 503, (response.request.path, response.get_data())
        detail = response.get_json()["detail"]
        assert detail.startswith(f"the conversation memory at {redis.url} is not reachable")

    assert chat_requests(fake) == asked
    assert client.get("/health").status_code == 200
    assert client.get("/agents").status_code == 200
    completion = client.post(
        "/v1/chat/completions",
        json={"model": "general", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert completion.status_code == 200


def test_redis_gone_in_mid_stream_ends_it_with_an_error_not_a_done(make_settings, fake, tmp_path):
    fake.behave(tokens=["Hel", "lo"])
    with redis_server(tmp_path) as redis:
        app = create_app(
            make_settings(memory_backend="redis", redis_url=redis.url, ready_cache_s=0)
        )
        client = app.test_client()
        # The turn is claimed in Redis now; the body is produced only when it is read.
        response = client.post(
            "/chat",
            json={"message": "hi", "conversation_id": "c", "stream": True},
            headers=NDJSON,
            buffered=False,
        )
    events = [json.loads(line) for line in response.get_data().splitlines()]

    assert [e["type"] for e in events] == ["delta", "delta", "error"]
    assert "conversation memory" in events[-1]["detail"]


@pytest.mark.parametrize("replace", [False, True], ids=["deleted", "replaced"])
def test_not_ready_when_the_sqlite_file_was_deleted_or_replaced(make_settings, tmp_path, replace):
    path = tmp_path / "memory.sqlite3"
    client = create_app(
        make_settings(memory_backend="sqlite", memory_path=path, ready_cache_s=0)
    ).test_client()
    assert client.get("/ready").status_code == 200

    path.unlink()
    if replace:
        path.write_bytes(b"")
    response = client.get("/ready")

    assert response.status_code == 503
    assert response.get_json()["detail"].startswith(
        f"the conversation memory file {path} was deleted or replaced while piagent ran"
    )
