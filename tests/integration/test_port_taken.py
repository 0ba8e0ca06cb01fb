"""`make run` and `make demo` on a port another program holds: one line says so, names
BIND and how to pick another port, and nothing is left running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.components import require_demo_packages, require_program
from tests.servers import REPO, group_alive, wait_until

# The Makefile's set-up stamps: a test never reinstalls the shared virtualenv.
_NO_INSTALL = ("-o", ".venv/.runtime", "-o", ".venv/.demo", "-o", ".venv/.dev")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def make(target: str, port: int, tmp_path) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `make TARGET` with BIND on `port` until it stops by itself; its output and time."""
    make_program = require_program("make")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "BIND": f"127.0.0.1:{port}",
    }
    started = time.monotonic()
    process = subprocess.Popen(
        [make_program, *_NO_INSTALL, target],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=120)
        # The demo stops what it started (llama.cpp's server) before it exits.
        wait_until(lambda: not group_alive(process.pid), 10, what="the whole group to exit")
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    result = subprocess.CompletedProcess(process.args, process.returncode, output)
    return result, time.monotonic() - started


def the_line_saying_so(output: str, port: int) -> str:
    lines = [line for line in output.splitlines() if "taken" in line or "in use" in line]
    assert len(lines) == 1, output
    (line,) = lines
    assert f"port {port} of 127.0.0.1 is taken by another program (BIND=127.0.0.1:{port})" in line
    assert "BIND=127.0.0.1:0 make demo" in line
    assert "Traceback" not in output and "exited before it was ready" not in output, output
    return line


def test_make_run_says_in_one_line_that_the_port_is_taken(taken_port, tmp_path):
    result, seconds = make("run", taken_port, tmp_path)
    assert result.returncode != 0
    line = the_line_saying_so(result.stdout, taken_port)
    assert line.startswith("piagent: cannot start: ")
    assert seconds < 5  # no rounds of retries first


@pytest.mark.realmodel
def test_make_demo_says_in_one_line_that_the_port_is_taken(taken_port, tmp_path):
    require_demo_packages()
    result, _ = make("demo", taken_port, tmp_path)
    assert result.returncode != 0
    line = the_line_saying_so(result.stdout, taken_port)
    assert line.startswith("piagent demo: cannot start: ")
