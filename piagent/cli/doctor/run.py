"""Run every check in the order a deployment depends on them, and print the report."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dotenv import dotenv_values

from .config import check_agents, check_context, check_settings
from .memory import check_memory
from .model_server import check_model_server
from .nginx import check_nginx
from .report import Check, Report, failed, not_applicable
from .service import check_piagent, check_systemd

if TYPE_CHECKING:
    from ...settings import Settings

# gunicorn's own settings, which gunicorn.conf.py reads from the same .env and environment.
_DEFAULT_BIND = "127.0.0.1:8000"
_DEFAULT_GRACEFUL_TIMEOUT = "30"


def run_doctor(url: str, env_file: Path, nginx_conf: Path) -> int:
    """Print one line per check (and the fix of each failure); 1 when any failed, else 0."""
    report = Report()
    for check in _checks(url, env_file, nginx_conf):
        report.add(check)
    print(report.summary())
    return 1 if report.failures else 0


def _checks(url: str, env_file: Path, nginx_conf: Path) -> Iterator[Check]:
    check, settings = check_settings(env_file)
    yield check
    if settings is None:
        yield not_applicable("agents, model server, memory: not checked until the settings load")
    else:
        yield from _model_and_memory(settings)
    yield from check_piagent(url)
    gunicorn_env = _gunicorn_env(env_file)
    if settings is None:
        yield not_applicable("nginx: not checked until the settings load")
    else:
        yield from check_nginx(nginx_conf, settings, gunicorn_env.get("BIND") or _DEFAULT_BIND)
    graceful = gunicorn_env.get("GRACEFUL_TIMEOUT") or _DEFAULT_GRACEFUL_TIMEOUT
    try:
        graceful_s = float(graceful)
    except ValueError:
        yield failed(
            f"GRACEFUL_TIMEOUT={graceful!r} is not a number: gunicorn will not start",
            f"set GRACEFUL_TIMEOUT to seconds (default 30) in {env_file} or the environment",
        )
        return
    yield from check_systemd(graceful_s)


def _model_and_memory(settings: Settings) -> Iterator[Check]:
    check, agents = check_agents(settings)
    yield check
    if agents is None:
        yield not_applicable("model server, models, context: not checked until the agents load")
        longest_reply = settings.max_tokens
    else:
        yield from check_model_server(settings, agents)
        yield from check_context(settings, agents)
        longest_reply = max(agent.options.max_tokens for agent in agents.values())
    yield check_memory(settings, longest_reply)


def _gunicorn_env(env_file: Path) -> dict[str, str | None]:
    """The variables as gunicorn.conf.py sees them: the .env file under the environment."""
    try:
        values = dotenv_values(env_file) if env_file.is_file() else {}
    except OSError:  # unreadable: the settings check has said so
        values = {}
    return {**values, **os.environ}
