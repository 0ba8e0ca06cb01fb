"""`piagent chat`: a conversation in the terminal, the reply printed as it is generated."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, ModuleType

import click

from ..agents import DEFAULT_AGENT
from .client import PiagentClient, Reply
from .commands import COMMANDS, command_name, run_command
from .errors import CliError, Refused

HISTORY_LENGTH = 1000
# After a reply stopped with Ctrl-C the server may take a moment to notice the closed
# connection and let go of the conversation (at its next fragment, under a WSGI server
# that cannot watch the socket); meanwhile it answers 409, which the user did not cause.
_RELEASE_WAIT_S = 3.0
_RELEASE_POLL_S = 0.05


class ChatSession:
    """One terminal session: the agent and conversation in use, and the prompt loop."""

    def __init__(
        self, client: PiagentClient, agent: str | None, conversation_id: str | None
    ) -> None:
        self.client = client
        self.agent = agent or DEFAULT_AGENT
        self.conversation_id = conversation_id
        self._stopped_at: float | None = None

    def run(self) -> None:
        """Prompt until Ctrl-D, /bye, or Ctrl-C at an empty prompt."""
        self.client.request("GET", "/health")  # unreachable: say so and exit 3 at once
        click.echo(
            f"piagent at {self.client.url}, agent {self.agent}. "
            "/help lists the commands; Ctrl-C stops a reply; Ctrl-D leaves."
        )
        if self.conversation_id:
            self._resume()
        with _line_editing() as read_line:
            while (line := read_line(f"{self.agent}> ")) is not None:
                if command_name(line):
                    if not run_command(self, line):
                        return
                elif line.strip():
                    self.say(line.strip())

    def say(self, message: str) -> None:
        """Send one message and print the reply as it streams; failures are one line."""
        try:
            reply = self._open(message)
        except KeyboardInterrupt:  # still waiting for a place or for the model to load
            self._stopped()
            return
        except CliError as exc:
            exc.show()
            return
        last = "\n"
        try:
            with reply:
                for text in reply:
                    sys.stdout.write(text)
                    sys.stdout.flush()
                    last = text[-1:] or last
        except KeyboardInterrupt:
            # Leaving the with closed the connection: piagent stops the model and keeps
            # what was shown.
            self._stopped(newline=last != "\n")
        except CliError as exc:
            if last != "\n":
                click.echo()
            exc.show()
        else:
            if last != "\n":
                click.echo()
        self._adopt(reply)

    def _open(self, message: str) -> Reply:
        while True:
            try:
                return self.client.open_reply(message, self.agent, self.conversation_id)
            except Refused as exc:
                stopped_at = self._stopped_at
                recent = stopped_at is not None and time.monotonic() - stopped_at < _RELEASE_WAIT_S
                if exc.status != 409 or not recent:
                    raise
            time.sleep(_RELEASE_POLL_S)

    def _stopped(self, *, newline: bool = False) -> None:
        click.echo(("\n" if newline else "") + "(stopped)")
        self._stopped_at = time.monotonic()

    def _adopt(self, reply: Reply) -> None:
        """Take the id the server gave a new conversation, and say how to come back to it."""
        if self.conversation_id is None and reply.conversation_id:
            self.conversation_id = reply.conversation_id
            click.echo(
                f"(conversation {self.conversation_id}; "
                f"piagent chat --conversation {self.conversation_id} continues it)"
            )

    def _resume(self) -> None:
        try:
            messages = self.client.transcript(self.conversation_id or "")
        except Refused as exc:
            if exc.status != 404:
                raise
            click.echo(f"nothing is remembered under {self.conversation_id} yet; it starts now")
            return
        click.echo(
            f"conversation {self.conversation_id}: {len(messages)} messages remembered "
            "(/history shows them)"
        )


def history_path() -> Path:
    """Where typed lines are kept between sessions (XDG state folder)."""
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "piagent" / "history"


@contextmanager
def _line_editing() -> Iterator[Callable[[str], str | None]]:
    """Yield a line reader: None to leave (Ctrl-D, Ctrl-C at an empty prompt), else the line.

    On a terminal it edits with readline (keys, a history file, Tab for commands).
    """
    if not sys.stdin.isatty():
        yield _reader(lambda: "")
        return
    import readline

    path = history_path()
    try:
        readline.read_history_file(path)
    except OSError:
        pass  # the first session, or an unreadable file: start without
    readline.set_history_length(HISTORY_LENGTH)
    readline.set_completer(_completer(readline))
    readline.parse_and_bind("tab: complete")
    try:
        yield _reader(readline.get_line_buffer)
    finally:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)
        except OSError:
            pass  # a read-only home: the history is not worth failing over


def _reader(line_buffer: Callable[[], str]) -> Callable[[str], str | None]:
    """input() where Ctrl-C drops the text typed so far, or leaves when there was none."""

    def read_line(prompt: str) -> str | None:
        typed = ""

        def interrupted(signum: int, frame: FrameType | None) -> None:
            # readline empties its buffer once the interrupt is raised, so look first.
            nonlocal typed
            typed = line_buffer()
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, interrupted)
        try:
            return input(prompt)
        except EOFError:
            click.echo()
            return None
        except KeyboardInterrupt:
            click.echo()
            return "" if typed else None
        finally:
            signal.signal(signal.SIGINT, previous)

    return read_line


def _completer(readline: ModuleType) -> Callable[[str, int], str | None]:
    """Tab completes a command name at the start of the line."""

    def complete(text: str, state: int) -> str | None:
        if readline.get_begidx() != 0:
            return None
        matches = [name for name in COMMANDS if name.startswith(text)]
        return matches[state] if state < len(matches) else None

    return complete
