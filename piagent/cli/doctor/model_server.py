"""The model server: does it answer at the configured URL, and does it have every agent's model?"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .report import Check, failed, passed

if TYPE_CHECKING:
    from ...agents import Agent
    from ...providers.http import UpstreamClient
    from ...settings import Settings

# Longer than the server's READY_TIMEOUT_S: a doctor may wait for a model server that
# is busy loading a model, where /ready would rather answer at once.
TIMEOUT_S = 5.0


def check_model_server(settings: Settings, agents: Mapping[str, Agent]) -> Iterator[Check]:
    """Reachability and version, then one line per model the agents use."""
    from ...errors import UpstreamError

    client = _client(settings)
    ollama = settings.provider == "ollama"
    listing_path = "/api/tags" if ollama else "/models"
    try:
        version = client.get_json("/api/version", TIMEOUT_S)["version"] if ollama else None
        listing = client.get_json(listing_path, TIMEOUT_S, headers=_auth(settings))
        served = _model_names(listing, ollama=ollama)
    except UpstreamError as exc:
        yield failed(f"model server: {exc.detail}", _start_fix(settings))
        return
    except (KeyError, TypeError):
        yield failed(
            f"model server: {client.server} at {client.base_url} answered {listing_path} "
            "with something that is not a model list",
            f"check that {_variable(settings)} points at the model server and not at "
            "another service",
        )
        return
    about = f"{client.server} {version}" if version else client.server
    yield passed(f"model server: {about} answers at {client.base_url}")

    for model, users in _models_in_use(agents).items():
        used_by = f"agent{'s' if len(users) > 1 else ''} {', '.join(users)}"
        if _has(served, model, ollama=ollama):
            yield passed(f"model {model} is available ({used_by})")
        elif ollama:
            yield failed(f"model {model} is not pulled ({used_by})", f"ollama pull {model}")
        else:
            yield failed(
                f"model {model} is not served at {client.base_url} ({used_by}); it serves: "
                f"{', '.join(sorted(served)) or 'nothing'}",
                f"load {model} in that server, or set OPENAI_MODEL (or `model` in the "
                "agent's .toml) to a model it serves",
            )


def _client(settings: Settings) -> UpstreamClient:
    from ...providers.base import Timeouts
    from ...providers.http import UpstreamClient

    timeouts = Timeouts(
        connect_s=settings.connect_timeout_s,
        reply_s=TIMEOUT_S,
        first_token_s=TIMEOUT_S,
        stream_idle_s=TIMEOUT_S,
        stream_total_s=TIMEOUT_S,
    )
    if settings.provider == "ollama":
        return UpstreamClient("Ollama", settings.ollama_host, "OLLAMA_HOST", timeouts)
    return UpstreamClient(
        "the OpenAI-compatible server", settings.openai_base_url, "OPENAI_BASE_URL", timeouts
    )


def _auth(settings: Settings) -> dict[str, str]:
    key = settings.openai_api_key
    if settings.provider == "openai" and key is not None:
        return {"Authorization": f"Bearer {key.get_secret_value()}"}
    return {}


def _variable(settings: Settings) -> str:
    return "OLLAMA_HOST" if settings.provider == "ollama" else "OPENAI_BASE_URL"


def _start_fix(settings: Settings) -> str:
    if settings.provider == "ollama":
        return (
            "start Ollama (sudo systemctl start ollama, or `ollama serve`), or set "
            "OLLAMA_HOST to the address it listens on"
        )
    return (
        "start the model server, or set OPENAI_BASE_URL to its API root (usually ending "
        "in /v1) and OPENAI_API_KEY if it wants one"
    )


def _model_names(listing: Any, *, ollama: bool) -> set[str]:
    if ollama:
        return {entry["name"] for entry in listing["models"]}
    return {entry["id"] for entry in listing["data"]}


def _has(served: set[str], model: str, *, ollama: bool) -> bool:
    # Ollama reads a model name without a tag as its `latest` tag, as the server does.
    return model in served or (ollama and ":" not in model and f"{model}:latest" in served)


def _models_in_use(agents: Mapping[str, Agent]) -> dict[str, list[str]]:
    """Each model, with the agents that use it."""
    users: dict[str, list[str]] = {}
    for agent in agents.values():
        users.setdefault(agent.model, []).append(agent.name)
    return users
