"""Request and response bodies at the HTTP edge."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

from ..agents import DEFAULT_AGENT
from ..messages import MESSAGE_MAX_CHARS

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class ChatRequest(BaseModel):
    """The body of POST /chat."""

    # strict: JSON types only, so "stream": "yes" is an error rather than True.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    # The pattern only tells the document's readers what _has_text checks.
    message: str = Field(
        min_length=1,
        max_length=MESSAGE_MAX_CHARS,
        examples=["How do I see free disk space?"],
        json_schema_extra={"pattern": r"\S"},
    )
    agent: str = Field(DEFAULT_AGENT, examples=[DEFAULT_AGENT])
    stream: bool = False
    conversation_id: str | None = Field(default=None, pattern=CONVERSATION_ID_PATTERN)

    @field_validator("message")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must contain more than whitespace")
        return value


# A client continuing a conversation may name it in this header too, so that a balancer
# in front of several Pis can send it back to the Pi that holds its prompt cache.
CONVERSATION_HEADER = "X-Conversation-Id"
# The id a balancer gives a conversation that the request does not name, so that the first
# message lands where the next ones will (config/nginx/piagent-cluster.conf sends it).
NEW_CONVERSATION_HEADER = "X-New-Conversation-Id"


class ChatHeaders(BaseModel):
    """The request headers POST /chat reads, each validated like the body's conversation_id."""

    model_config = ConfigDict(frozen=True)

    conversation_id: str | None = Field(
        default=None,
        alias=CONVERSATION_HEADER,
        pattern=CONVERSATION_ID_PATTERN,
        description="The conversation to continue, as the body's conversation_id (which, if "
        "also sent, must be the same). Lets a proxy route by it without reading the body.",
    )
    new_conversation_id: str | None = Field(
        default=None,
        alias=NEW_CONVERSATION_HEADER,
        pattern=CONVERSATION_ID_PATTERN,
        description="The id to give the conversation when the request names none; the "
        "cluster's nginx site sets it. Without it piagent makes a random one.",
    )


class TokenUsage(BaseModel):
    """Token counts of one answer, as the model server reported them (null when it did not)."""

    prompt_tokens: int | None
    completion_tokens: int | None


class ChatReply(BaseModel):
    """The body of a non-stream POST /chat answer."""

    reply: str
    conversation_id: str
    model: str
    provider: str
    usage: TokenUsage | None = None
    done_reason: str | None = None


class ConversationPath(BaseModel):
    """The conversation id in /conversations/<id>."""

    conversation_id: str = Field(
        pattern=CONVERSATION_ID_PATTERN, description="The id a chat answered with."
    )


class TranscriptMessage(BaseModel):
    """One remembered message and when it was written (UTC)."""

    role: str
    content: str
    timestamp: datetime


class Transcript(BaseModel):
    """The body of GET /conversations/<id>."""

    conversation_id: str
    messages: list[TranscriptMessage]


class ConversationListQuery(BaseModel):
    """The query string of GET /conversations."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    limit: int = Field(
        default=50, ge=1, le=200, description="The most conversations to list, newest first."
    )


class ConversationListItem(BaseModel):
    """One conversation in GET /conversations: title, last update (UTC) and size."""

    conversation_id: str
    title: str  # the first remembered user message, cut to 80 characters
    updated_at: datetime
    messages: int


class ConversationList(BaseModel):
    """The body of GET /conversations: the caller's conversations, newest update first."""

    conversations: list[ConversationListItem]


class HealthReply(BaseModel):
    """The body of GET /health."""

    status: Literal["ok"]


class ReadyReply(BaseModel):
    """The body of GET /ready: every model the agents use is there."""

    status: Literal["ready"]
    models: list[str]


class AgentList(BaseModel):
    """The body of GET /agents."""

    agents: list[str]


class AgentPath(BaseModel):
    """The agent named in /agents/<name> and /v1/models/<name>; any other name is a 404."""

    name: str = Field(
        examples=[DEFAULT_AGENT], description="An agent's name, as GET /agents lists it."
    )


class AgentDetails(BaseModel):
    """The body of GET /agents/<name>: what the agent runs with."""

    name: str
    description: str | None
    provider: str
    model: str
    temperature: float
    max_tokens: int
    system_prompt: str


class FieldError(BaseModel):
    """One broken rule of a request: where (body, query, path or header, then the field)."""

    type: str
    loc: list[str | int]
    msg: str


class ErrorReply(BaseModel):
    """Every error of piagent's own routes: a sentence, or one entry per broken rule."""

    detail: str | list[FieldError]


# --- the events of a streamed /chat answer (SSE `data:` or one NDJSON line each) ------------


class DeltaEvent(BaseModel):
    """A fragment of the reply, as the model wrote it."""

    type: Literal["delta"]
    text: str


class DoneEvent(BaseModel):
    """The reply is complete and kept; the last event of a stream that succeeded."""

    type: Literal["done"]
    conversation_id: str
    model: str
    done_reason: str | None
    usage: TokenUsage


class ErrorEvent(BaseModel):
    """The reply failed after the stream began; the last event, and nothing was kept."""

    type: Literal["error"]
    detail: str | list[FieldError]


class StreamEvent(
    RootModel[Annotated[DeltaEvent | DoneEvent | ErrorEvent, Field(discriminator="type")]]
):
    """One event of a streamed /chat answer: deltas, then `done` or `error`."""
