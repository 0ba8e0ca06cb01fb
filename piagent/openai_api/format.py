"""OpenAI-shaped reply bodies: a whole chat.completion, or its chunks as server-sent events."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..agents import Agent
from ..http.stream_formats import FORMATS, SSE, StreamFormat, sse_event
from ..providers.base import ChatStats
from .errors import openai_error

_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Completion:
    """The identity every part of one answer carries; `model` is the agent's name."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def whole(self, text: str, stats: ChatStats | None) -> dict[str, Any]:
        """The body of a non-stream answer."""
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason(stats.done_reason if stats else None),
        }
        counts = usage(stats.prompt_tokens, stats.completion_tokens) if stats else usage(None, None)
        return {**self.head("chat.completion", [choice]), "usage": counts}

    def chunk(self, delta: dict[str, str], reason: str | None = None) -> dict[str, Any]:
        """One chat.completion.chunk carrying `delta`."""
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        return self.head("chat.completion.chunk", [choice])

    def head(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        """The fields every body of this answer starts with."""
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }


@dataclass(frozen=True)
class ChunkFormat(StreamFormat):
    """The relay's stream as OpenAI clients read it: chunk events, then [DONE].

    A failure ends the stream with an `error` event and no [DONE], which the SDKs raise.
    """

    completion: Completion
    include_usage: bool

    @classmethod
    def for_completion(cls, completion: Completion, *, include_usage: bool) -> ChunkFormat:
        """Server-sent events for one answer."""
        return cls(SSE, FORMATS[SSE].content_type, completion, include_usage)

    def delta_payload(self, text: str) -> dict[str, Any]:
        """The chunk that carries one fragment of the reply."""
        return self.completion.chunk({"role": "assistant", "content": text})

    def event(self, payload: dict[str, Any]) -> bytes:
        """The relay's `done` or `error` event, in OpenAI's words."""
        if payload["type"] == "error":
            return sse_event({"error": openai_error(502, payload["detail"])})
        last = sse_event(self.completion.chunk({}, finish_reason(payload["done_reason"])))
        if self.include_usage:
            counts = payload["usage"]
            totals = usage(counts["prompt_tokens"], counts["completion_tokens"])
            last += sse_event(
                {**self.completion.head("chat.completion.chunk", []), "usage": totals}
            )
        return last + _DONE


def model_entry(agent: Agent) -> dict[str, Any]:
    """An agent as an entry of GET /v1/models."""
    return {
        "id": agent.name,
        "object": "model",
        "created": 0,  # when the model was made: an agent has no such date
        "owned_by": "piagent",
        "description": agent.description,
    }


def finish_reason(done_reason: str | None) -> str:
    """OpenAI's finish_reason: "length" when the token limit cut the reply, else "stop"."""
    return "length" if done_reason == "length" else "stop"


def usage(prompt: int | None, completion: int | None) -> dict[str, int | None]:
    """Token counts as OpenAI reports them (null where the model server gave none)."""
    total = None if prompt is None or completion is None else prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
