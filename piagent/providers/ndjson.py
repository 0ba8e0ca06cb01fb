"""Split a byte stream into JSON objects, one per line, handing each on as it completes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


class MalformedLine(ValueError):
    """A line that is not a JSON object."""


def iter_ndjson(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Yield each object as soon as its newline arrives, whatever the read boundaries."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield _parse(line)
    if pending.strip():  # the last line may lack its newline
        yield _parse(pending)


def _parse(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise MalformedLine(f"not JSON: {line[:80]!r}") from exc
    if not isinstance(value, dict):
        raise MalformedLine(f"not a JSON object: {line[:80]!r}")
    return value
