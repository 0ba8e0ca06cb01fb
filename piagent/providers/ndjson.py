"""Split a byte stream into JSON objects, one per line, handing each on as it completes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


class MalformedLine(ValueError):
    """A line that is not a JSON object."""


def iter_ndjson(reads: Iterable[bytes]) -> Iterator[list[dict[str, Any]]]:
    """Yield, for each read, the objects whose newline it brought (reads that end none: nothing).

    A malformed line raises only once the objects before it have been handed on.
    """
    pending = b""
    for data in reads:
        pending += data
        if b"\n" not in data:
            continue
        *lines, pending = pending.split(b"\n")
        yield from _parse_all(lines)
    if pending.strip():  # the last line may lack its newline
        yield from _parse_all([pending])


def _parse_all(lines: list[bytes]) -> Iterator[list[dict[str, Any]]]:
    objects: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            objects.append(_parse(line))
        except MalformedLine:
            if objects:
                yield objects
            raise
    if objects:
        yield objects


def _parse(line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise MalformedLine(f"not JSON: {line[:80]!r}") from exc
    if not isinstance(value, dict):
        raise MalformedLine(f"not a JSON object: {line[:80]!r}")
    return value
