"""`make demo` as a newcomer runs it: one real chat, then Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest
import requests

from tests.components import require_demo_packages, require_program
from tests.servers import REPO, group_alive, wait_until

pytestmark = pytest.mark.realmodel

_BANNER = re.compile(r"answering at (http://\S+)\nfrom .* at (http://\S+)/v1")


def refuses_connections(url: str) -> bool:
    try:
        requests.get(f"{url}/health", timeout=2)
    except requests.ConnectionError:
        return True
    return False


def test_make_demo_answers_a_real_chat_and_ctrl_c_stops_everything(tmp_path):
    require_demo_packages()
    require_program("make")
    log_path = tmp_path / "demo.log"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "BIND": "127.0.0.1:0",  # any free port: the demo prints the one it got
    }
    with open(log_path, "wb") as log_file:
        # Its own session, so that the test can signal the whole group as a terminal does.
        demo = subprocess.Popen(
            ["make", "demo"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def banner() -> re.Match | None:
        if demo.poll() is not None:
            raise RuntimeError(f"make demo exited early:\n{log_path.read_text()}")
        return _BANNER.search(log_path.read_text(errors="replace"))

    try:
        found = wait_until(banner, 120, interval=0.1, what="the demo's banner")
        url, llama_url = found.group(1), found.group(2)
        assert "curl -N -H 'Content-Type: application/json'" in log_path.read_text()

        reply = requests.post(f"{url}/chat", json={"message": "Say hello."}, timeout=120)
        assert reply.status_code == 200
        assert reply.json()["reply"].strip() and reply.json()["provider"] == "openai"
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C in the terminal
        try:
            demo.wait(timeout=60)
            wait_until(lambda: not group_alive(demo.pid), 30, what="every demo process to exit")
        finally:
            if group_alive(demo.pid):
                os.killpg(demo.pid, signal.SIGKILL)

    assert "piagent demo: stopping" in log_path.read_text()
    assert refuses_connections(url) and refuses_connections(llama_url)
