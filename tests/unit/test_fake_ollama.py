"""The fake Ollama reproduces upstream's wire behaviour, and each scripted failure, faithfully."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fake_ollama import (
    GENERATION_FAILED,
    RUNNER_KILLED,
    SERVER_BUSY,
    Behaviour,
    FakeOllama,
)
from tests.http_raw import (
    RawResponse,
    encode_request,
    read_chunk,
    read_head,
    read_response,
    read_response_from,
)

MODEL = "qwen2.5:3b-instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
GENERATE = {"model": MODEL, "prompt": "hi"}
RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
DONE_KEYS = [
    "model",
    "created_at",
    "message",
    "done_reason",
    "done",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
]


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A session that ignores proxy settings from the environment."""
    with requests.Session() as session:
        session.trust_env = False
        yield session


def exchange(fake: FakeOllama, request: bytes) -> RawResponse:
    """Send one request on a fresh connection and read its response."""
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2) as sock:
        sock.sendall(request)
        return read_response(sock)


def lines_of(body: bytes) -> list[Any]:
    """Parse NDJSON."""
    return [json.loads(line) for line in body.splitlines()]


def test_root_version_and_unknown_routes(fake: FakeOllama, http: requests.Session) -> None:
    root = http.get(fake.url + "/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert root.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert http.get(fake.url + "/api/version").json() == {"version": "0.12.0"}
    missing = http.get(fake.url + "/api/chat")
    assert (missing.status_code, missing.text) == (404, "404 page not found")


def test_tags_lists_the_known_models(http: requests.Session) -> None:
    with FakeOllama(models={MODEL, "llama3.2:1b"}) as fake:
        models = http.get(fake.url + "/api/tags").json()["models"]
    assert [m["name"] for m in models] == ["llama3.2:1b", MODEL]
    entry = models[1]
    assert entry["model"] == MODEL and isinstance(entry["size"], int)
    assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"])
    assert entry["details"]["parameter_size"] == "3B" and entry["details"]["format"] == "gguf"


def test_chat_stream_sends_one_exact_json_line_per_token(
    fake: FakeOllama, http: requests.Session
) -> None:
    fake.behave(tokens=["Hel", "lo", "!"], prompt_eval_count=7)
    with http.post(fake.url + "/api/chat", json=CHAT, stream=True) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        assert resp.headers["Transfer-Encoding"] == "chunked"
        lines = [json.loads(line) for line in resp.iter_lines()]
    assert [line["message"] for line in lines[:3]] == [
        {"role": "assistant", "content": text} for text in ["Hel", "lo", "!"]
    ]
    assert all(list(line) == ["model", "created_at", "message", "done"] for line in lines[:3])
    assert all(line["model"] == MODEL and not line["done"] for line in lines[:3])
    done = lines[3]
    assert list(done) == DONE_KEYS
    assert done["message"] == {"role": "assistant", "content": ""}
    assert (done["done"], done["done_reason"]) == (True, "stop")
    assert (done["prompt_eval_count"], done["eval_count"]) == (7, 3)
    assert all(isinstance(done[k], int) and done[k] > 0 for k in DONE_KEYS[5:])
    assert all(RFC3339_NANO.fullmatch(line["created_at"]) for line in lines)
    generation = fake.generations[0].wait_finished()
    assert (generation.outcome, generation.tokens_sent, generation.status) == ("done", 3, 200)


def test_each_line_is_its_own_chunk_encoded_like_go(fake: FakeOllama) -> None:
    fake.behave(tokens=["<b>", "&", "é"])
    resp = exchange(fake, encode_request(fake.url, "/api/chat", CHAT))
    assert resp.complete and len(resp.chunks) == 4
    assert all(chunk.endswith(b"\n") and chunk.count(b"\n") == 1 for chunk in resp.chunks)
    # Compact separators, HTML-safe escapes, raw UTF-8: what Go's encoding/json writes.
    assert b'"content":"\\u003cb\\u003e"},"done":false}' in resp.chunks[0]
    assert b'"content":"\\u0026"' in resp.chunks[1]
    assert '"content":"é"'.encode() in resp.chunks[2]
    assert b", " not in resp.body


def test_stream_is_the_default_and_false_gives_one_object(
    fake: FakeOllama, http: requests.Session
) -> None:
    fake.behave(tokens=["a", "b"], final_text="c", done_reason="length")
    streamed = http.post(fake.url + "/api/chat", json=CHAT)
    assert streamed.headers["Content-Type"] == "application/x-ndjson"
    assert lines_of(streamed.content)[-1]["message"]["content"] == "c"

    whole = http.post(fake.url + "/api/chat", json={**CHAT, "stream": False})
    assert whole.headers["Content-Type"] == "application/json; charset=utf-8"
    body = whole.json()
    assert list(body) == DONE_KEYS
    assert body["message"] == {"role": "assistant", "content": "abc"}
    assert (body["done"], body["done_reason"], body["eval_count"]) == (True, "length", 2)
    assert [g.stream for g in fake.generations] == [True, False]


def test_generate_answers_with_response_fields(fake: FakeOllama, http: requests.Session) -> None:
    fake.behave(tokens=["x", "y"])
    lines = lines_of(http.post(fake.url + "/api/generate", json=GENERATE).content)
    assert [line["response"] for line in lines] == ["x", "y", ""]
    assert "message" not in lines[0] and lines[-1]["done"] and lines[-1]["context"]
    whole = http.post(fake.url + "/api/generate", json={**GENERATE, "stream": False}).json()
    assert (whole["response"], whole["done_reason"]) == ("xy", "stop")


def test_prompt_eval_count_is_counted_from_the_prompt_sent(
    fake: FakeOllama, http: requests.Session
) -> None:
    system = {"role": "system", "content": "x" * 40}
    chat = {
        "model": MODEL,
        "messages": [system, {"role": "user", "content": "é" * 5}],
        "stream": False,
    }

    def counted(**behaviour: Any) -> int | None:
        fake.behave(**behaviour)
        return http.post(fake.url + "/api/chat", json=chat).json().get("prompt_eval_count")

    # 3 open the reply; each message is 5 around its content, and a token per 4 bytes of it.
    assert counted() == 3 + (5 + 10) + (5 + 3)
    assert counted(bytes_per_token=2) == 3 + (5 + 20) + (5 + 5)
    assert counted(prompt_eval_count=7) == 7
    assert counted(prompt_eval_count=0) is None  # left out, as for a prompt all in cache
    fake.behave(tokens=["x", "y"])
    generate = {"model": MODEL, "system": "x" * 8, "prompt": "hi", "stream": False}
    whole = http.post(fake.url + "/api/generate", json=generate).json()
    assert whole["prompt_eval_count"] == 3 + (5 + 2) + (5 + 1)
    assert len(whole["context"]) == whole["prompt_eval_count"] + 2  # prompt, then the reply


def test_unknown_model_is_404_before_any_output(fake: FakeOllama, http: requests.Session) -> None:
    for path, payload in [("/api/chat", CHAT), ("/api/generate", GENERATE)]:
        resp = http.post(fake.url + path, json={**payload, "model": "nope:7b"})
        assert resp.status_code == 404
        assert resp.json() == {"error": 'model "nope:7b" not found, try pulling it first'}
    assert [g.outcome for g in fake.generations] == ["rejected", "rejected"]
    fake.models.add("tiny:latest")  # a bare name means its :latest tag
    assert http.post(fake.url + "/api/chat", json={**CHAT, "model": "tiny"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "missing request body"),
        (b'{"model": ', "unexpected EOF"),
        (b"nonsense", "invalid character 'n' looking for beginning of value"),
        (b"[1]", "json: cannot unmarshal array into Go value of type api.ChatRequest"),
        (b'{"messages": []}', "model is required"),
        (
            b'{"model": "m", "stream": "yes"}',
            "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool",
        ),
    ],
)
def test_invalid_bodies_are_400(
    fake: FakeOllama, http: requests.Session, body: bytes, error: str
) -> None:
    resp = http.post(fake.url + "/api/chat", data=body)
    assert (resp.status_code, resp.json()) == (400, {"error": error})


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [(500, None, RUNNER_KILLED), (503, None, SERVER_BUSY), (500, "boom", "boom")],
)
def test_status_errors_come_before_any_output(
    fake: FakeOllama, http: requests.Session, status: int, error: str | None, expected: str
) -> None:
    fake.behave(status=status, error=error)
    resp = http.post(fake.url + "/api/chat", json=CHAT)
    assert (resp.status_code, resp.json()) == (status, {"error": expected})
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    generation = fake.generations[0].wait_finished()
    assert (generation.outcome, generation.tokens_sent) == ("error", 0)


def test_error_after_streams_an_error_line_then_ends_the_body(fake: FakeOllama) -> None:
    fake.behave(tokens=["a", "b", "c"], error_after=2)
    resp = exchange(fake, encode_request(fake.url, "/api/chat", CHAT))
    assert resp.status == 200 and resp.complete
    lines = lines_of(resp.body)
    assert [line.get("message", {}).get("content") for line in lines[:2]] == ["a", "b"]
    assert lines[2:] == [{"error": GENERATION_FAILED}]


def test_error_after_zero_is_a_plain_http_error(fake: FakeOllama, http: requests.Session) -> None:
    fake.behave(error_after=0, error="model ran out of memory")
    resp = http.post(fake.url + "/api/chat", json=CHAT)
    assert (resp.status_code, resp.json()) == (500, {"error": "model ran out of memory"})
    whole = http.post(fake.url + "/api/chat", json={**CHAT, "stream": False})
    assert whole.status_code == 500


def test_drop_after_leaves_the_chunked_body_incomplete(
    fake: FakeOllama, http: requests.Session
) -> None:
    fake.behave(tokens=["a", "b", "c"], drop_after=2)
    resp = exchange(fake, encode_request(fake.url, "/api/chat", CHAT))
    assert resp.status == 200 and not resp.complete
    assert [line["message"]["content"] for line in lines_of(resp.body)] == ["a", "b"]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.post(fake.url + "/api/chat", json=CHAT)
    assert [g.wait_finished().outcome for g in fake.generations] == ["dropped", "dropped"]


def test_reset_after_resets_the_connection(fake: FakeOllama) -> None:
    fake.behave(tokens=["a", "b"], reset_after=1)
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2) as sock:
        sock.sendall(encode_request(fake.url, "/api/chat", CHAT))
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass
    assert fake.generations[0].wait_finished().outcome == "reset"


def test_stalled_stream_notices_the_client_closing_within_50ms(fake: FakeOllama) -> None:
    fake.behave(tokens=["a", "b", "c"], stall_after=1)
    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=2)
    sock.sendall(encode_request(fake.url, "/api/chat", CHAT))
    reader = sock.makefile("rb")
    read_head(reader)
    assert json.loads(read_chunk(reader))["message"]["content"] == "a"
    closed_at = time.monotonic()
    reader.close()
    sock.close()
    generation = fake.wait_for_client_close(timeout=1)
    assert generation.client_closed_at is not None
    assert generation.client_closed_at - closed_at < 0.05
    assert (generation.outcome, generation.tokens_sent) == ("client_closed", 1)


def test_closing_before_the_first_token_is_noticed(fake: FakeOllama) -> None:
    fake.behave(first_token_delay=5)
    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=2)
    sock.sendall(encode_request(fake.url, "/api/generate", GENERATE))
    started = fake.wait_for_generation_start()
    closed_at = time.monotonic()
    sock.close()
    generation = fake.wait_for_client_close(timeout=1)
    assert generation is started
    assert generation.client_closed_at is not None
    assert generation.client_closed_at - closed_at < 0.05
    assert generation.first_byte_at is None and generation.status is None


def test_stop_frees_stalled_and_idle_connections_at_once() -> None:
    fake = FakeOllama(models={MODEL}).start()
    fake.behave(stall_after=0)
    idle = socket.create_connection(("127.0.0.1", fake.port), timeout=2)
    stalled = socket.create_connection(("127.0.0.1", fake.port), timeout=2)
    stalled.sendall(encode_request(fake.url, "/api/chat", CHAT))
    generation = fake.wait_for_generation_start()
    began = time.monotonic()
    fake.stop()
    assert time.monotonic() - began < 0.5
    assert generation.wait_finished(0).outcome == "stopped"
    assert generation.client_closed_at is None
    assert stalled.recv(1) == b"" and idle.recv(1) == b""
    assert not [t for t in threading.enumerate() if t.name.startswith("fake-ollama")]
    idle.close()
    stalled.close()


def test_malformed_after_inserts_a_non_json_line(fake: FakeOllama) -> None:
    fake.behave(tokens=["a", "b"], malformed_after=1, malformed_line="{oops")
    resp = exchange(fake, encode_request(fake.url, "/api/chat", CHAT))
    raw_lines = resp.body.splitlines()
    assert raw_lines[1] == b"{oops" and len(raw_lines) == 4 and resp.complete
    assert json.loads(raw_lines[2])["message"]["content"] == "b"


def test_split_lines_cuts_each_line_across_two_chunks(
    fake: FakeOllama, http: requests.Session
) -> None:
    fake.behave(tokens=["héllo", "👋"], split_lines=True, split_delay=0.002)
    resp = exchange(fake, encode_request(fake.url, "/api/chat", CHAT))
    assert resp.complete and len(resp.chunks) == 6
    assert not any(chunk.endswith(b"\n") for chunk in resp.chunks[::2])
    with http.post(fake.url + "/api/chat", json=CHAT, stream=True) as streamed:
        contents = [json.loads(line)["message"]["content"] for line in streamed.iter_lines()]
    assert contents == ["héllo", "👋", ""]


def test_pack_lines_writes_every_line_in_one_chunk(fake: FakeOllama) -> None:
    fake.behave(tokens=["a", "b", "c"], pack_lines=True)
    resp = exchange(fake, encode_request(fake.url, "/api/chat", CHAT))
    assert resp.complete and len(resp.chunks) == 1
    assert len(lines_of(resp.chunks[0])) == 4
    assert fake.generations[0].wait_finished().tokens_sent == 3


def test_no_trailing_newline_on_the_last_line(fake: FakeOllama, http: requests.Session) -> None:
    fake.behave(no_trailing_newline=True)
    resp = exchange(fake, encode_request(fake.url, "/api/chat", CHAT))
    assert resp.complete and resp.body.endswith(b"}") and resp.body.count(b"\n") == 3
    assert json.loads(list(http.post(fake.url + "/api/chat", json=CHAT).iter_lines())[-1])["done"]


def test_delays_hold_back_headers_and_pace_lines(fake: FakeOllama, http: requests.Session) -> None:
    fake.behave(tokens=["a", "b"], first_token_delay=0.1, token_delay=0.05)
    sent = time.monotonic()
    with http.post(fake.url + "/api/chat", json=CHAT, stream=True) as resp:
        headers_at = time.monotonic()
        arrivals = [time.monotonic() for _ in resp.iter_lines(chunk_size=1)]
    assert headers_at - sent >= 0.1  # Ollama sends no headers before the first token
    # Lower bounds only: a busy client may read late, but never before a line was sent.
    assert [t - sent > 0.099 + 0.05 * i for i, t in enumerate(arrivals)] == [True] * 3
    generation = fake.generations[0].wait_finished()
    assert generation.first_byte_at is not None
    assert generation.first_byte_at - generation.started_at >= 0.1


def test_requests_are_recorded(fake: FakeOllama, http: requests.Session) -> None:
    payload = {**CHAT, "options": {"temperature": 0}, "keep_alive": "5m"}
    http.post(fake.url + "/api/chat?x=1", json=payload, headers={"X-Trace": "t1"})
    http.get(fake.url + "/api/tags")
    first, second = fake.requests
    assert (first.method, first.path, first.json) == ("POST", "/api/chat?x=1", payload)
    assert first.headers["x-trace"] == "t1" and first.body == json.dumps(payload).encode()
    assert (second.method, second.path, second.json) == ("GET", "/api/tags", None)
    assert fake.generations[0].request is first


def test_keep_alive_serves_several_requests_on_one_connection(fake: FakeOllama) -> None:
    fake.behave(tokens=["a"])
    chunked = (
        b'7\r\n{"model\r\n'
        + b"%x\r\n" % len(b'":"qwen2.5:3b-instruct"}')
        + (b'":"qwen2.5:3b-instruct"}\r\n0\r\n\r\n')
    )
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2) as sock:
        reader = sock.makefile("rb")
        sock.sendall(encode_request(fake.url, "/api/chat", CHAT))
        assert read_response_from(reader).complete
        sock.sendall(encode_request(fake.url, "/api/chat", {**CHAT, "stream": False}))
        assert read_response_from(reader).body.startswith(b'{"model":')
        sock.sendall(b"POST /api/generate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        assert json.loads(read_response_from(reader).body)["done_reason"] == "load"
        reader.close()
    assert fake.requests[2].json == {"model": MODEL}


def test_behave_once_takes_precedence_one_request_each(
    fake: FakeOllama, http: requests.Session
) -> None:
    fake.behave(tokens=["ok"])
    fake.behave_once(status=503)
    fake.behave_once(Behaviour(tokens=["x"]), final_text="!")
    statuses = [http.post(fake.url + "/api/chat", json=CHAT) for _ in range(3)]
    assert [r.status_code for r in statuses] == [503, 200, 200]
    assert [lines_of(r.content)[0]["message"]["content"] for r in statuses[1:]] == ["x", "ok"]
    assert lines_of(statuses[1].content)[-1]["message"]["content"] == "!"


def test_reset_forgets_everything_including_closes_noticed_later(
    fake: FakeOllama, http: requests.Session
) -> None:
    fake.behave(stall_after=0)
    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=2)
    sock.sendall(encode_request(fake.url, "/api/chat", CHAT))
    stale = fake.wait_for_generation_start()
    fake.behave_once(status=503)
    fake.reset()
    sock.close()
    assert stale.wait_finished().outcome == "client_closed"
    assert fake.requests == [] and fake.generations == []
    with pytest.raises(TimeoutError):
        fake.wait_for_client_close(timeout=0.05)
    assert http.post(fake.url + "/api/chat", json=CHAT).status_code == 200  # default behaviour


def test_nothing_to_generate_loads_or_unloads(fake: FakeOllama, http: requests.Session) -> None:
    load = http.post(fake.url + "/api/chat", json={"model": MODEL, "messages": []}).json()
    assert load == {
        "model": MODEL,
        "created_at": load["created_at"],
        "message": {"role": "assistant", "content": ""},
        "done_reason": "load",
        "done": True,
    }
    unload = http.post(fake.url + "/api/generate", json={"model": MODEL, "keep_alive": 0}).json()
    assert (unload["response"], unload["done_reason"]) == ("", "unload")


@pytest.mark.parametrize(
    "fields",
    [
        {"tokens": "hello"},
        {"drop_after": 4},
        {"status": 500, "stall_after": 1},
        {"split_lines": True, "pack_lines": True},
        {"status": 200},
        {"prompt_eval_count": -1},
        {"bytes_per_token": 0},
    ],
)
def test_behaviour_rejects_impossible_scripts(fields: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        Behaviour(**fields)
