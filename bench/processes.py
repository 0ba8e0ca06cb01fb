"""The processes the benchmarks measure: piagent under gunicorn, and what /proc says of them."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import REPO, RunningServer, gunicorn  # noqa: E402

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# bench/floor_app.py as gunicorn loads it: the bare Flask app piagent is measured against.
FLOOR_APP = "bench.floor_app:app"


@contextmanager
def piagent(
    fake_url: str,
    app: str = "wsgi:app",
    env: Mapping[str, str] | None = None,
    repo: Path = REPO,
) -> Iterator[tuple[RunningServer, int]]:
    """piagent (checkout `repo`) under gunicorn, talking to `fake_url`; yields it and its worker."""
    with tempfile.TemporaryDirectory() as tmp:
        # Admission control would refuse most of the load: this measures the relay.
        env = {
            "OLLAMA_HOST": fake_url,
            "ACCESS_LOG": "",
            "MAX_CONCURRENT_GENERATIONS": "5000",
            **(env or {}),
        }
        with gunicorn(env, Path(tmp), app=app, repo=repo) as server:
            yield server, children(server.pid)[0]


def children(pid: int) -> list[int]:
    """The PIDs of a process's children (a gunicorn or nginx master's workers)."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far, user and system, all its threads."""
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime


def pin(pid: int, cpu: int) -> bool:
    """Keep a process (0: this one) on one CPU, as `taskset -p -c` does; False if there is one."""
    if (os.cpu_count() or 1) < 2:
        return False
    os.sched_setaffinity(pid, {cpu})
    return True
