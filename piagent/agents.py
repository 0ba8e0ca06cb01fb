"""Agents: one system prompt per file in the prompts folder, read once at start."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .settings import ConfigError

DEFAULT_AGENT = "general"
_AGENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Agent:
    """A named system prompt."""

    name: str
    system_prompt: str


def load_agents(prompts_dir: Path) -> dict[str, Agent]:
    """Read every `<name>.<ext>` file in `prompts_dir` as an agent, sorted by name."""
    if not prompts_dir.is_dir():
        raise ConfigError(f"prompts folder {prompts_dir} does not exist")
    agents: dict[str, Agent] = {}
    for path in sorted(prompts_dir.iterdir()):
        if not path.is_file() or path.name.startswith("."):
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
        agents[name] = Agent(name, prompt)
    if DEFAULT_AGENT not in agents:
        raise ConfigError(
            f"the default agent {DEFAULT_AGENT!r} has no prompt file in {prompts_dir}"
        )
    return agents
