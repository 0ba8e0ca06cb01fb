"""The chat message, shared by the memory, the providers and the HTTP layer."""

from __future__ import annotations

from dataclasses import dataclass

# The longest message a client may send; the memory keeps at least this much of each.
MESSAGE_MAX_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message as the model sees it."""

    role: str  # "system", "user" or "assistant"
    content: str
