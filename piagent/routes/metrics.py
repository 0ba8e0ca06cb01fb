"""Prometheus metrics in the text exposition format."""

from __future__ import annotations

from flask import Blueprint, Response

from ..http.apidoc import Media, operation
from ..http.state import get_state
from ..http.stream_formats import TEXT

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@operation(reply_text="Every metric, in Prometheus' text format.", media=(Media(TEXT),))
def metrics() -> Response:
    """Every piagent metric, summed over the workers when there are several."""
    state = get_state()
    conversations = len(state.memory) if state.memory is not None else None
    body, content_type = state.metrics.render(conversations)
    return Response(body, content_type=content_type)
