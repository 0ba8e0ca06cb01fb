"""Prometheus metrics in the text exposition format."""

from __future__ import annotations

from flask import Blueprint, Response

from ..docs.apidoc import Media, operation
from ..errors import MemoryUnavailable
from ..http.state import get_state
from ..http.stream_formats import TEXT

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@operation(reply_text="Every metric, in Prometheus' text format.", media=(Media(TEXT),))
def metrics() -> Response:
    """Every piagent metric, summed over the workers when there are several."""
    state = get_state()
    conversations, memory_up = None, True
    if state.memory is not None:
        try:
            conversations = len(state.memory)
        except MemoryUnavailable:
            memory_up = False
    body, content_type = state.metrics.render(conversations, memory_up=memory_up)
    return Response(body, content_type=content_type)
