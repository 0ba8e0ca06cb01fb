"""Run Debian's uWSGI with the shipped config/uwsgi/piagent.ini on loopback."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.components import require_file, require_program
from tests.embedded_python import system_python_venv
from tests.servers import REPO, RunningServer, free_port, is_healthy, stop_process, wait_until

INI = REPO / "config" / "uwsgi" / "piagent.ini"
PLUGINS = Path("/usr/lib/uwsgi/plugins")


@contextmanager
def uwsgi(env: Mapping[str, str], root: Path) -> Iterator[RunningServer]:
    """Serve piagent with `uwsgi --ini piagent.ini`; `env` goes in the .env it reads."""
    binary = require_program("uwsgi")
    require_file(PLUGINS / "python3_plugin.so", "uwsgi-plugin-python3")
    port = free_port()
    (root / ".env").write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    log_path = root / "uwsgi.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [binary, "--ini", str(INI)],
            # The ini's own way to be pointed somewhere: the environment.
            env={
                "PATH": "/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "PIAGENT_ROOT": str(REPO),
                "PIAGENT_VENV": str(system_python_venv(root / "venv")),
                "PIAGENT_ENV_DIR": str(root),
                "PIAGENT_BIND": f"127.0.0.1:{port}",
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(url=f"http://127.0.0.1:{port}", pid=process.pid, log_path=log_path)
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"uwsgi exited early:\n{server.log()}")
            return is_healthy(server.url)

        wait_until(healthy, 30, interval=0.1, what="uWSGI and piagent to answer")
        yield server
    finally:
        stop_process(process, timeout=15)
