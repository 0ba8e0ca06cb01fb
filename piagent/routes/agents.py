"""The agents a client may choose from, and what each one runs with."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..agents import find_agent
from ..docs.apidoc import operation
from ..errors import UnknownAgent
from ..http.schemas import AgentDetails, AgentList, AgentPath
from ..http.state import get_state

bp = Blueprint("agents", __name__)


@bp.get("/agents")
@operation(reply=AgentList)
def list_agents() -> dict[str, list[str]]:
    """Names of every available agent."""
    return {"agents": list(get_state().agents)}


@bp.get("/agents/<name>")
@operation(reply=AgentDetails, path=AgentPath, raises=(UnknownAgent,))
def agent_details(name: str) -> dict[str, Any]:
    """One agent: its description, system prompt, and the model settings it runs with."""
    state = get_state()
    agent = find_agent(state.agents, name)
    return {
        "name": agent.name,
        "description": agent.description,
        "provider": state.provider.name,
        "model": agent.model,
        "temperature": agent.options.temperature,
        "max_tokens": agent.options.max_tokens,
        "system_prompt": agent.system_prompt,
    }
