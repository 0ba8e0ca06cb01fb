"""Split a byte stream into JSON objects, one per line, handing each on as it completes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

# What bytes.strip() removes; str.strip() would also remove Unicode spaces, which no
# JSON line may consist of.
_BLANK = " \t\n\r\x0b\x0c"
_DECODER = json.JSONDecoder()
# The decoder's C scanner: one value from a position, without JSONDecoder.decode's
# Python around it (skipping whitespace twice), which cost as much as the parse.
_SCAN = _DECODER.scan_once


class MalformedLine(ValueError):
    """A line that is not a JSON object."""


def iter_ndjson(reads: Iterable[bytes]) -> Iterator[list[dict[str, Any]]]:
    """Yield, for each read, the objects whose newline it brought (reads that end none: nothing).

    A malformed line raises only once the objects before it have been handed on.
    """
    pending = b""
    for data in chain(reads, [b"\n"]):  # the last line may lack its newline
        last = data.rfind(b"\n")
        if last < 0:
            pending += data
            continue
        # Usually the read is whole lines and nothing is pending: no bytes are copied.
        block, pending = pending + data[: last + 1], data[last + 1 :]
        objects, failure = _parse_lines(block)
        if objects:
            yield objects
        if failure is not None:
            raise failure


def _parse_lines(block: bytes) -> tuple[list[dict[str, Any]], MalformedLine | None]:
    """The objects of the block's lines up to a malformed one, and that line's error."""
    # The lines of a read are decoded at once: JSON from text costs half what it costs
    # from bytes, which must first be told apart from UTF-16 and decoded one by one.
    try:
        lines: list[str] | list[bytes] = block.decode().split("\n")
    except UnicodeDecodeError:
        lines = block.split(b"\n")  # the line that is not UTF-8 raises on its own
    objects: list[dict[str, Any]] = []
    for line in lines:
        if not line:
            continue
        try:
            value = _parse(line)
        except MalformedLine as exc:
            return objects, exc
        if value is not None:
            objects.append(value)
    return objects, None


def _parse(line: str | bytes) -> dict[str, Any] | None:
    """The line's object; None for a line of whitespace."""
    if isinstance(line, str):
        try:
            value, end = _SCAN(line, 0)
        except (StopIteration, ValueError, RecursionError):
            pass  # leading whitespace, or not JSON: told apart below
        else:
            if end == len(line) and isinstance(value, dict):
                return value  # the usual line: one object, nothing around it
    if not line.strip(_BLANK if isinstance(line, str) else None):
        return None
    try:
        value = _DECODER.decode(line if isinstance(line, str) else line.decode())
    except (ValueError, RecursionError) as exc:
        raise MalformedLine(f"not JSON: {_start(line)!r}") from exc
    if not isinstance(value, dict):
        raise MalformedLine(f"not a JSON object: {_start(line)!r}")
    return value


def _start(line: str | bytes) -> bytes:
    return (line.encode() if isinstance(line, str) else line)[:80]
