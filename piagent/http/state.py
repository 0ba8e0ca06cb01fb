"""The per-app state object the factory hangs on `app.extensions`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from ..agents import Agent
from ..chat.admission import AdmissionGate
from ..memory.base import ConversationStore
from ..ops.metrics import Metrics
from ..ops.readiness import ReadinessProbe
from ..providers.base import Provider
from ..settings import Settings

EXTENSION_KEY = "piagent"


@dataclass(frozen=True)
class AppState:
    """Everything a view needs, built once by `create_app`."""

    settings: Settings
    agents: dict[str, Agent]
    provider: Provider
    memory: ConversationStore | None  # None when ENABLE_MEMORY is false
    metrics: Metrics
    admission: AdmissionGate  # per worker: at most MAX_CONCURRENT_GENERATIONS at once
    readiness: ReadinessProbe

    @property
    def models(self) -> list[str]:
        """Every model an agent uses, each once."""
        return sorted({agent.model for agent in self.agents.values()})


def get_state() -> AppState:
    """The state of the app handling the current request."""
    return current_app.extensions[EXTENSION_KEY]
