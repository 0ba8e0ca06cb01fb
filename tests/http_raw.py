"""A minimal HTTP/1.1 client on a raw socket, to see exactly how a response ends.

Its chunk reader is also the fake Ollama's, for chunked request bodies.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import urlsplit

# Longest size or trailer line read, so that a runaway line cannot fill the memory.
_MAX_LINE = 65537


@dataclass
class RawResponse:
    """A response read off the wire: chunks as received, and whether it ended properly."""

    status: int
    headers: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)
    arrival_times: list[float] = field(default_factory=list)
    complete: bool = False  # the terminating zero-size chunk (or the full Content-Length) arrived

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def encode_request(
    url: str, path: str, body: bytes | dict, headers: dict[str, str] | None = None
) -> bytes:
    """The bytes of a POST of `body` (a dict is sent as JSON)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {urlsplit(url).netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def send_request(
    url: str, path: str, body: bytes | dict, headers: dict[str, str] | None = None
) -> socket.socket:
    """POST `body` and return the connected socket, before reading anything."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(encode_request(url, path, body, headers))
    return sock


def read_head(reader: BinaryIO) -> tuple[int, dict[str, str]]:
    """The status and the headers (names in lower case) of a response."""
    status_line = reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before a status line")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def read_response(sock: socket.socket, *, max_chunks: int | None = None) -> RawResponse:
    """Read a response, chunk by chunk; stop early after `max_chunks` body chunks."""
    return read_response_from(sock.makefile("rb"), max_chunks=max_chunks)


def read_response_from(reader: BinaryIO, *, max_chunks: int | None = None) -> RawResponse:
    """Read one response off `reader`, which may carry more on the same connection."""
    status, headers = read_head(reader)
    response = RawResponse(status, headers)
    if headers.get("transfer-encoding", "").lower() != "chunked":
        length = int(headers.get("content-length", "0"))
        data = reader.read(length)
        response.chunks.append(data)
        response.complete = len(data) == length
        return response
    try:
        while max_chunks is None or len(response.chunks) < max_chunks:
            data = read_chunk(reader)
            if not data:  # the last chunk (b"") or a cut (None)
                response.complete = data == b""
                break
            response.chunks.append(data)
            response.arrival_times.append(time.monotonic())
    except ConnectionError:
        pass  # a reset: the response stays incomplete
    return response


def read_chunk(reader: BinaryIO) -> bytes | None:
    """The data of the next chunk of a chunked body: b"" for the last one, None if cut short.

    Extensions are ignored and trailers skipped; a broken frame counts as cut short.
    """
    size_line = reader.readline(_MAX_LINE)
    if not size_line.endswith(b"\n"):
        return None  # closed mid-body
    try:
        size = int(size_line.split(b";")[0], 16)
    except ValueError:
        return None
    if size < 0:
        return None
    if size == 0:
        while (trailer := reader.readline(_MAX_LINE)) not in (b"\r\n", b"\n"):
            if not trailer.endswith(b"\n"):
                return None
        return b""
    data = reader.read(size + 2)
    return data[:size] if len(data) == size + 2 and data.endswith(b"\r\n") else None


def sse_events(raw: bytes) -> tuple[list[dict], list[str]]:
    """Split an SSE body into its data objects and its comments."""
    events, comments = [], []
    for block in raw.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
            elif line.startswith(":"):
                comments.append(line)
    return events, comments
