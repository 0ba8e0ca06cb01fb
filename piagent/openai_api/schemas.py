"""The request body of the OpenAI-compatible POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from ..messages import Message

# Unknown fields (tools, n, logprobs, ...) are ignored, and never forwarded upstream.
_LENIENT = ConfigDict(strict=True, extra="ignore", frozen=True)


class CompletionMessage(BaseModel):
    """One message of the history the client sends."""

    model_config = _LENIENT

    # "developer" is OpenAI's newer name for a system message.
    role: Literal["system", "developer", "user", "assistant"]
    # A string, or a list of parts of which only `text` ones are understood.
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _join_text_parts(cls, value: str | list[dict[str, Any]] | None) -> str | None:
        if not isinstance(value, list):
            return value
        for part in value:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise PydanticCustomError(
                    "text_only",
                    "only text parts are supported, not {kind}",
                    {"kind": repr(part.get("type"))},
                )
        return "".join(part["text"] for part in value)

    def to_message(self) -> Message:
        """The message as the provider sends it on."""
        role = "system" if self.role == "developer" else self.role
        return Message(role, self.content or "")


class StreamOptions(BaseModel):
    """What a stream adds besides the text."""

    model_config = _LENIENT

    include_usage: bool = False


class CompletionRequest(BaseModel):
    """The body of POST /v1/chat/completions; `model` names an agent."""

    model_config = _LENIENT

    model: str = Field(min_length=1)
    messages: list[CompletionMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage
