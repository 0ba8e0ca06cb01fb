"""The slash commands of `piagent chat`: agents, conversations, help."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from .errors import CliError

if TYPE_CHECKING:
    from .chat import ChatSession


@dataclass(frozen=True)
class Command:
    """A handler (returns False to leave the chat), its argument and what it does."""

    run: Callable[[ChatSession, str], bool]
    argument: str
    help: str


def command_name(line: str) -> str | None:
    """The command a line starts with; None for a message (a path like /etc/fstab is one)."""
    if not line.startswith("/"):
        return None
    name = line.split(maxsplit=1)[0]
    return None if "/" in name[1:] else name


def run_command(session: ChatSession, line: str) -> bool:
    """Run the line's command; a failure is one line and the session goes on. False: leave."""
    name, *rest = line.split(maxsplit=1)
    command = COMMANDS.get(name)
    if command is None:
        click.echo(
            f"unknown command {name}: /help lists them "
            "(a line starting with a space is always sent as a message)",
            err=True,
        )
        return True
    try:
        return command.run(session, rest[0].strip() if rest else "")
    except CliError as exc:
        exc.show()
        return True


def _help(session: ChatSession, argument: str) -> bool:
    for name, command in COMMANDS.items():
        click.echo(f"  {f'{name} {command.argument}'.strip():<14} {command.help}")
    click.echo("  Ctrl-C stops a reply; Ctrl-D, or Ctrl-C at an empty prompt, leaves.")
    return True


def _agents(session: ChatSession, argument: str) -> bool:
    for name in session.client.agents():
        click.echo(f"{'*' if name == session.agent else ' '} {name}")
    return True


def _agent(session: ChatSession, argument: str) -> bool:
    if not argument:
        click.echo(f"agent {session.agent} (/agents lists them)")
        return True
    known = session.client.agents()
    if argument not in known:
        click.echo(f"unknown agent {argument!r}; known agents: {', '.join(known)}", err=True)
        return True
    session.agent = argument
    click.echo(
        f"agent {argument} answers from now on, in the same conversation (/new for a new one)"
    )
    return True


def _new(session: ChatSession, argument: str) -> bool:
    session.conversation_id = None
    click.echo("a new conversation starts with your next message")
    return True


def _history(session: ChatSession, argument: str) -> bool:
    if session.conversation_id is None:
        click.echo("nothing said yet in this conversation")
        return True
    for message in session.client.transcript(session.conversation_id):
        who = "you" if message["role"] == "user" else "assistant"
        click.echo(f"{who}: {message['content']}")
    return True


def _list(session: ChatSession, argument: str) -> bool:
    conversations = session.client.conversations()
    if conversations is None:
        click.echo(
            "this piagent server does not list conversations (it has no GET /conversations); "
            "/open ID still opens one whose id you know",
            err=True,
        )
        return True
    if not conversations:
        click.echo("no conversations are remembered")
    for item in conversations:
        mark = "*" if item["conversation_id"] == session.conversation_id else " "
        updated = str(item["updated_at"])[:16].replace("T", " ")
        click.echo(
            f"{mark} {item['conversation_id']}  {updated}  {item['messages']:>3} messages  "
            f"{item['title']}"
        )
    return True


def _open(session: ChatSession, argument: str) -> bool:
    if not argument:
        click.echo("/open needs a conversation id (/list shows them)", err=True)
        return True
    messages = session.client.transcript(argument)  # 404 for an unknown one: said, not opened
    session.conversation_id = argument
    click.echo(f"conversation {argument}: {len(messages)} messages (/history shows them)")
    return True


def _delete(session: ChatSession, argument: str) -> bool:
    target = argument or session.conversation_id
    if target is None:
        click.echo("no conversation to delete yet", err=True)
        return True
    session.client.forget(target)
    click.echo(f"deleted conversation {target}")
    if target == session.conversation_id:
        session.conversation_id = None
        click.echo("a new conversation starts with your next message")
    return True


def _bye(session: ChatSession, argument: str) -> bool:
    return False


COMMANDS: dict[str, Command] = {
    "/agents": Command(_agents, "", "list the agents (* marks the one answering)"),
    "/agent": Command(_agent, "NAME", "let another agent answer"),
    "/new": Command(_new, "", "start a new conversation"),
    "/history": Command(_history, "", "show what this conversation remembers"),
    "/list": Command(_list, "", "list the conversations the server remembers"),
    "/open": Command(_open, "ID", "continue another conversation"),
    "/delete": Command(_delete, "[ID]", "forget this (or that) conversation on the server"),
    "/help": Command(_help, "", "show this help"),
    "/bye": Command(_bye, "", "leave"),
}
