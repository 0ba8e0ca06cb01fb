"""The provider contract: what the chat views need from a model server."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..messages import Message


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Sampling and size limits for one call."""

    temperature: float
    ctx_tokens: int
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long to wait on the model server, in seconds."""

    connect_s: float
    reply_s: float  # a whole non-stream reply
    first_token_s: float  # a stream's first token: model load and prompt evaluation
    stream_idle_s: float  # silence between two parts of a stream
    stream_total_s: float  # a whole stream


@dataclass(frozen=True, slots=True)
class ChatStats:
    """What the model server reported once the reply was complete."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    done_reason: str | None = None
    eval_duration_ns: int | None = None

    @property
    def usage(self) -> dict[str, int | None]:
        """The token counts as piagent's replies report them."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


class ChatStream(Protocol):
    """An open reply: iterate for its text fragments; `stats` is set after the last ones.

    Each item is the fragments that arrived together (never an empty list): a relay
    that fell behind the model catches up in one step instead of one per token.
    """

    stats: ChatStats | None

    def __iter__(self) -> Iterator[list[str]]: ...

    def close(self) -> None:
        """Release the upstream connection; safe to call more than once."""


class Provider(Protocol):
    """A model server. `open_chat` raises an `UpstreamError` before returning on failure."""

    name: str

    def open_chat(
        self,
        messages: Sequence[Message],
        model: str,
        options: GenerationOptions,
        *,
        stream: bool,
    ) -> ChatStream: ...

    def check_ready(self, models: Collection[str], timeout_s: float) -> None:
        """Raise UpstreamError saying what to do unless the server answers with every model."""

    def load_model(self, model: str) -> None:
        """Ask the server to load `model` now (warm-up); raise UpstreamError on failure."""
