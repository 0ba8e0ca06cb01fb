"""Run a command on a pseudo-terminal (the standard library's pty), as someone at a keyboard.

The child gets the terminal as its controlling terminal, so Ctrl-C and Ctrl-D typed
into it reach the program as they would from a real one: SIGINT, end of input.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.servers import wait_until

CTRL_C = "\x03"
CTRL_D = "\x04"
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


def _as_from_a_shell_prompt() -> None:
    """In the child: take the pty as its controlling terminal, Ctrl-C as a shell leaves it.

    In its new session the pty (fd 0 by now) becomes the controlling terminal. SIGINT
    goes back to its default: a shell prompt starts a command so, but these tests may
    themselves run with SIGINT ignored (a shell script's background job, such as a CI
    run started with `&`), which the child would inherit, and Python then never turns
    Ctrl-C into KeyboardInterrupt.
    """
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminal:
    """A child process on a pty: type into it, wait for what it prints, read its exit code."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        master, slave = os.openpty()
        # Wide enough that readline never wraps a test's line.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 250, 0, 0))
        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env={"TERM": "xterm", **env},
            start_new_session=True,
            preexec_fn=_as_from_a_shell_prompt,
        )
        os.close(slave)
        self._fd = master
        self._seen = ""  # everything printed so far, terminal escapes removed
        self._searched = 0  # expect() looks only after its previous match

    @property
    def output(self) -> str:
        """Everything the program printed so far, without terminal control sequences."""
        return self._seen

    def type(self, text: str) -> None:
        """Type text (a line ends with "\\r", as the Enter key sends)."""
        os.write(self._fd, text.encode())

    def wait_for_keyboard(self, timeout: float = 10) -> None:
        """Wait until the program waits for a key (in select or poll).

        readline notices Ctrl-C only while it waits: one that comes while it is still
        drawing the line, a few microseconds after each key, counts only at the next key.
        No person types that fast; a test does, so it waits for this first.
        """
        wchan = Path(f"/proc/{self.process.pid}/wchan")
        wait_until(
            lambda: any(word in wchan.read_text() for word in ("poll", "select")),
            timeout,
            what="the program to wait for a key",
        )

    def expect(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """Wait until `pattern` (a regex) appears after the previous match; return its match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self._seen, self._searched)
            if match:
                self._searched = match.end()
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                raise TimeoutError(
                    f"{pattern!r} did not appear within {timeout} s; the terminal shows:\n"
                    f"{self._seen[self._searched :]!r}"
                )

    def wait(self, timeout: float = 10) -> int:
        """The exit code, once the program has ended (its output is read meanwhile)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"still running after {timeout} s:\n{self._seen!r}")
            self._read(0.05)
        while self._read(0):
            pass
        return self.process.returncode

    def close(self) -> None:
        """Kill the program if it still runs, and close the terminal."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self._fd)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read(self, timeout: float) -> bool:
        """Read what is there within `timeout`; False when nothing came or the child is gone."""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self._fd, 65536)
        except OSError:  # EIO: the child closed its side of the terminal
            return False
        self._seen += _ESCAPES.sub("", data.decode(errors="replace"))
        return bool(data)
