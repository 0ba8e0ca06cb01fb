"""Several piagents on loopback, as on several Pis behind one nginx, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
from contextlib import ExitStack
from pathlib import Path

from tests.servers import RunningServer, free_port, gunicorn, wait_until

# What each Pi of a cluster runs with (README: "More than one Pi"): one generation at a
# time and no queue, so a busy Pi refuses at once and nginx asks another.
CLUSTER_PI_ENV = {
    "MEMORY_BACKEND": "redis",
    "MAX_CONCURRENT_GENERATIONS": "1",
    "QUEUE_MAX": "0",
    "ACCESS_LOG": "",
}


class Pi:
    """piagent under gunicorn on a loopback port of its own, kept across restarts.

    The nginx site names the port, so a Pi that is killed and started again is the same
    server to nginx.
    """

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self._env = {**env, "BIND": self.address}
        self._root = root
        self._running = ExitStack()
        self.server: RunningServer | None = None

    @property
    def url(self) -> str:
        """Its base URL, straight to gunicorn."""
        return f"http://{self.address}"

    def start(self, **env: str) -> Pi:
        """(Re)start gunicorn; `env` overrides this Pi's variables for this run only."""
        self.stop()
        self.server = self._running.enter_context(gunicorn({**self._env, **env}, self._root))
        return self

    def stop(self) -> None:
        """Stop gunicorn the usual way (SIGTERM), if it still runs."""
        self._running.close()
        self.server = None

    def workers(self) -> list[int]:
        """The PIDs of the master's workers."""
        pid = self.server.pid
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def kill(self) -> None:
        """SIGKILL the master and its workers at once, as a power cut would stop them."""
        workers = self.workers()
        for pid in [self.server.pid, *workers]:
            os.kill(pid, signal.SIGKILL)
        for pid in workers:
            wait_until(lambda p=pid: not running(p), 5, what=f"worker {pid} to die")

    def kill_master(self) -> list[int]:
        """SIGKILL only the master; its workers live on until they notice. Returns their PIDs."""
        workers = self.workers()
        os.kill(self.server.pid, signal.SIGKILL)
        return workers

    def is_up(self) -> bool:
        """Whether its master still runs."""
        return self.server is not None and running(self.server.pid)


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
