"""Fitting a conversation into the model's context: a cautious token estimate and a trim."""

from __future__ import annotations

from collections.abc import Sequence

from .memory import Message

# English averages about four characters a token, other scripts and code fewer, so
# three bytes of UTF-8 a token overestimates: a trimmed conversation then fits the
# context instead of being cut by the model server.
_BYTES_PER_TOKEN = 3
_TOKENS_PER_MESSAGE = 4  # the role markers a chat template wraps around each message


def estimate_tokens(message: Message) -> int:
    """An upper-side guess of the tokens `message` takes in the prompt."""
    return _TOKENS_PER_MESSAGE + -(-len(message.content.encode()) // _BYTES_PER_TOKEN)


def trim_to_budget(messages: Sequence[Message], budget: int) -> list[Message]:
    """Drop the oldest turns until the estimate fits `budget`.

    The leading system messages and the newest message are always kept, and the kept
    history never starts with an assistant message whose question was dropped.
    """
    head_size = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    head, turns = list(messages[:head_size]), list(messages[head_size:])
    newest, older = turns[-1:], turns[:-1]
    room = budget - sum(estimate_tokens(m) for m in head + newest)
    kept: list[Message] = []
    for message in reversed(older):
        room -= estimate_tokens(message)
        if room < 0:
            break
        kept.append(message)
    kept.reverse()
    while kept and kept[0].role == "assistant":
        del kept[0]
    return head + kept + newest
