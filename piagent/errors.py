"""What can go wrong while answering, in words a user can act on; no HTTP here.

Each error carries a `detail` (the sentence, or a list of field errors) and the facts
a caller may need. The HTTP layer (`piagent.http.errors`) picks the status and body.
"""

from __future__ import annotations

from typing import Any


class PiagentError(Exception):
    """A failure the client is told about, with a detail it can act on."""

    def __init__(self, detail: Any) -> None:
        super().__init__(detail)
        self.detail = detail


class UnknownAgent(PiagentError):
    """The request names an agent that does not exist."""


class UnknownConversation(PiagentError):
    """No conversation is remembered under this id."""


class ConversationBusy(PiagentError):
    """Another request on the same conversation is still being answered."""


class MessageTooLong(PiagentError):
    """The new message and the agent's prompt alone do not fit the model's context."""

    def __init__(self, *, needed: int, room: int, ctx_tokens: int, max_tokens: int) -> None:
        super().__init__(
            f"the message and the agent's instructions need about {needed} tokens, but the "
            f"model's context leaves {room} for them (CTX_TOKENS {ctx_tokens} minus "
            f"MAX_TOKENS {max_tokens} for the reply); shorten the message"
        )
        self.needed = needed
        self.room = room


class MemoryUnavailable(PiagentError):
    """The store (a SQLite file, a Redis server) cannot be used right now."""


class ReplyNotKept(MemoryUnavailable):
    """The model answered, but the store failed before the exchange was kept.

    Unlike the other memory failures, this one comes after the model has worked, so it is
    not a refusal a balancer may pass on to another server.
    """


class NotReady(PiagentError):
    """The model server or the memory cannot serve yet."""


class Unauthorized(PiagentError):
    """A missing or wrong API key; `challenge` is what the client is told to send."""

    def __init__(self, detail: str, *, challenge: str = "Bearer") -> None:
        super().__init__(detail)
        self.challenge = challenge


class ClientGone(PiagentError):
    """The client closed its connection; nobody is left to answer."""


class UpstreamError(PiagentError):
    """The model server failed: unreachable, answered an error, or sent garbage."""

    kind = "error"  # the label of piagent_upstream_errors_total


class UpstreamRejected(UpstreamError):
    """The model server refused the request itself (a parameter, a prompt too long).

    Sending it again cannot succeed, so it is the client's 400, never a 502 that an
    SDK retries.
    """

    kind = "rejected"


class UpstreamUnreachable(UpstreamError):
    """No connection to the model server could be made."""

    kind = "unreachable"


class UpstreamTimeout(UpstreamError):
    """The model server took longer than its timeout."""

    kind = "timeout"


class UpstreamBusy(UpstreamError):
    """The model server said it is busy; the client may retry after `retry_after_s`."""

    kind = "busy"

    def __init__(self, detail: str, *, retry_after_s: int = 5) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Overloaded(UpstreamBusy):
    """piagent's own queue for the model is full, or a queued request waited too long.

    A kind of UpstreamBusy, so that every stream path reports it as the model being
    busy, even once an SSE stream has started (heartbeats while queued).
    """
