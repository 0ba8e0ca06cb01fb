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
    except ValueError as exc:  # ConfigError naming the file
        return failed(
            f"agents: {exc}",
            f"correct the file it names in {settings.prompts_dir} (PROMPTS_DIR)",
        ), None
    return passed(f"agents: {', '.join(agents)} (from {settings.prompts_dir})"), agents


def check_context(settings: Settings, agents: Mapping[str, Agent]) -> Iterator[Check]:
    """Each agent's prompt plus its MAX_TOKENS must leave CTX_TOKENS room for a question."""
    from ...chat.budget import fit_prompt
    from ...errors import MessageTooLong
    from ...messages import Message

    tightest: tuple[int, str] | None = None
    all_fit = True
    for agent in agents.values():
        ctx, reply = agent.options.ctx_tokens, agent.options.max_tokens
        try:
            fitted = fit_prompt(
                Message("system", agent.system_prompt),
                [],
                Message("user", _SHORTEST_QUESTION),
                ctx_tokens=ctx,
                max_tokens=reply,
                token_ratio=None,
            )
        except MessageTooLong as exc:
            all_fit = False
            yield failed(
                f"context: agent {agent.name}'s prompt takes about {exc.needed} tokens, but "
                f"CTX_TOKENS {ctx} minus MAX_TOKENS {reply} for the reply leaves {exc.room}",
                f"raise CTX_TOKENS well above {exc.needed + reply} (questions and history "
                f"need room too), lower MAX_TOKENS (or max_tokens in {agent.name}.toml), or "
                f"shorten the prompt file {agent.name}.* in {settings.prompts_dir}",
            )
            continue
        left = ctx - reply - fitted.estimate
        if tightest is None or left < tightest[0]:
            tightest = (left, agent.name)
    if tightest is not None and all_fit:
        left, name = tightest
        yield passed(
            f"context: each agent's prompt and reply fit CTX_TOKENS (the tightest, {name}, "
            f"leaves about {left} tokens for the conversation)"
        )
