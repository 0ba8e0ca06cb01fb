"""Liveness: answers without touching anything else."""

from __future__ import annotations

from flask import Blueprint

from ..docs.apidoc import operation
from ..http.schemas import HealthReply

bp = Blueprint("health", __name__)


@bp.get("/health")
@operation(reply=HealthReply)
def health() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}
