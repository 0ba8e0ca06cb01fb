"""The bodies of the OpenAI-compatible API: POST /v1/chat/completions' request, and the replies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from ..messages import Message

# Unknown fields (tools, n, logprobs, ...) are ignored, and never forwarded upstream.
_LENIENT = ConfigDict(strict=True, extra="ignore", frozen=True)


# What the document says the parts may be: the validator below refuses any other kind.
_TEXT_PARTS = WithJsonSchema(
    {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
        },
    }
)


class CompletionMessage(BaseModel):
    """One message of the history the client sends."""

    model_config = _LENIENT

    # "developer" is OpenAI's newer name for a system message.
    role: Literal["system", "developer", "user", "assistant"]
    # A string, or a list of parts of which only `text` ones are understood.
    content: str | Annotated[list[dict[str, Any]], _TEXT_PARTS] | None = None

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

    model: str = Field(min_length=1, examples=["general"])
    messages: list[CompletionMessage] = Field(
        min_length=1, examples=[[{"role": "user", "content": "Hello"}]]
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage


# --- replies: what the views send, described for the API document -------------------------


class ModelEntry(BaseModel):
    """One agent, as a model of GET /v1/models."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    description: str | None


class ModelList(BaseModel):
    """The body of GET /v1/models: one model per agent."""

    object: Literal["list"]
    data: list[ModelEntry]


class CompletionUsage(BaseModel):
    """Token counts, null where the model server gave none."""

    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None


class AssistantMessage(BaseModel):
    """The reply of a whole completion."""

    role: Literal["assistant"]
    content: str


FinishReason = Literal["stop", "length"]


class CompletionChoice(BaseModel):
    """The one choice of a whole completion."""

    index: int
    message: AssistantMessage
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    """The body of a non-stream POST /v1/chat/completions answer."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class ChunkDelta(BaseModel):
    """What a chunk adds to the reply; empty in the chunk that carries the finish reason."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    """The one choice of a chunk."""

    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None


class CompletionChunk(BaseModel):
    """One server-sent event of a streamed answer; the usage chunk has no choices."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


class OpenAIError(BaseModel):
    """What failed, as OpenAI's clients read it."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorReply(BaseModel):
    """Every error of the /v1 routes, and the last event of a stream that failed."""

    error: OpenAIError


class CompletionEvent(RootModel[CompletionChunk | OpenAIErrorReply]):
    """The data of one server-sent event: a chunk, or the error that ends a failed stream."""
