"""Readiness: 200 once the model server answers and has every model the agents use."""

from __future__ import annotations

from flask import Blueprint

from ..docs.apidoc import operation
from ..errors import NotReady
from ..http.schemas import ReadyReply
from ..http.state import get_state

bp = Blueprint("ready", __name__)


@bp.get("/ready")
@operation(reply=ReadyReply, raises=(NotReady,))
def ready() -> dict[str, object]:
    """Ready to answer chats, or 503 saying what to do."""
    state = get_state()
    problem = state.readiness.problem()
    if problem is not None:
        raise NotReady(problem)
    return {"status": "ready", "models": state.models}
