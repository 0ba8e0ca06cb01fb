"""The streaming path across real sockets: under gunicorn (gevent) and under waitress (threads)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import requests

from piagent.app import create_app
from piagent.settings import Settings
from tests.conftest import shared_fake
from tests.http_raw import read_response, send_request
from tests.servers import (
    REPO,
    gunicorn,
    history_sent_after,
    piagent_under_gunicorn,
    waitress_server,
)

TOKENS = [f"t{i} " for i in range(40)]


@pytest.fixture(scope="module", params=["gunicorn", "waitress"])
def server(request, module_fake, tmp_path_factory):
    """piagent served for real, talking to the module's fake Ollama."""
    if request.param == "gunicorn":
        log_dir = tmp_path_factory.mktemp("gunicorn")
        with piagent_under_gunicorn(module_fake, log_dir, STREAM_IDLE_TIMEOUT_S="0.5") as running:
            yield running
    else:
        settings = Settings(ollama_host=module_fake.url, stream_idle_timeout_s=0.5)
        with waitress_server(create_app(settings)) as running:
            yield running


fake = shared_fake


def new_id() -> str:
    return uuid.uuid4().hex


def test_stream_relays_each_fragment_in_its_own_chunk(server, fake):
    fake.behave(tokens=TOKENS[:6], token_delay=0.03)
    sock = send_request(server.url, "/chat", {"message": "hi", "stream": True})
    with sock:
        response = read_response(sock)
    assert response.status == 200
    assert response.headers["x-accel-buffering"] == "no"
    assert response.chunks == [t.encode() for t in TOKENS[:6]]
    assert response.complete


def test_non_stream_chat(server, fake):
    fake.behave(tokens=["fine"])
    reply = requests.post(f"{server.url}/chat", json={"message": "hi"}, timeout=10)
    assert reply.status_code == 200
    assert reply.json()["reply"] == "fine"


def test_stream_closes_upstream_when_client_disconnects(server, fake):
    conversation_id = new_id()
    fake.behave(tokens=TOKENS, token_delay=0.02)
    sock = send_request(
        server.url, "/chat", {"message": "hi", "stream": True, "conversation_id": conversation_id}
    )
    with sock:
        seen = read_response(sock, max_chunks=3)
    assert seen.chunks == [t.encode() for t in TOKENS[:3]]

    generation = fake.generations[-1].wait_finished(timeout=5)
    assert generation.outcome == "client_closed"
    assert generation.tokens_sent < len(TOKENS)

    # The client saw a partial reply, so the partial reply is remembered.
    (user, assistant) = history_sent_after(server, fake, conversation_id)
    assert user == ("user", "hi")
    assert assistant[0] == "assistant"
    assert assistant[1].startswith(seen.body.decode())
    assert "".join(TOKENS).startswith(assistant[1]) and assistant[1] != "".join(TOKENS)


@pytest.mark.parametrize(
    "failure",
    [
        {"error_after": 3},
        {"drop_after": 3},
        {"reset_after": 3},
        {"malformed_after": 3},
        {"stall_after": 3},  # longer than STREAM_IDLE_TIMEOUT_S
    ],
    ids=lambda f: next(iter(f)),
)
def test_failure_after_start_ends_the_stream_unfinished_and_saves_nothing(server, fake, failure):
    conversation_id = new_id()
    fake.behave(tokens=TOKENS[:8], token_delay=0.05, **failure)
    sock = send_request(
        server.url, "/chat", {"message": "hi", "stream": True, "conversation_id": conversation_id}
    )
    with sock:
        response = read_response(sock)
    assert response.status == 200
    assert response.body == "".join(TOKENS[:3]).encode()
    assert not response.complete
    # piagent let go of the upstream: the fake ended it, or saw piagent close it.
    outcome = fake.generations[-1].wait_finished(timeout=5).outcome
    assert outcome in {"error", "dropped", "reset", "client_closed"}
    assert history_sent_after(server, fake, conversation_id) == []


def test_gunicorn_stops_at_start_on_a_bad_setting(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")]
        + ["--pythonpath", str(REPO), "-b", "127.0.0.1:0", "wsgi:app"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEMORY_MAX_TURNS": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("piagent:")]
    assert len(ours) == 1
    assert "MEMORY_MAX_TURNS" in ours[0] and "'lots'" in ours[0]
    assert "Traceback" not in result.stderr


def test_gunicorn_reads_dot_env_in_its_directory(tmp_path, module_fake):
    (tmp_path / ".env").write_text(f"OLLAMA_HOST={module_fake.url}\nMAX_TOKENS=33\n")
    module_fake.behave(tokens=["x"])
    with gunicorn({}, tmp_path) as running:
        assert requests.post(f"{running.url}/chat", json={"message": "hi"}, timeout=10).ok
    assert module_fake.requests[-1].json["options"]["num_predict"] == 33
