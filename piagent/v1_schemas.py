"""The request body of the OpenAI-compatible POST /v1/chat/completions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .memory import Message

# Unknown fields (tools, n, logprobs, ...) are ignored, and never forwarded upstream.
_LENIENT = ConfigDict(strict=True, extra="ignore", frozen=True)


class TextPart(BaseModel):
    """One part of a message's content; only text is understood."""

    model_config = _LENIENT

    type: Literal["text"]
    text: str


class CompletionMessage(BaseModel):
    """One message of the history the client sends."""

    model_config = _LENIENT

    # "developer" is OpenAI's newer name for a system message.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def to_message(self) -> Message:
        """The message as the provider sends it on."""
        content = self.content or ""
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        return Message("system" if self.role == "developer" else self.role, content)


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
