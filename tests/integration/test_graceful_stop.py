"""SIGTERM to a real gunicorn: running streams finish within graceful_timeout, then are cut."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from tests.fake_ollama import FakeOllama
from tests.http_raw import read_response, send_request
from tests.servers import (
    REPO,
    RunningServer,
    is_healthy,
    piagent_under_gunicorn,
    stop_process,
    wait_until,
)

TOKENS = [f"t{i} " for i in range(6)]


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def start_stream(server, fake: FakeOllama) -> socket.socket:
    """Open a stream and return once its first token has left the fake."""
    sock = send_request(server.url, "/chat", {"message": "hi", "stream": True})
    generation = fake.wait_for_generation_start(timeout=5)
    wait_until(lambda: generation.tokens_sent >= 1, 5, what="the first token")
    return sock


def test_sigterm_lets_a_running_stream_finish_and_refuses_new_connections(fake, tmp_path):
    fake.behave(tokens=TOKENS, token_delay=0.5)  # about 3 s in all
    with piagent_under_gunicorn(fake, tmp_path) as server:
        sock = start_stream(server, fake)
        os.kill(server.pid, signal.SIGTERM)

        wait_until(lambda: refuses_connections(server.url), 5, what="new connections refused")
        with sock:
            response = read_response(sock)
        assert response.status == 200
        assert response.complete
        assert response.body == "".join(TOKENS).encode()
        assert fake.generations[0].wait_finished().outcome == "done"
        wait_until(lambda: "Shutting down: Master" in server.log(), 10, what="gunicorn to exit")


def test_stream_longer_than_graceful_timeout_is_cut_and_upstream_closed(fake, tmp_path):
    fake.behave(tokens=TOKENS, token_delay=5)  # 25 s: far longer than the grace period
    with piagent_under_gunicorn(fake, tmp_path, GRACEFUL_TIMEOUT="1") as server:
        sock = start_stream(server, fake)
        os.kill(server.pid, signal.SIGTERM)

        with sock:
            response = read_response(sock)
        assert response.status == 200
        assert not response.complete  # the client can tell the stream was cut
        assert response.body == TOKENS[0].encode()
        generation = fake.wait_for_client_close(timeout=10)
        assert generation.tokens_sent == 1


# What gunicorn itself says once Ctrl-C reaches it, and nothing else.
_CTRL_C_LINES = re.compile(
    r"\[[^]]+\] \[\d+\] \[INFO\] "
    r"(Handling signal: int|Worker exiting \(pid: \d+\)|Shutting down: Master)"
)


@pytest.mark.parametrize("streaming", [False, True], ids=["idle", "streaming"])
def test_ctrl_c_ends_gunicorn_with_its_normal_lines_only(fake, tmp_path, streaming):
    fake.behave(tokens=TOKENS, token_delay=0.5)
    log_path = tmp_path / "gunicorn.log"
    env = {"PATH": os.environ["PATH"], "BIND": "127.0.0.1:0", "OLLAMA_HOST": fake.url}
    with open(log_path, "wb") as log:
        # `make run` in a terminal: a session of its own, whose whole group gets Ctrl-C.
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")]
            + ["--pythonpath", str(REPO), "wsgi:app"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        found = wait_until(
            lambda: re.search(r"Listening at: (http://\S+) ", log_path.read_text()), 20
        )
        url = found.group(1)
        wait_until(lambda: is_healthy(url), 20, what="the worker to boot")
        sock = start_stream(RunningServer(url=url), fake) if streaming else None
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        stop_process(process, timeout=10)
    output = log_path.read_text()
    assert "Traceback" not in output and "SystemExit" not in output, output
    after = output.partition("Handling signal: int")[2].splitlines()[1:]
    assert after and all(_CTRL_C_LINES.fullmatch(line) for line in after), output
    if sock is not None:
        sock.close()
