"""Conversation memory: the store contract and its backends (chosen in `factory`)."""

from __future__ import annotations

from .base import (
    ConversationStore,
    MemoryLimits,
    MemoryUnavailable,
    Message,
    NewExchange,
    Recollection,
    StoredMessage,
)
from .in_process import InProcessStore
from .sqlite_store import SqliteStore

__all__ = [
    "ConversationStore",
    "InProcessStore",
    "MemoryLimits",
    "MemoryUnavailable",
    "Message",
    "NewExchange",
    "Recollection",
    "SqliteStore",
    "StoredMessage",
]
