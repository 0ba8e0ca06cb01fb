"""Split a server-sent-events byte stream into the data of each event, as each completes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# The SSE format allows CRLF, LF or a lone CR at the end of a line.
_LINE_END = re.compile(rb"\r\n|\r|\n")


class MalformedEvent(ValueError):
    """An event stream that cannot be read."""


def iter_sse_data(reads: Iterable[bytes]) -> Iterator[list[str]]:
    """Yield, for each read, the data of the events whose blank line it brought.

    Comments, `event:`, `id:` and `retry:` fields are skipped; several `data:` lines in
    one event are joined with newlines. An event the stream cuts off is dropped.
    """
    pending = b""
    data: list[str] = []
    after_cr = False
    for chunk in reads:
        if not chunk:
            continue
        # A CR at the end of the last read may be the first half of a CRLF.
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        pending += chunk
        *lines, pending = _LINE_END.split(pending)
        events: list[str] = []
        try:
            for line in lines:
                if line:
                    _add_field(line, data)
                elif data:
                    events.append("\n".join(data))
                    data = []
        except MalformedEvent:
            if events:  # what came before the unreadable line is handed on first
                yield events
            raise
        if events:
            yield events


def _add_field(line: bytes, data: list[str]) -> None:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedEvent(f"not UTF-8: {line[:80]!r}") from None
    if text.startswith(":"):
        return  # a comment, e.g. a keep-alive ping
    field, _, value = text.partition(":")
    if field == "data":
        data.append(value.removeprefix(" "))
