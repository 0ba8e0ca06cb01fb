"""The `piagent` command line: chat, ask and doctor, with their options."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .client import DEFAULT_URL, PiagentClient

_EPILOG = (
    "Exit codes: 0 fine, 1 the server said no (doctor: a check failed), 2 usage "
    "(including a message too long to send), 3 piagent could not be reached."
)


def _url_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--url",
        envvar="PIAGENT_URL",
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        help="Where piagent answers.",
    )(command)


def _server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--url, --key, --agent and --conversation: the options of each command that chats."""
    command = click.option(
        "--conversation", "-c", metavar="ID", help="Continue this conversation."
    )(command)
    command = click.option(
        "--agent", "-a", metavar="NAME", help="The agent to answer (the server's default: general)."
    )(command)
    command = click.option(
        "--key",
        envvar="PIAGENT_API_KEY",
        show_envvar=True,
        help="The API key, when the server has API_KEYS.",
    )(command)
    return _url_option(command)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_EPILOG,
)
def cli() -> None:
    """Talk to a piagent server from a terminal, or check a deployment."""


@cli.command(epilog=_EPILOG, short_help="Chat in the terminal, replies streamed.")
@_server_options
def chat(url: str, key: str | None, agent: str | None, conversation: str | None) -> None:
    """Chat interactively; the reply streams in as it is generated.

    Ctrl-C stops a reply; Ctrl-D (or Ctrl-C at an empty prompt) leaves. /help lists the
    commands.
    """
    from .chat import ChatSession

    ChatSession(PiagentClient(url, key), agent, conversation).run()


@cli.command(epilog=_EPILOG, short_help="Ask once; only the reply goes to stdout.")
@_server_options
@click.option("--json", "as_json", is_flag=True, help="Print piagent's whole JSON reply instead.")
@click.argument("question", nargs=-1)
def ask(
    url: str,
    key: str | None,
    agent: str | None,
    conversation: str | None,
    as_json: bool,
    question: tuple[str, ...],
) -> None:
    """Ask once and print only the reply, streamed, so that it pipes.

    Text piped in is added after the question:

        journalctl -u nginx -n 50 | piagent ask "why does this fail?"
    """
    from .ask import ask_once

    ask_once(
        PiagentClient(url, key),
        " ".join(question),
        agent=agent,
        conversation_id=conversation,
        as_json=as_json,
    )


@cli.command(epilog=_EPILOG, short_help="Check this machine's deployment.")
@_url_option
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The settings file the service reads, e.g. /etc/piagent/piagent.env [default: .env]",
)
@click.option(
    "--nginx-conf",
    envvar="PIAGENT_NGINX_CONF",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    default="/etc/nginx/nginx.conf",
    show_default=True,
    help="nginx's main configuration file.",
)
def doctor(url: str, env_file: Path | None, nginx_conf: Path) -> None:
    """Check this machine's deployment, one line per check, with the fix of each failure."""
    from .doctor.run import run_doctor

    sys.exit(run_doctor(url, env_file or Path(".env"), nginx_conf))


def main() -> None:
    """Entry point of the `piagent` console script and of `python -m piagent`."""
    cli(prog_name="piagent")
