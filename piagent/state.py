"""The per-app state object the factory hangs on `app.extensions`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .agents import Agent
from .memory import ConversationStore
from .providers.base import Provider
from .settings import Settings

EXTENSION_KEY = "piagent"


@dataclass(frozen=True)
class AppState:
    """Everything a view needs, built once by `create_app`."""

    settings: Settings
    agents: dict[str, Agent]
    provider: Provider
    memory: ConversationStore | None  # None when ENABLE_MEMORY is false


def get_state() -> AppState:
    """The state of the app handling the current request."""
    return current_app.extensions[EXTENSION_KEY]
