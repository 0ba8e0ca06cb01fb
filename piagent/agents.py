"""Agents: a system prompt per file in the prompts folder, with optional settings beside it."""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .chat.budget import fit_prompt
from .errors import UnknownAgent
from .messages import Message
from .providers.base import GenerationOptions
from .settings import ConfigError

DEFAULT_AGENT = "general"
SETTINGS_SUFFIX = ".toml"
_AGENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The least a client can send: an agent whose prompt and reply leave no room for it
# could answer nothing at all.
_SHORTEST_MESSAGE = Message("user", "?")


@dataclass(frozen=True, slots=True)
class Agent:
    """A named system prompt and the model settings it runs with."""

    name: str
    system_prompt: str
    model: str
    options: GenerationOptions
    description: str | None = None


class AgentSettings(BaseModel):
    """What `prompts/<name>.toml` may declare; anything left out uses the server's setting."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    description: str | None = Field(None, min_length=1, max_length=500)
    model: str | None = Field(None, min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0)


def load_agents(prompts_dir: Path, *, model: str, options: GenerationOptions) -> dict[str, Agent]:
    """Read every `<name>.<ext>` prompt in `prompts_dir` (and its `<name>.toml`), by name."""
    if not prompts_dir.is_dir():
        raise ConfigError(f"prompts folder {prompts_dir} does not exist")
    files = sorted(p for p in prompts_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    settings = {p.stem: p for p in files if p.suffix == SETTINGS_SUFFIX}
    agents: dict[str, Agent] = {}
    reply_limits: dict[str, str] = {}  # agent -> where its max_tokens comes from
    for path in files:
        if path.suffix == SETTINGS_SUFFIX:
            continue
        name = path.stem
        if not _AGENT_NAME.match(name):
            raise ConfigError(
                f"prompt file {path.name}: an agent name may use only A-Z a-z 0-9 _ -"
            )
        if name in agents:
            raise ConfigError(f"two prompt files define the agent {name!r}")
        prompt = path.read_text(encoding="utf-8").strip()
        if not prompt:
            raise ConfigError(f"prompt file {path.name} is empty")
        extra = _read_settings(settings.pop(name)) if name in settings else AgentSettings()
        agents[name] = Agent(
            name,
            prompt,
            model=extra.model or model,
            options=replace(
                options,
                temperature=options.temperature if extra.temperature is None else extra.temperature,
                max_tokens=extra.max_tokens or options.max_tokens,
            ),
            description=extra.description,
        )
        reply_limits[name] = (
            f"max_tokens in {name}{SETTINGS_SUFFIX}" if extra.max_tokens else "MAX_TOKENS"
        )
    if settings:
        orphan = next(iter(settings.values()))
        raise ConfigError(f"agent settings {orphan.name} have no prompt file beside them")
    if DEFAULT_AGENT not in agents:
        raise ConfigError(
            f"the default agent {DEFAULT_AGENT!r} has no prompt file in {prompts_dir}"
        )
    _check_room(agents, reply_limits, options.ctx_tokens)
    return agents


def find_agent(agents: Mapping[str, Agent], name: str) -> Agent:
    """The agent called `name`, or an UnknownAgent error that lists the known ones."""
    agent = agents.get(name)
    if agent is None:
        raise UnknownAgent(f"unknown agent {name!r}; known agents: {', '.join(agents)}")
    return agent


def _read_settings(path: Path) -> AgentSettings:
    try:
        return AgentSettings.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"agent settings {path.name} are not valid TOML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"agent settings {path.name}: {where}: {first['msg']}") from None


def _check_room(
    agents: Mapping[str, Agent], reply_limits: Mapping[str, str], ctx_tokens: int
) -> None:
    """ConfigError unless each agent's prompt, a shortest message and its reply fit the context."""
    prompts = {name: _prompt_tokens(agent) for name, agent in agents.items()}
    # Name the agent furthest over: the CTX_TOKENS it is told is then enough for all.
    name = max(agents, key=lambda n: prompts[n] + agents[n].options.max_tokens)
    prompt, reply, limit = prompts[name], agents[name].options.max_tokens, reply_limits[name]
    if prompt + reply <= ctx_tokens:
        return
    fixes = f"raise CTX_TOKENS to at least {prompt + reply}"
    if prompt < ctx_tokens:
        fixes += f", lower {limit} to at most {ctx_tokens - prompt}"
    raise ConfigError(
        f"agent {name!r} does not fit CTX_TOKENS={ctx_tokens}: its prompt and the shortest "
        f"message take about {prompt} tokens and its reply up to {reply} ({limit}); "
        f"{fixes}, or shorten its prompt"
    )


def _prompt_tokens(agent: Agent) -> int:
    """The tokens the agent's prompt and the shortest message take, as a chat counts them."""
    # fit_prompt's own estimate, so that this check and each request's agree; with an
    # unbounded context it never refuses.
    fitted = fit_prompt(
        Message("system", agent.system_prompt),
        [],
        _SHORTEST_MESSAGE,
        ctx_tokens=sys.maxsize,
        max_tokens=0,
        token_ratio=None,
    )
    return fitted.estimate
