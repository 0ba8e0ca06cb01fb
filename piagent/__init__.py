"""piagent: a small agent server in front of a local Ollama, for a Raspberry Pi."""

from __future__ import annotations

import logging
import sys

from flask import Flask

from .agents import load_agents
from .api import agents, chat, conversations, health, v1
from .errors import register_error_handlers
from .memory.factory import open_store
from .providers.base import GenerationOptions, Provider, Timeouts
from .providers.ollama import OllamaProvider
from .providers.openai import OpenAIProvider
from .settings import ConfigError, Settings, load_settings
from .state import EXTENSION_KEY, AppState

# gunicorn halts (instead of respawning the worker forever) on this exit code.
_EXIT_APP_LOAD_ERROR = 4


def create_app(settings: Settings | None = None, *, provider: Provider | None = None) -> Flask:
    """Build the app: settings (from the environment unless given), agents, memory, routes."""
    try:
        settings = settings or load_settings()
        defaults = GenerationOptions(settings.temperature, settings.ctx_tokens, settings.max_tokens)
        agent_table = load_agents(
            settings.prompts_dir, model=settings.default_model, options=defaults
        )
        memory = open_store(settings, max(a.options.max_tokens for a in agent_table.values()))
    except ConfigError as exc:
        print(f"piagent: cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(_EXIT_APP_LOAD_ERROR) from None

    _configure_logging()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions[EXTENSION_KEY] = AppState(
        settings=settings,
        agents=agent_table,
        provider=provider or _build_provider(settings),
        memory=memory,
    )
    register_error_handlers(app)
    for module in (health, agents, chat, conversations, v1):
        app.register_blueprint(module.bp)
    return app


def _build_provider(settings: Settings) -> Provider:
    timeouts = Timeouts(
        connect_s=settings.connect_timeout_s,
        reply_s=settings.reply_timeout_s,
        first_token_s=settings.first_token_timeout_s,
        stream_idle_s=settings.stream_idle_timeout_s,
        stream_total_s=settings.stream_total_timeout_s,
    )
    if settings.provider == "openai":
        key = settings.openai_api_key
        api_key = key.get_secret_value() if key else None
        return OpenAIProvider(settings.openai_base_url, timeouts, api_key=api_key)
    return OllamaProvider(settings.ollama_host, timeouts)


def _configure_logging() -> None:
    """Give the `piagent` logger a stderr handler unless the host configured logging."""
    logger = logging.getLogger("piagent")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] [%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
