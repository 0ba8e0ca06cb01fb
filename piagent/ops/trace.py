"""What one request did, gathered as it happens, for its log line and the metrics."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from ..agents import Agent
from ..providers.base import ChatStats


@dataclass
class RequestTrace:
    """Facts about one request; generation fields stay None for requests that have none."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.monotonic)
    agent: str | None = None
    conversation_id: str | None = None
    model: str | None = None
    first_token_s: float | None = None
    stats: ChatStats | None = None
    tokens_per_s: float | None = None  # the reply's speed, once it is complete
    # complete | cancelled | upstream_error; None when no generation ran
    outcome: str | None = None
    # Message text, kept only with LOG_CONTENT=true (None otherwise).
    message: str | None = None
    reply_parts: list[str] | None = None

    def chat(self, agent: Agent, conversation_id: str | None, message: str) -> None:
        """Note what a chat request asks for; the message only when content is logged."""
        self.agent, self.model, self.conversation_id = agent.name, agent.model, conversation_id
        if self.reply_parts is not None:  # LOG_CONTENT=true
            self.message = message
