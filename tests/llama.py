"""Run the demo's llama.cpp server (SmolLM2) on loopback for the real-model tests."""

from __future__ import annotations

import selectors
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import REPO, is_healthy, stop_process, wait_until

START_TIMEOUT_S = 60


@contextmanager
def llama_server(log_dir: Path, *, seed: int = 42, metrics: bool = False) -> Iterator[str]:
    """Start `python -m demo.llama_server` (1 thread, fixed seed); yield its base URL.

    With `metrics`, it also serves llama.cpp's /metrics.
    """
    log_path = log_dir / "llama-server.log"
    args = ["--threads", "1", "--seed", str(seed), *(["--metrics"] if metrics else [])]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "demo.llama_server", *args],
            cwd=REPO,
            stdin=subprocess.PIPE,  # the server exits when this closes, even if we crash
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
    try:
        url = _read_url(process, log_path)
        wait_until(lambda: is_healthy(url), START_TIMEOUT_S, interval=0.05, what="llama /health")
        yield url
    finally:
        process.stdin.close()
        stop_process(process, timeout=15)


def _read_url(process: subprocess.Popen, log_path: Path) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=START_TIMEOUT_S):
            raise TimeoutError(f"llama server printed no URL in {START_TIMEOUT_S} s")
    line = process.stdout.readline().decode().strip()
    if not line.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"llama server did not start:\n{log_path.read_text(errors='replace')}")
    return line
