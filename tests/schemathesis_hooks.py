"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) so it can read piagent's NDJSON streams."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.deserializer("application/x-ndjson")
def ndjson_events(_context: Any, response: Any) -> list[Any]:
    """An NDJSON stream as the array of events the document describes for it."""
    return [json.loads(line) for line in response.content.decode().splitlines() if line]
