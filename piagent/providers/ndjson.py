"""Split a byte stream into JSON objects, one per line, handing each on as it completes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

# What bytes.strip() removes; str.strip() would also remove Unicode spaces, which no
# JSON line may consist of.
_BLANK = " \t\n\r\x0b\x0c"
_DECODER = json.JSONDecoder()


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
        complete, _, pending = pending.rpartition(b"\n")
        yield from _parse_lines(complete)
    if pending.strip():  # the last line may lack its newline
        yield from _parse_lines(pending)


def _parse_lines(block: bytes) -> Iterator[list[dict[str, Any]]]:
    # The lines of a read are decoded at once: JSON from text costs half what it costs
    # from bytes, which must first be told apart from UTF-16 and decoded one by one.
    try:
        lines: list[str] | list[bytes] = block.decode().split("\n")
    except UnicodeDecodeError:
        lines = block.split(b"\n")  # the line that is not UTF-8 raises on its own
    objects: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip(_BLANK if isinstance(line, str) else None):
            continue
        try:
            objects.append(_parse(line))
        except MalformedLine:
            if objects:
                yield objects
            raise
    if objects:
        yield objects


def _parse(line: str | bytes) -> dict[str, Any]:
    try:
        value = _DECODER.decode(line if isinstance(line, str) else line.decode())
    except (ValueError, RecursionError) as exc:
        raise MalformedLine(f"not JSON: {_start(line)!r}") from exc
    if not isinstance(value, dict):
        raise MalformedLine(f"not a JSON object: {_start(line)!r}")
    return value


def _start(line: str | bytes) -> bytes:
    return (line.encode() if isinstance(line, str) else line)[:80]
