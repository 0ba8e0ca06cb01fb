"""The stream path under real gunicorn (gevent): cancellation, formats, heartbeats, load."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import pytest
import requests

from piagent.app import create_app
from piagent.http.relay import StreamInterrupted
from tests.conftest import MODEL, gunicorn_for_module, shared_fake
from tests.http_raw import read_head, read_response, send_request, sse_events
from tests.servers import history_sent_after, run_in_threads, wait_until

# A disconnect must reach Ollama within this many seconds (the bound).
CANCEL_BOUND_S = 0.05


server = gunicorn_for_module(
    SSE_HEARTBEAT_S="0.2",
    STREAM_IDLE_TIMEOUT_S="2",
    ACCESS_LOG="",
    # These tests load the relay, not admission control: room for every stream.
    MAX_CONCURRENT_GENERATIONS="256",
)
fake = shared_fake


def body(**fields) -> dict:
    return {"message": "hi", "conversation_id": uuid.uuid4().hex, **fields}


def close_and_time(sock) -> float:
    closed_at = time.monotonic()
    sock.close()
    return closed_at


# --- cancellation -------------------------------------------------------------------


def test_stream_client_leaving_mid_stream_closes_upstream_at_once(server, fake):
    request = body(stream=True)
    fake.behave(tokens=["a ", "b ", "c ", "d "], token_delay=3)  # a long pause after each
    sock = send_request(server.url, "/chat", request)
    seen = read_response(sock, max_chunks=1)
    assert seen.chunks == [b"a "]
    closed_at = close_and_time(sock)

    generation = fake.wait_for_client_close(timeout=5)
    assert generation.client_closed_at - closed_at < CANCEL_BOUND_S
    assert generation.tokens_sent == 1
    assert history_sent_after(server, fake, request["conversation_id"]) == [
        ("user", "hi"),
        ("assistant", "a "),
    ]


@pytest.mark.parametrize("accept", ["text/plain", "text/event-stream", "application/x-ndjson"])
def test_stream_client_leaving_before_first_token_closes_upstream_at_once(server, fake, accept):
    request = body(stream=True)
    fake.behave(first_token_delay=10)  # the model is still loading
    sock = send_request(server.url, "/chat", request, {"Accept": accept})
    fake.wait_for_generation_start(timeout=5)
    if accept == "text/event-stream":
        status, _ = read_head(sock.makefile("rb"))  # heartbeats have started the response
        assert status == 200
    closed_at = close_and_time(sock)

    generation = fake.wait_for_client_close(timeout=5)
    assert generation.client_closed_at - closed_at < CANCEL_BOUND_S
    assert generation.tokens_sent == 0
    assert history_sent_after(server, fake, request["conversation_id"]) == []


def test_non_stream_client_leaving_closes_upstream_at_once(server, fake):
    request = body()
    fake.behave(first_token_delay=10)
    sock = send_request(server.url, "/chat", request)
    fake.wait_for_generation_start(timeout=5)
    closed_at = close_and_time(sock)

    generation = fake.wait_for_client_close(timeout=5)
    assert generation.client_closed_at - closed_at < CANCEL_BOUND_S
    assert history_sent_after(server, fake, request["conversation_id"]) == []


def test_worker_keeps_serving_after_cancellations(server, fake):
    for _ in range(3):
        fake.behave(first_token_delay=10)
        sock = send_request(server.url, "/chat", body(stream=True))
        fake.wait_for_generation_start(timeout=5)
        sock.close()
        fake.wait_for_client_close(timeout=5)
    fake.behave(tokens=["still ", "here"])
    reply = requests.post(f"{server.url}/chat", json=body(), timeout=10)
    assert reply.json()["reply"] == "still here"


# --- SSE and NDJSON -------------------------------------------------------------------


def streamed_reply(server, accept: str, request: dict) -> requests.Response:
    return requests.post(f"{server.url}/chat", json=request, headers={"Accept": accept}, timeout=10)


def sse_reply(server) -> requests.Response:
    return streamed_reply(server, "text/event-stream", body(stream=True))


def structured_events(server, accept: str, request: dict) -> list[dict]:
    reply = streamed_reply(server, accept, request)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith(accept)
    if accept == "text/event-stream":
        return sse_events(reply.content)[0]
    return [json.loads(line) for line in reply.content.splitlines()]


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
def test_structured_stream_has_deltas_then_done(server, fake, accept):
    request = body(stream=True)
    fake.behave(tokens=["Hel", "lo", " 😀"], final_text="!", prompt_eval_count=21)
    events = structured_events(server, accept, request)
    assert events == [
        {"type": "delta", "text": "Hel"},
        {"type": "delta", "text": "lo"},
        {"type": "delta", "text": " 😀"},
        {"type": "delta", "text": "!"},
        {
            "type": "done",
            "conversation_id": request["conversation_id"],
            "model": MODEL,
            "done_reason": "stop",
            "usage": {"prompt_tokens": 21, "completion_tokens": 3},
        },
    ]


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
def test_done_reason_length_tells_the_answer_was_cut(server, fake, accept):
    fake.behave(tokens=["cut"], done_reason="length")
    events = structured_events(server, accept, body(stream=True))
    assert events[-1]["done_reason"] == "length"


@pytest.mark.parametrize("accept", ["text/event-stream", "application/x-ndjson"])
def test_failure_after_start_ends_with_an_error_event_and_saves_nothing(server, fake, accept):
    request = body(stream=True)
    fake.behave(tokens=["a", "b", "c"], error_after=2, error="GPU on fire")
    events = structured_events(server, accept, request)
    assert [e["type"] for e in events] == ["delta", "delta", "error"]
    assert "GPU on fire" in events[-1]["detail"]
    assert history_sent_after(server, fake, request["conversation_id"]) == []


def test_sse_sends_heartbeats_while_waiting_for_the_first_token(server, fake):
    fake.behave(tokens=["late"], first_token_delay=0.9)
    reply = sse_reply(server)
    raw = reply.content.decode()
    events, comments = sse_events(reply.content)
    assert len(comments) >= 2
    assert raw.index(":") < raw.index("data: ")  # heartbeats come before the first token
    assert [e["type"] for e in events] == ["delta", "done"]


def test_sse_failure_after_heartbeats_is_an_error_event(server, fake):
    fake.behave(first_token_delay=0.5, status=500, error="model crashed while loading")
    reply = sse_reply(server)
    events, comments = sse_events(reply.content)
    assert comments
    assert events == [{"type": "error", "detail": events[0]["detail"]}]
    assert "model crashed while loading" in events[0]["detail"]


def test_sse_failure_before_the_first_heartbeat_keeps_its_status(server, fake):
    fake.behave(status=404)  # quick: an unknown model
    reply = sse_reply(server)
    assert reply.status_code == 502
    assert "detail" in reply.json()


def test_plain_text_is_the_default_for_any_accept(server, fake):
    fake.behave(tokens=["x"])
    for accept in ("*/*", "text/*", "text/html,*/*;q=0.8"):
        reply = streamed_reply(server, accept, body(stream=True))
        assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert reply.text == "x"


def test_stream_cut_by_the_model_server_is_one_warning_never_a_traceback(server, fake):
    logged_before = len(server.log())
    fake.behave(tokens=["a", "b", "c", "d"], token_delay=0.02, error_after=2, error="GPU on fire")
    headers = {"X-Request-Id": "cut-by-upstream"}
    with send_request(server.url, "/chat", body(stream=True), headers) as sock:
        response = read_response(sock)
    assert response.status == 200 and response.body == b"ab"
    assert not response.complete  # no final chunk: the client can tell
    wait_until(lambda: "request_id=cut-by-upstream" in server.log(), 5, what="its log line")
    # gunicorn would log its traceback right after that line, in the same greenlet: a
    # request served afterwards is logged after it.
    requests.get(f"{server.url}/health", headers={"X-Request-Id": "after-cut"}, timeout=5)
    wait_until(lambda: "request_id=after-cut" in server.log(), 5, what="the next log line")
    logged = server.log()[logged_before:]
    warnings = [line for line in logged.splitlines() if "[WARNING]" in line]
    assert len(warnings) == 1 and "cut short after it started" in warnings[0]
    assert "GPU on fire" in warnings[0]
    assert "Traceback" not in logged and "Error handling request" not in logged


# --- total deadline (in-process: only a short limit makes it testable) ---------------


def test_stream_longer_than_its_total_limit_is_cut(make_settings, fake):
    app = create_app(make_settings(stream_total_timeout_s=0.4))
    fake.behave(tokens=[f"{i} " for i in range(20)], token_delay=0.1)
    response = app.test_client().post("/chat", json={"message": "hi", "stream": True})
    assert response.status_code == 200
    with pytest.raises(StreamInterrupted, match="did not finish the reply within"):
        response.get_data()


# --- load -------------------------------------------------------------------------------


def test_200_concurrent_streams_through_one_gevent_worker(server, fake):
    tokens = [f"w{i} " for i in range(10)]
    fake.behave(tokens=tokens, token_delay=0.05)
    results: list[bytes | Exception] = [b""] * 200
    start = threading.Barrier(200)

    def client(index: int) -> None:
        try:
            start.wait()
            sock = send_request(server.url, "/chat", body(stream=True))
            with sock:
                response = read_response(sock)
            assert response.complete
            results[index] = response.body
        except Exception as exc:  # recorded and asserted below
            results[index] = exc

    run_in_threads(client, range(200), timeout=60)
    expected = "".join(tokens).encode()
    failures = [r for r in results if r != expected]
    assert failures == []


# --- request bodies ---------------------------------------------------------------------


def test_oversized_body_is_refused_before_it_is_sent(server, fake):
    head = (
        "POST /chat HTTP/1.1\r\nHost: piagent\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10 * 1024 * 1024}\r\n\r\n"
    )
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b"{" + b" " * 1024)  # 1 KiB of the promised 10 MiB
        status, headers = read_head(sock.makefile("rb"))
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert fake.requests == []
