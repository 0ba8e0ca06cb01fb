"""The trace of the request being handled, kept in Flask's request context."""

from __future__ import annotations

from flask import g

from ..ops.trace import RequestTrace


def current_trace() -> RequestTrace:
    """The trace of the request being handled, made on first use."""
    if "piagent_trace" not in g:
        g.piagent_trace = RequestTrace()
    return g.piagent_trace
