"""Admission control under a threaded WSGI server (waitress), and with SSE streams."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests

from piagent.app import create_app
from tests.http_raw import read_response, send_request, sse_events
from tests.prom import scrape, value
from tests.servers import RunningServer, waitress_server


@contextmanager
def place_taken(settings, fake, **body) -> Iterator[RunningServer]:
    """piagent under waitress with a first chat generating; that chat must end well after."""
    with (
        waitress_server(create_app(settings)) as server,
        send_request(server.url, "/chat", {"message": "hi", **body}) as holder,
    ):
        fake.wait_for_generation_start(timeout=5)
        yield server
        assert read_response(holder).status == 200


def sse_chat(server: RunningServer) -> requests.Response:
    return requests.post(
        f"{server.url}/chat",
        json={"message": "hi", "stream": True},
        headers={"Accept": "text/event-stream"},
        timeout=10,
    )


def test_second_message_on_a_busy_conversation_is_409_not_queued(make_settings, fake):
    fake.behave_once(tokens=["first answer"], first_token_delay=0.5)
    with place_taken(make_settings(), fake, message="first", conversation_id="c") as server:
        second = requests.post(
            f"{server.url}/chat", json={"message": "second", "conversation_id": "c"}, timeout=10
        )
        assert second.status_code == 409
        assert value(scrape(server.url), "piagent_queue_depth") == 0
    assert len(fake.generations) == 1


def test_sse_queued_past_the_timeout_ends_with_a_busy_event(make_settings, fake):
    fake.behave_once(first_token_delay=1.5)
    settings = make_settings(queue_timeout_s=0.5, sse_heartbeat_s=0.1)
    with place_taken(settings, fake) as server:
        reply = sse_chat(server)
        events, comments = sse_events(reply.content)
        assert reply.status_code == 200  # heartbeats started the response while it waited
        assert comments
        assert [e["type"] for e in events] == ["error"]
        assert "QUEUE_TIMEOUT_S" in events[0]["detail"]
    assert len(fake.generations) == 1


def test_sse_refused_at_once_keeps_its_503(make_settings, fake):
    fake.behave_once(first_token_delay=1)
    with place_taken(make_settings(queue_max=0), fake) as server:
        reply = sse_chat(server)
        assert reply.status_code == 503
        assert reply.headers["Retry-After"].isdigit()
        assert reply.json()["detail"].startswith("piagent is busy")


def test_openai_api_waits_in_the_same_queue(make_settings, fake):
    fake.behave_once(first_token_delay=1)
    with place_taken(make_settings(queue_max=0), fake) as server:
        reply = requests.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "general", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert reply.status_code == 503
        assert reply.headers["Retry-After"].isdigit()
        assert reply.json()["error"]["message"].startswith("piagent is busy")
    assert len(fake.generations) == 1
