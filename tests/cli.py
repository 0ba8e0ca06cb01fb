"""Run the `piagent` command as a user would: `python -m piagent` in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.fake_ollama import FakeOllama, Generation
from tests.servers import REPO, RunningServer

PIAGENT = (sys.executable, "-m", "piagent")


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """A small environment: this checkout's piagent, a home of the test's own, UTF-8."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "LANG": "C.UTF-8",
        **extra,
    }


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    *,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run `piagent ARGS` to its end; stdin is `stdin` piped in, or nothing (/dev/null)."""
    return subprocess.run(
        [*PIAGENT, *args],
        env=dict(env),
        cwd=cwd,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def closed_by_client(fake: FakeOllama, server: RunningServer) -> Generation:
    """The generation whose connection piagent closed once the command stopped its reply.

    Waited for after the command has reacted, so a failure tells which side did not:
    the message then carries what piagent logged meanwhile.
    """
    try:
        return fake.wait_for_client_close(timeout=10)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; piagent's log:\n{server.log()}") from None
