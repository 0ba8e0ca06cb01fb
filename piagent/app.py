"""The app factory: settings, agents, memory, provider and routes, built once per app."""

from __future__ import annotations

import sys

from flask import Flask

from .agents import load_agents
from .chat.admission import AdmissionGate
from .docs import routes as docs
from .http.auth import install_api_keys, load_api_keys
from .http.errors import register_error_handlers
from .http.request_log import install_request_log
from .http.state import EXTENSION_KEY, AppState
from .memory.factory import open_store
from .openai_api import routes as v1
from .ops.logs import configure_logging
from .ops.metrics import Metrics
from .ops.readiness import ReadinessProbe
from .ops.warmup import start_warmup
from .providers.base import GenerationOptions, Provider, Timeouts
from .providers.ollama import OllamaProvider
from .providers.openai import OpenAIProvider
from .routes import agents, chat, conversations, health, metrics, ready
from .settings import ConfigError, Settings, load_settings
from .web import routes as web

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
        api_keys = load_api_keys(settings)
        memory = open_store(settings, max(a.options.max_tokens for a in agent_table.values()))
    except ConfigError as exc:
        print(f"piagent: cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(_EXIT_APP_LOAD_ERROR) from None

    configure_logging(settings.log_format)
    # No app-wide static folder: the chat page's blueprint serves its own files at /static.
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    provider = provider or _build_provider(settings)
    app_metrics = Metrics()
    state = AppState(
        settings=settings,
        agents=agent_table,
        provider=provider,
        memory=memory,
        metrics=app_metrics,
        admission=AdmissionGate(
            slots=settings.max_concurrent_generations,
            queue_max=settings.queue_max,
            queue_max_per_key=settings.key_queue_max,
            timeout_s=settings.queue_timeout_s,
            observer=app_metrics,
        ),
        # Called only after `state` exists, for the models its agents use.
        readiness=ReadinessProbe(lambda: _check_ready(state), cache_s=settings.ready_cache_s),
    )
    app.extensions[EXTENSION_KEY] = state
    register_error_handlers(app)
    # The request log first, so that even a request refused for its key is logged.
    install_request_log(app, state.metrics, log_content=settings.log_content)
    if api_keys is not None:
        install_api_keys(app, api_keys)
    for module in (health, ready, agents, chat, conversations, v1, metrics):
        app.register_blueprint(module.bp)
    if settings.web_ui:
        app.register_blueprint(web.bp)
    if settings.docs:
        app.register_blueprint(docs.bp)
    if settings.warmup:
        start_warmup(provider, state.models)
    return app


def _check_ready(state: AppState) -> None:
    """Raise what stops chats from being answered: memory out of reach, or the model server."""
    if state.memory is not None:
        state.memory.check()
    state.provider.check_ready(state.models, state.settings.ready_timeout_s)


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
    return OllamaProvider(settings.ollama_host, timeouts, keep_alive=settings.ollama_keep_alive)
