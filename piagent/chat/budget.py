"""Fitting a conversation into the model's context: a cautious token estimate and a trim.

The model's context (CTX_TOKENS) must hold the prompt and the reply (up to
MAX_TOKENS); a prompt that does not fit is cut by Ollama from the front, silently. So
the oldest turns are dropped here first, from an estimate that errs high: whole
remembered exchanges for /chat, where each conversation also corrects the estimate
from the prompt size the model reports; single messages for /v1, whose clients send
the history themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import MessageTooLong
from ..memory.base import TrimPolicy
from ..messages import Message

# English runs at four or more bytes of UTF-8 a token and most other text at three or
# more (a CJK character is three bytes and rarely more than one token), so three bytes a
# token overestimates. Digits are the exception: tokenizers such as Qwen's and Llama 3's
# split numbers into single digits or short groups, so a digit counts as a whole token.
_BYTES_PER_TOKEN = 3
_DIGITS = "0123456789"
_TOKENS_PER_MESSAGE = 4  # the role markers a chat template wraps around each message
_TOKENS_PER_PROMPT = 8  # the template's own opening and the start of the reply

# What a model's count may teach us, as a factor on the estimate. A byte-level tokenizer
# never makes more than one token per byte, three times the estimate; half of it would
# be denser text than any tokenizer in use manages. The margin covers the next message
# being denser than those measured so far.
RATIO_FLOOR = 0.5
RATIO_CEILING = 3.0
_RATIO_MARGIN = 1.1


@dataclass(frozen=True, slots=True)
class FittedPrompt:
    """The messages to send, and their uncorrected estimate (to learn from the model's count)."""

    messages: list[Message]
    estimate: int
    left_out: int  # how many of the oldest history messages are not sent


def estimate_tokens(message: Message) -> int:
    """An upper-side guess of the tokens `message` takes in the prompt."""
    text = message.content
    digits = sum(map(text.count, _DIGITS))
    # Each digit already counts as a third of a token through its byte; make it whole.
    units = len(text.encode()) + (_BYTES_PER_TOKEN - 1) * digits
    return _TOKENS_PER_MESSAGE + math.ceil(units / _BYTES_PER_TOKEN)


def fit_prompt(
    system: Message,
    history: Sequence[Message],
    new: Message,
    *,
    ctx_tokens: int,
    max_tokens: int,
    token_ratio: float | None,
    trim: TrimPolicy = "sliding",
) -> FittedPrompt:
    """System prompt, the newest whole exchanges that fit, and the new message.

    When the history does not fit whole, `sliding` keeps as much of it as fits, and
    `block` only what fits in half the room left beside the system prompt and the new
    message: the next turns can then add to this prompt instead of cutting it again.
    Raises MessageTooLong when the system prompt and the new message alone leave no
    room for a reply of `max_tokens`.
    """
    ratio = token_ratio or 1.0
    room = ctx_tokens - max_tokens
    fixed = _TOKENS_PER_PROMPT + estimate_tokens(system) + estimate_tokens(new)
    if math.ceil(fixed * ratio) > room:
        raise MessageTooLong(
            needed=math.ceil(fixed * ratio), room=room, ctx_tokens=ctx_tokens, max_tokens=max_tokens
        )
    exchanges = _exchanges(history)
    costs = [sum(estimate_tokens(m) for m in exchange) for exchange in exchanges]
    limit = room
    if trim == "block" and math.ceil((fixed + sum(costs)) * ratio) > room:
        # The fixed part, and half of the room that leaves for the history.
        limit = (room + math.ceil(fixed * ratio)) // 2
    kept = 0
    total = fixed
    for cost in reversed(costs):
        if math.ceil((total + cost) * ratio) > limit:
            break
        kept += 1
        total += cost
    remembered = [
        message for exchange in exchanges[len(exchanges) - kept :] for message in exchange
    ]
    return FittedPrompt([system, *remembered, new], total, len(history) - len(remembered))


def trim_to_budget(
    messages: Sequence[Message], *, ctx_tokens: int, max_tokens: int
) -> list[Message]:
    """Drop the oldest messages until the estimate leaves room for a reply of `max_tokens`.

    The leading system messages and the newest message are always kept, and the kept
    history never starts with an assistant message whose question was dropped. Raises
    MessageTooLong when those alone leave no room for the reply.
    """
    head_size = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    head, turns = list(messages[:head_size]), list(messages[head_size:])
    newest, older = turns[-1:], turns[:-1]
    fixed = _TOKENS_PER_PROMPT + sum(estimate_tokens(m) for m in head + newest)
    budget = ctx_tokens - max_tokens
    if fixed > budget:
        raise MessageTooLong(
            needed=fixed, room=budget, ctx_tokens=ctx_tokens, max_tokens=max_tokens
        )
    room = budget - fixed
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


def learned_ratio(previous: float | None, estimate: int, prompt_tokens: int | None) -> float | None:
    """The conversation's factor after the model counted `prompt_tokens` for `estimate`.

    A count can come out low (an Ollama that counts only the part of the prompt it did
    not have cached), never high: so the highest factor seen is kept, and a count far
    below any tokenizer's is not believed at all.
    """
    if not prompt_tokens or estimate <= 0:
        return previous  # not reported (older Ollama omits it for a fully cached prompt)
    seen = prompt_tokens / estimate
    if seen < RATIO_FLOOR:
        return previous
    learned = seen * _RATIO_MARGIN
    return min(RATIO_CEILING, learned if previous is None else max(previous, learned))


def _exchanges(history: Sequence[Message]) -> list[list[Message]]:
    """The history cut into exchanges, each starting at a user message."""
    exchanges: list[list[Message]] = []
    for message in history:
        if message.role == "user" or not exchanges:
            exchanges.append([])
        exchanges[-1].append(message)
    return exchanges
