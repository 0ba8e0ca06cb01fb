"""`piagent ask`: one question (plus anything piped in), the reply alone on stdout."""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO

import click

from ..messages import MESSAGE_MAX_CHARS
from .client import PiagentClient, Reply
from .errors import EXIT_INTERRUPTED, Unsendable


def ask_once(
    client: PiagentClient,
    question: str,
    *,
    agent: str | None,
    conversation_id: str | None,
    as_json: bool,
) -> None:
    """Send the message and print the reply as it streams (or, `as_json`, the whole JSON)."""
    message = _compose(question, sys.stdin)
    try:
        if as_json:
            reply = client.whole_reply(message, agent, conversation_id)
            sys.stdout.write(json.dumps(reply, ensure_ascii=False) + "\n")
        else:
            _stream(client.open_reply(message, agent, conversation_id))
    except KeyboardInterrupt:
        # The reply's connection is closed on the way out, which stops the model.
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # The reader left (`| head`): the reply is stopped the same way, and stdout
        # points at /dev/null so that Python's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _stream(reply: Reply) -> None:
    """Print each fragment as it arrives, then a newline if the reply lacks one."""
    last = "\n"
    with reply:
        for text in reply:
            sys.stdout.write(text)
            sys.stdout.flush()
            last = text[-1:] or last
    if last != "\n":
        sys.stdout.write("\n")
    if sys.stderr.isatty() and reply.conversation_id:
        # Not on stdout, which carries the reply alone.
        click.echo(f"(conversation {reply.conversation_id}: --conversation continues it)", err=True)


def _compose(question: str, stdin: TextIO) -> str:
    """The question, then whatever is piped in; refused here if the server would refuse it."""
    question = question.strip()
    piped = "" if stdin.isatty() else stdin.read().rstrip()
    message = "\n\n".join(part for part in (question, piped) if part)
    if not message:
        raise Unsendable("nothing to ask: give a question, or pipe text in")
    if len(message) > MESSAGE_MAX_CHARS:
        if not piped:
            what, shorter = "the question is", "shorten it"
        else:
            what = "the question and the piped text are" if question else "the piped text is"
            shorter = "shorten the question or pipe in less (e.g. tail -n 50)"
        raise Unsendable(
            f"{what} {len(message)} characters, {len(message) - MESSAGE_MAX_CHARS} over "
            f"piagent's limit of {MESSAGE_MAX_CHARS}; nothing was sent: {shorter}"
        )
    return message
