"""The list of agents a client may choose from."""

from __future__ import annotations

from flask import Blueprint

from ..state import get_state

bp = Blueprint("agents", __name__)


@bp.get("/agents")
def list_agents() -> dict[str, list[str]]:
    """Names of every available agent."""
    return {"agents": list(get_state().agents)}
