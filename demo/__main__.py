"""`make demo` (python -m demo): piagent answering from a real model, with no Ollama.

Starts llama.cpp's server with SmolLM2 on a free loopback port, waits until it is
healthy, starts piagent (gunicorn, PROVIDER=openai) in front of it, prints the URL and a
curl line, and stops both cleanly on Ctrl-C.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import requests

from demo.llama_server import MODEL_NAME

REPO = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT_S = 120  # loading a model on a Pi takes a while
_URL = re.compile(r"(http://\S+)")
_LISTENING = re.compile(r"Listening at: (http://\S+)")
_CANNOT_START = "piagent: cannot start: "


class DemoError(RuntimeError):
    """A part of the demo did not start; the message says which and why."""


def main() -> int:
    """Run the demo until Ctrl-C; 0 when stopped by the user, 1 when a part failed."""
    # Both stop the demo; set explicitly, as a shell may start it with SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: _interrupt())
    children: list[subprocess.Popen] = []
    try:
        llama = _start(children, ["-m", "demo.llama_server"], stdout=True)
        llama_url = _read_line(llama, llama.stdout, "llama.cpp server", _URL)
        _wait_healthy(f"{llama_url}/health", llama, "llama.cpp server")

        env = {
            **os.environ,
            "PROVIDER": "openai",
            "OPENAI_BASE_URL": f"{llama_url}/v1",
            "OPENAI_MODEL": MODEL_NAME,
        }
        gunicorn = _start(
            children,
            ["-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            stderr=True,
            env=env,
        )
        url = _read_line(gunicorn, gunicorn.stderr, "piagent", _LISTENING, echo=True)
        _wait_healthy(f"{url}/health", gunicorn, "piagent")
        _banner(url, llama_url)
        for line in gunicorn.stderr:  # keep showing piagent's log until it stops
            sys.stderr.write(line)
        if gunicorn.wait() != 0:
            raise DemoError(f"piagent stopped with exit code {gunicorn.returncode}")
        return 0  # gunicorn was told to stop (Ctrl-C reaches it too)
    except KeyboardInterrupt:
        print("\npiagent demo: stopping", file=sys.stderr, flush=True)
        return 0
    except DemoError as exc:
        print(f"piagent demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        for child in reversed(children):
            _stop(child)


def _interrupt() -> None:
    raise KeyboardInterrupt


def _start(
    children: list[subprocess.Popen],
    args: list[str],
    *,
    stdout: bool = False,
    stderr: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start `python args...` in the project folder; its stdin is a pipe only we hold."""
    child = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE if stdout else None,
        stderr=subprocess.PIPE if stderr else None,
        text=True,
    )
    children.append(child)
    return child


def _read_line(
    child: subprocess.Popen, stream: IO[str], what: str, pattern: re.Pattern, *, echo: bool = False
) -> str:
    """Read `stream` until a line matches `pattern`; return its first group.

    A child that stops first has its own line saying why ("piagent: cannot start: ..."):
    that line is what the demo says, once, in place of a bare exit code.
    """
    reason = None
    for line in stream:
        if line.startswith(_CANNOT_START):
            reason = reason or line.removeprefix("piagent: ").strip()
            continue
        if echo:
            sys.stderr.write(line)
        if match := pattern.search(line):
            return match.group(1)
    code = child.wait()
    raise DemoError(reason or f"the {what} exited before it was ready (exit code {code})")


def _wait_healthy(url: str, child: subprocess.Popen, what: str) -> None:
    """Poll `url` until it answers 200, the child exits, or the start timeout passes."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise DemoError(f"the {what} exited with code {child.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise DemoError(f"the {what} was not healthy within {HEALTH_TIMEOUT_S} s")


def _banner(url: str, llama_url: str) -> None:
    body = '{"message": "Name three uses for a Raspberry Pi.", "stream": true}'
    print(
        f"\npiagent is answering at {url}\n"
        f"from {MODEL_NAME} on llama.cpp at {llama_url}/v1\n"
        f"Try:\n  curl -N -H 'Content-Type: application/json' -d '{body}' {url}/chat\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )


def _stop(child: subprocess.Popen) -> None:
    """Ask a child to stop (SIGTERM, and EOF on its stdin), then insist after a grace time."""
    if child.stdin:
        child.stdin.close()
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


if __name__ == "__main__":
    sys.exit(main())
