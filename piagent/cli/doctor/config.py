"""The settings and agents, read as the server reads them; does each agent fit its context?"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .report import Check, failed, passed

if TYPE_CHECKING:
    from ...agents import Agent
    from ...settings import Settings

# A question as short as can be: what an agent's prompt must leave room for at the least.
_SHORTEST_QUESTION = "?"


def check_settings(env_file: Path) -> tuple[Check, Settings | None]:
    """Load the settings with the server's own loader, from `env_file` and the environment."""
    from ...settings import load_settings

    where = f"{env_file} and the environment" if env_file.is_file() else "the environment"
    try:
        settings = load_settings(env_file=env_file)
    except OSError as exc:
        return failed(
            f"settings: cannot read {env_file} ({exc.strerror})",
            "run doctor as a user that can read it (sudo, or a member of its group)",
        ), None
    except ValueError as exc:  # ConfigError: one line naming the variable and the value
        return failed(
            f"settings from {where}: {exc}",
            f"correct that variable in {env_file} or in the environment "
            "(config/piagent.env.example lists each one with its default)",
        ), None
    return passed(
        f"settings load from {where} "
        f"(PROVIDER={settings.provider}, MEMORY_BACKEND={settings.memory_backend})"
    ), settings


def check_agents(settings: Settings) -> tuple[Check, dict[str, Agent] | None]:
    """Read every agent as the server does at start."""
    from ...agents import load_agents
    from ...providers.base import GenerationOptions

    defaults = GenerationOptions(settings.temperature, settings.ctx_tokens, settings.max_tokens)
    try:
        agents = load_agents(settings.prompts_dir, model=settings.default_model, options=defaults)
    except ValueError as exc:  # ConfigError naming the file, or an agent too big for its context
        return failed(
            f"agents: {exc}",
            f"do what it says: the prompt files are in {settings.prompts_dir} (PROMPTS_DIR), "
            "the limits are CTX_TOKENS and MAX_TOKENS",
        ), None
    return passed(f"agents: {', '.join(agents)} (from {settings.prompts_dir})"), agents


def check_context(settings: Settings, agents: Mapping[str, Agent]) -> Iterator[Check]:
    """How much room the tightest agent leaves for a conversation (load_agents refused misfits)."""
    from ...chat.budget import fit_prompt
    from ...messages import Message

    tightest: tuple[int, str] | None = None
    for agent in agents.values():
        ctx, reply = agent.options.ctx_tokens, agent.options.max_tokens
        # load_agents has refused any agent that does not fit, so each one does here.
        fitted = fit_prompt(
            Message("system", agent.system_prompt),
            [],
            Message("user", _SHORTEST_QUESTION),
            ctx_tokens=ctx,
            max_tokens=reply,
            token_ratio=None,
        )
        left = ctx - reply - fitted.estimate
        if tightest is None or left < tightest[0]:
            tightest = (left, agent.name)
    if tightest is not None:
        left, name = tightest
        yield passed(
            f"context: each agent's prompt and reply fit CTX_TOKENS (the tightest, {name}, "
            f"leaves about {left} tokens for the conversation)"
        )
