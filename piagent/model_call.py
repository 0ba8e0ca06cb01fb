"""The one wrapper every view puts around its call to the model."""

from __future__ import annotations

from collections.abc import Callable

from .providers.base import ChatStream
from .state import get_state
from .trace import current_trace, observed


def admit_and_observe(open_upstream: Callable[[], ChatStream]) -> Callable[[], ChatStream]:
    """Wait for a place to talk to the model (or 503), then time and count the reply."""
    state = get_state()
    return state.admission.admit(observed(open_upstream, current_trace(), state.metrics))
