"""The command's failures, each printed as one line on stderr with its exit code."""

from __future__ import annotations

from typing import IO, Any

import click

# The documented exit codes (README, "The piagent command").
EXIT_REFUSED = 1  # the server said no (an error status or an error event)
EXIT_USAGE = 2  # what was asked of the command cannot be sent (click uses 2 as well)
EXIT_UNREACHABLE = 3  # no answer from the server, or the connection broke mid-reply
EXIT_INTERRUPTED = 130  # Ctrl-C during `ask`, as a shell reports SIGINT


class CliError(click.ClickException):
    """A failure shown as `piagent: <message>` on stderr, exiting with `exit_code`."""

    exit_code = EXIT_REFUSED

    def show(self, file: IO[Any] | None = None) -> None:
        """One line on stderr, without click's "Error:" prefix."""
        click.echo(f"piagent: {self.format_message()}", err=True)


class Refused(CliError):
    """The server answered with an error status; `detail` is its own words."""

    exit_code = EXIT_REFUSED

    def __init__(self, status: int, detail: str, *, retry_after: str | None = None) -> None:
        message = detail if retry_after is None else f"{detail} (Retry-After: {retry_after} s)"
        super().__init__(message)
        self.status = status
        self.detail = detail


class StreamFailed(CliError):
    """The server ended a started reply with an error event."""

    exit_code = EXIT_REFUSED


class Unreachable(CliError):
    """No answer from the server, or the connection broke before the reply was whole."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def format_message(self) -> str:
        """What failed, then what the user may do about it."""
        return f"{self.message}{self.hint}"


class Unsendable(CliError):
    """The input breaks a rule the server would refuse it for; nothing was sent."""

    exit_code = EXIT_USAGE


def one_line(detail: Any) -> str:
    """A server's `detail` (a sentence, or a list of field errors) as one line."""
    if isinstance(detail, list):
        parts = []
        for error in detail:
            if isinstance(error, dict) and "msg" in error:
                where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
                parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
            else:
                parts.append(str(error))
        detail = "; ".join(parts)
    return " ".join(str(detail).split())
