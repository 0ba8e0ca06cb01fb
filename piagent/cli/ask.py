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
    message = compose(question, sys.stdin)
    stdout = sys.stdout
    try:
        if as_json:
            reply = client.whole_reply(message, agent, conversation_id)
            stdout.write(json.dumps(reply, ensure_ascii=False) + "\n")
        else:
            _stream(client.open_reply(message, agent, conversation_id), stdout)
    except KeyboardInterrupt:
        # The reply's connection is closed on the way out, which stops the model.
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except BrokenPipeError:
        # The reader left (`| head`): the reply is stopped the same way, and stdout
        # points at /dev/null so that Python's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())


def _stream(reply: Reply, stdout: TextIO) -> None:
    """Print each fragment as it arrives, then a newline if the reply lacks one."""
    last = "\n"
    with reply:
        for text in reply:
            stdout.write(text)
            stdout.flush()
            last = text[-1:] or last
    if last != "\n":
        stdout.write("\n")
    if sys.stderr.isatty() and reply.conversation_id:
        # Not on stdout, which carries the reply alone.
        click.echo(f"(conversation {reply.conversation_id}: --conversation continues it)", err=True)


def compose(question: str, stdin: TextIO) -> str:
    """The question, then whatever is piped in; refused here if the server would refuse it."""
    piped = "" if stdin.isatty() else stdin.read().rstrip()
    message = "\n\n".join(part for part in (question.strip(), piped) if part)
    if not message:
        raise Unsendable("nothing to ask: give a question, or pipe text in")
    if len(message) > MESSAGE_MAX_CHARS:
        over = len(message) - MESSAGE_MAX_CHARS
        what = {
            (True, True): "the question and the piped text are",
            (True, False): "the question is",
            (False, True): "the piped text is",
        }[(bool(question.strip()), bool(piped))]
        shorter = (
            "shorten the question or pipe in less (e.g. tail -n 50)" if piped else "shorten it"
        )
        raise Unsendable(
            f"{what} {len(message)} characters, {over} over piagent's limit of "
            f"{MESSAGE_MAX_CHARS}; nothing was sent: {shorter}"
        )
    return message
