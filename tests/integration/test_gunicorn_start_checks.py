"""Settings that cannot work together stop a real gunicorn at start, with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REPO

# gunicorn's master exits with the code of a worker that could not load the app.
APP_LOAD_ERROR = 4


def start_gunicorn(tmp_path: Path, env: dict[str, str]) -> tuple[int, list[str], str]:
    """Run gunicorn until it stops by itself; its exit code, our lines, and all it said."""
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py")]
        + ["--pythonpath", str(REPO), "-b", "127.0.0.1:0", "wsgi:app"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    ours = [line for line in result.stderr.splitlines() if line.startswith("piagent:")]
    return result.returncode, ours, result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"MAX_TOKENS": "4096"},
            "piagent: cannot start: MAX_TOKENS=4096 must be below CTX_TOKENS=2048",
        ),
        ({"REPLY_TIMEOUT_S": "inf"}, "piagent: cannot start: REPLY_TIMEOUT_S='inf' is invalid"),
        # Workers that may share memory, but a setting none of them can read: said once.
        (
            {"WEB_CONCURRENCY": "3", "ENABLE_MEMORY": "false", "QUEUE_MAX": "lots"},
            "piagent: cannot start: QUEUE_MAX='lots' is invalid",
        ),
        (
            {"CTX_TOKENS": "300", "MAX_TOKENS": "250"},
            "piagent: cannot start: agent 'shell' does not fit CTX_TOKENS=300",
        ),
        (
            {"MEMORY_BACKEND": "sqlite", "MEMORY_PATH": ":memory:"},
            "piagent: cannot start: MEMORY_PATH=':memory:' is invalid: it would give each worker",
        ),
    ],
    ids=["max-tokens", "infinite-timeout", "several-workers", "agent-prompt", "memory-path"],
)
def test_gunicorn_stops_with_one_line_and_the_app_load_error_code(tmp_path, env, expected):
    code, ours, stderr = start_gunicorn(tmp_path, env)
    assert code == APP_LOAD_ERROR
    assert len(ours) == 1 and ours[0].startswith(expected), stderr
    assert "Traceback" not in stderr
