"""Run piagent under real WSGI servers on loopback, for tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.fake_ollama import FakeOllama

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"Listening at: http://([\d.]+:\d+)")


@dataclass
class RunningServer:
    """A server under test: its base URL and, for a subprocess, its PID and log."""

    url: str
    pid: int | None = None
    log_path: Path | None = None

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout: float, interval: float = 0.01, what: str = "condition"):
    """Poll `condition` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_in_threads(
    target: Callable[[Any], object], arguments: Iterable[Any], *, timeout: float | None = None
) -> None:
    """Call `target(argument)` in a thread of its own for each argument, then join them all.

    Each join waits up to `timeout`; a target that must not fail silently records its
    own failure (a thread's exception reaches no caller).
    """
    threads = [threading.Thread(target=target, args=(argument,)) for argument in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)


@contextmanager
def gunicorn(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    extra_args: tuple[str, ...] = (),
    app: str = "wsgi:app",
    repo: Path = REPO,
):
    """Start `gunicorn -c gunicorn.conf.py wsgi:app` on a free loopback port; stop it after.

    It runs in `log_dir`, so a developer's own .env in the repo does not leak in. `repo`
    is the checkout it serves (a benchmark may compare another one).
    """
    log_path = log_dir / f"gunicorn-{time.monotonic_ns()}.log"
    child_env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "BIND": "127.0.0.1:0",
        "ACCESS_LOG": "-",
        **env,
    }
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(repo / "gunicorn.conf.py"),
                "--pythonpath",
                str(repo),
                *extra_args,
                app,
            ],
            # A developer's own .env in the repo must not leak into tests; a test may
            # write one into `log_dir`.
            cwd=log_dir,
            env=child_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(url="", pid=process.pid, log_path=log_path)
    try:

        def listening() -> str | None:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{server.log()}")
            match = _LISTENING.search(server.log())
            return match.group(1) if match else None

        server.url = "http://" + wait_until(listening, 20, what="gunicorn to listen")
        wait_until(lambda: is_healthy(server.url), 20, what="the worker to boot")
        yield server
    finally:
        stop_process(process, timeout=15)


def piagent_under_gunicorn(
    fake: FakeOllama, log_dir: Path, *, extra_args: tuple[str, ...] = (), **env: str
) -> AbstractContextManager[RunningServer]:
    """gunicorn() serving piagent against `fake`; `env` adds variables, e.g. WEB_CONCURRENCY="2"."""
    return gunicorn({"OLLAMA_HOST": fake.url, **env}, log_dir, extra_args=extra_args)


def worker_pids(arbiter_pid: int) -> list[int]:
    """The gunicorn arbiter's children: its workers (all forked before any of them answers)."""
    children = Path(f"/proc/{arbiter_pid}/task/{arbiter_pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM the process if it still runs and wait; kill it if it outlasts `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def history_sent_after(
    server: RunningServer, fake: FakeOllama, conversation_id: str
) -> list[tuple[str, str]]:
    """Ask once more in the conversation; return the remembered turns piagent sent the fake."""
    fake.behave(tokens=["ok"])
    reply = requests.post(
        f"{server.url}/chat",
        json={"message": "again", "conversation_id": conversation_id},
        timeout=10,
    )
    assert reply.status_code == 200
    return fake.last_messages()[1:-1]


def is_healthy(url: str) -> bool:
    """Whether `url`/health answers 200 right now."""
    try:
        return requests.get(f"{url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def waitress_server(app) -> Iterator[RunningServer]:
    """Serve `app` with waitress (threads, no gevent) in this process."""
    from waitress.server import create_server
    from waitress.wasyncore import close_all, loop

    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    stopping = threading.Event()

    def serve() -> None:
        # server.run() with a way out: closing from another thread races the loop's
        # select() on the same sockets, and waking it through waitress's trigger pipe
        # fails when a racing close has already shut the pipe. So the loop itself looks
        # for the stop between polls and closes everything, keep-alive connections too.
        while not stopping.is_set():
            loop(timeout=0.05, use_poll=server.adj.asyncore_use_poll, map=server._map, count=1)
        close_all(server._map)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        host, port = server.socket.getsockname()[:2]
        yield RunningServer(url=f"http://{host}:{port}")
    finally:
        stopping.set()
        thread.join(timeout=5)
        server.task_dispatcher.shutdown()


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group is still running."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def access_fields(caplog, request_id: str) -> dict | None:
    """The fields of piagent's log line for one request, once it is written."""
    for record in caplog.records:
        fields = getattr(record, "fields", None)
        if record.name == "piagent.access" and fields and fields["request_id"] == request_id:
            return fields
    return None
