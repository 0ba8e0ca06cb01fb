"""Request ids and the one log line per request, under real gunicorn and in-process."""

from __future__ import annotations

import json
import logging
import re
from contextlib import ExitStack

import pytest
import requests
from flask import Response

from piagent.app import create_app
from tests.conftest import MODEL, gunicorn_for_module, shared_fake
from tests.http_raw import read_response, send_request
from tests.prom import scrape, value
from tests.redis_server import redis_server
from tests.servers import (
    access_fields,
    free_port,
    piagent_under_gunicorn,
    wait_until,
    waitress_server,
)

SECRET_MESSAGE = "my-bank-pin-is-4321"
SECRET_REPLY = "noted-4321"


server = gunicorn_for_module(LOG_FORMAT="json")
fake = shared_fake


def request_lines(server) -> list[dict]:
    """piagent's JSON request lines in the server log so far."""
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line["msg"] == "request"]


def line_for(server, request_id: str) -> dict:
    """The log line of one request (a stream's is written when its body ends)."""

    def find() -> dict | None:
        return next(
            (line for line in request_lines(server) if line["request_id"] == request_id), None
        )

    return wait_until(find, 5, what=f"the log line of {request_id}")


def test_client_request_id_is_sent_back_and_logged(server, fake):
    response = requests.get(f"{server.url}/health", headers={"X-Request-Id": "abc-123"}, timeout=5)
    assert response.headers["X-Request-Id"] == "abc-123"
    line = line_for(server, "abc-123")
    assert (line["method"], line["path"], line["status"]) == ("GET", "/health", 200)
    assert line["duration_ms"] >= 0
    assert line["ttft_ms"] is None and line["tokens"] is None and line["agent"] is None


@pytest.mark.parametrize("sent", [None, "", "has space", "x" * 129, "semi;colon", "é"])
def test_missing_or_invalid_request_id_is_replaced_by_a_new_one(server, fake, sent):
    headers = {} if sent is None else {"X-Request-Id": sent.encode().decode("latin-1")}
    response = requests.get(f"{server.url}/health", headers=headers, timeout=5)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/chat", {"message": ""}, 422),
        ("GET", "/nowhere", None, 404),
        ("GET", "/chat", None, 405),
        ("POST", "/chat", {"message": "hi", "agent": "nobody"}, 404),
    ],
)
def test_errors_carry_the_request_id_too(server, fake, method, path, body, status):
    response = requests.request(
        method,
        f"{server.url}{path}",
        json=body,
        headers={"X-Request-Id": f"err-{status}"},
        timeout=5,
    )
    assert response.status_code == status
    assert response.headers["X-Request-Id"] == f"err-{status}"
    assert line_for(server, f"err-{status}")["status"] == status


def test_stream_is_logged_once_it_ends_with_generation_fields(server, fake):
    fake.behave(tokens=["one ", "two"], prompt_eval_count=7, token_delay=0.05)
    response = requests.post(
        f"{server.url}/chat",
        json={
            "message": SECRET_MESSAGE,
            "stream": True,
            "agent": "shell",
            "conversation_id": "c-9",
        },
        headers={"X-Request-Id": "stream-1"},
        timeout=10,
    )
    assert response.headers["X-Request-Id"] == "stream-1"
    assert response.text == "one two"
    line = line_for(server, "stream-1")
    assert line["status"] == 200
    assert line["agent"] == "shell"
    assert line["model"] == MODEL
    assert line["conversation_id"] == "c-9"
    assert line["outcome"] == "complete"
    assert (line["tokens"], line["prompt_tokens"]) == (2, 7)
    assert line["tokens_per_s"] > 0
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert line["duration_ms"] >= 50  # the whole stream, not just until the headers


def test_message_text_is_never_logged_by_default(server, fake):
    fake.behave(tokens=[SECRET_REPLY])
    for stream in (False, True):
        response = requests.post(
            f"{server.url}/chat",
            json={"message": SECRET_MESSAGE, "stream": stream},
            headers={"X-Request-Id": f"secret-{stream}"},
            timeout=10,
        )
        assert SECRET_REPLY in response.text
        line_for(server, f"secret-{stream}")
    assert SECRET_MESSAGE not in server.log()
    assert SECRET_REPLY not in server.log()


def test_every_request_gets_exactly_one_line(server, fake):
    before = len(request_lines(server))
    for _ in range(3):
        requests.get(f"{server.url}/agents", timeout=5)
    requests.post(f"{server.url}/chat", json={"message": "hi", "stream": True}, timeout=5)
    wait_until(lambda: len(request_lines(server)) == before + 4, 5, what="four lines")
    assert len(request_lines(server)) == before + 4


def test_log_content_true_logs_message_and_reply(make_settings, fake, caplog):
    fake.behave(tokens=["noted-", "4321"])
    client = create_app(make_settings(log_content=True)).test_client()
    with caplog.at_level(logging.INFO, logger="piagent.access"):
        response = client.post("/chat", json={"message": SECRET_MESSAGE, "stream": True})
        assert response.get_data(as_text=True) == SECRET_REPLY
        response.close()  # the WSGI server's close(): the stream's line is written now
    (record,) = [r for r in caplog.records if r.name == "piagent.access"]
    assert record.fields["message"] == SECRET_MESSAGE
    assert record.fields["reply"] == SECRET_REPLY


def test_request_id_with_a_trailing_newline_is_replaced(client):
    # No client library sends one; a WSGI server that passed it on would hand it over so.
    response = client.get("/health", environ_base={"HTTP_X_REQUEST_ID": "abc-123\n"})
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])


# A model server's error text trying to end the line, forge one, and clear the terminal.
FORGED = "2025-01-01 00:00:00,000 [1] [ERROR] forged"
HOSTILE = f'boom\r\n{FORGED}\n{{"msg": "forged"}}\x1b[2J\x85\u2028end'


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_model_server_text_never_breaks_or_forges_a_log_line(module_fake, tmp_path, log_format):
    fake = module_fake
    fake.reset()
    with piagent_under_gunicorn(fake, tmp_path, LOG_FORMAT=log_format) as running:
        fake.behave(status=500, error=HOSTILE)
        reply = requests.post(f"{running.url}/chat", json={"message": "hi"}, timeout=10)
        assert reply.status_code == 502 and HOSTILE in reply.json()["detail"]
        # Cut after it started: the relay's own warning, in an NDJSON stream.
        fake.behave(tokens=["a", "b", "c"], error_after=2, error=HOSTILE)
        streamed = requests.post(
            f"{running.url}/chat",
            json={"message": "hi", "stream": True},
            headers={"Accept": "application/x-ndjson", "X-Request-Id": "last"},
            timeout=10,
        )
        last_event = json.loads(streamed.text.rstrip("\n").rpartition("\n")[2])
        assert last_event["type"] == "error" and HOSTILE in last_event["detail"]
        wait_until(lambda: "last" in running.log(), 5, what="the stream's log line")
        log = running.log()
    warnings = [line for line in log.splitlines() if "boom" in line]
    assert len(warnings) == 2  # the upstream failure and the stream cut short
    assert all("forged" in line for line in warnings)  # escaped, on the line it belongs to
    assert not any(line.startswith((FORGED, '{"msg": "forged"')) for line in log.splitlines())
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", log)


# --- the line and the metric are written however the response ends --------------------


def test_memory_failing_as_the_client_leaves_still_logs_and_counts_the_request(
    module_fake, tmp_path
):
    fake = module_fake
    fake.reset()
    port = free_port()
    for folder in ("gunicorn", "redis", "redis-again"):
        (tmp_path / folder).mkdir()
    env = {
        "MEMORY_BACKEND": "redis",
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "LOG_FORMAT": "json",
    }
    with (
        ExitStack() as redis,
        piagent_under_gunicorn(fake, tmp_path / "gunicorn", **env) as running,
    ):
        redis.enter_context(redis_server(tmp_path / "redis", port))
        fake.behave(tokens=[f"t{i} " for i in range(100)], token_delay=0.05)
        headers = {"X-Request-Id": "left-as-memory-failed"}
        sock = send_request(running.url, "/chat", {"message": "hi", "stream": True}, headers)
        assert read_response(sock, max_chunks=2).status == 200  # the conversation is held
        redis.close()  # Redis stops mid-stream
        sock.close()  # and the client leaves: keeping what it saw fails as the body closes

        line = line_for(running, "left-as-memory-failed")
        assert (line["status"], line["outcome"]) == (200, "cancelled")
        assert "its reply was not kept" in running.log()
        assert "Traceback" not in running.log()
        with redis_server(tmp_path / "redis-again", port):  # /metrics counts conversations
            parsed = scrape(running.url)
    assert value(parsed, "piagent_http_requests_total", route="/chat", method="POST", status="200")


def test_a_static_file_is_logged_and_counted_like_any_request(server, fake):
    # gunicorn's file wrapper (sent with sendfile) is a body Flask hands over as it is.
    rule = {"route": "/static/<path:filename>", "method": "GET", "status": "200"}
    before = value(scrape(server.url), "piagent_http_requests_total", **rule)
    response = requests.get(
        f"{server.url}/static/app.js", headers={"X-Request-Id": "asset"}, timeout=5
    )
    assert response.status_code == 200 and response.content
    line = line_for(server, "asset")
    assert (line["path"], line["status"]) == ("/static/app.js", 200)
    assert value(scrape(server.url), "piagent_http_requests_total", **rule) == before + 1


class FailingClose:
    """A streamed body whose close fails, as a store or a file may while a client leaves."""

    def __iter__(self):
        yield b"partial"

    def close(self) -> None:
        raise OSError("the disk went away")


def test_a_body_whose_close_fails_still_gets_its_line_and_metric(app, caplog):
    app.add_url_rule(
        "/failing-close", "failing_close", lambda: Response(FailingClose()), methods=["POST"]
    )
    with waitress_server(app) as served, caplog.at_level(logging.INFO, logger="piagent.access"):
        headers = {"X-Request-Id": "failing-close"}
        with send_request(served.url, "/failing-close", {}, headers) as sock:
            # waitress drops the connection when the close fails: the body may end cut.
            assert read_response(sock).body == b"partial"
        line = wait_until(lambda: access_fields(caplog, "failing-close"), 5, what="its line")
        parsed = scrape(served.url)
    assert line["status"] == 200
    rule = {"route": "/failing-close", "method": "POST", "status": "200"}
    assert value(parsed, "piagent_http_requests_total", **rule) == 1
