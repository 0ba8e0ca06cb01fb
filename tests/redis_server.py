"""Run a real redis-server in the foreground on loopback, keeping nothing on disk."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.components import require_program
from tests.servers import RunningServer, free_port, stop_process, wait_until


@contextmanager
def redis_server(root: Path, port: int | None = None) -> Iterator[RunningServer]:
    """A redis-server on `port` (a free loopback one by default): redis://127.0.0.1:PORT/0."""
    binary = require_program("redis-server", "/usr/bin/redis-server")
    port = port or free_port()
    log_path = root / "redis.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                *("--bind", "127.0.0.1", "--port", str(port)),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                *("--dir", str(root)),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(url=f"redis://127.0.0.1:{port}/0", pid=process.pid, log_path=log_path)
    try:

        def answering() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{server.log()}")
            return _pong(port)

        wait_until(answering, 10, what="redis-server to answer")
        yield server
    finally:
        stop_process(process, timeout=10)


def _pong(port: int) -> bool:
    """Whether Redis answers PING (it refuses commands while still loading)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
