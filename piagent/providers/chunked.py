"""Undo HTTP/1.1 chunked transfer coding incrementally, whatever the read boundaries.

The streams relayed are read this way rather than one chunk per call through
urllib3: a model server writes each token as its own chunk, and a relay that reads
whatever has arrived (several chunks at once when it falls behind) pays once per
read instead of once per token.
"""

from __future__ import annotations

import re

# As urllib3 allows: a size line (with any extensions) or a trailer line.
_MAX_LINE = 65536
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# A bare size line, as model servers write them: the usual chunk, parsed in one match.
_BARE_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")


class ChunkingError(ValueError):
    """The body breaks the chunked framing."""


class ChunkedDecoder:
    """Feed it the bytes of a chunked body as they are read; it returns the payload in them."""

    def __init__(self) -> None:
        self._state = _SIZE
        self._left = 0  # payload bytes of the current chunk still to come
        self._pending = b""  # an incomplete size, CRLF or trailer line

    @property
    def done(self) -> bool:
        """Whether the last chunk and the trailers have arrived."""
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        """The payload carried by `data`; what follows the end of the body is ignored."""
        if self._pending:
            data, self._pending = self._pending + data, b""
        parts: list[bytes] = []
        pos, end = 0, len(data)
        state = self._state
        if state == _SIZE:
            pos = _whole_chunks(data, parts)
        while pos < end and state != _DONE:
            if state == _DATA:
                stop = min(end, pos + self._left)
                parts.append(data[pos:stop])
                self._left -= stop - pos
                pos = stop
                if self._left == 0:
                    state = _DATA_END
                continue
            if state == _DATA_END:
                if end - pos < 2:
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise ChunkingError("a chunk is longer than its size says")
                pos += 2
                state = _SIZE
                continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                if end - pos > _MAX_LINE:
                    raise ChunkingError("a chunk size line is too long")
                break
            line = data[pos:eol]
            pos = eol + 1
            if state == _TRAILER:
                state = _TRAILER if line.strip() else _DONE
                continue
            size = _chunk_size(line)
            if size:
                self._left = size
                state = _DATA
            else:
                state = _TRAILER
        self._state = state
        if pos < end and state != _DONE:
            self._pending = data[pos:]
        return b"".join(parts) if len(parts) != 1 else parts[0]


def _whole_chunks(data: bytes, parts: list[bytes]) -> int:
    """Add the payloads of the complete chunks at the start of `data`; return where they end.

    Stops at anything else (a chunk cut short, the last chunk, an extension, broken
    framing), which the state machine then reads from there.
    """
    pos = 0
    size_line = _BARE_SIZE_LINE.match
    while (line := size_line(data, pos)) is not None:
        start = line.end()
        stop = start + int(line[1], 16)
        if stop == start or data[stop : stop + 2] != b"\r\n":
            break
        parts.append(data[start:stop])
        pos = stop + 2
    return pos


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip()
    if not _HEX.fullmatch(digits):
        raise ChunkingError(f"not a chunk size: {line[:40]!r}")
    return int(digits, 16)
