"""A minimal HTTP/1.1 client on a raw socket, to see exactly how a response ends."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


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


def read_head(reader) -> tuple[int, dict[str, str]]:
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
    reader = sock.makefile("rb")
    status, headers = read_head(reader)
    response = RawResponse(status, headers)
    if headers.get("transfer-encoding", "").lower() != "chunked":
        length = int(headers.get("content-length", "0"))
        data = reader.read(length)
        response.chunks.append(data)
        response.complete = len(data) == length
        return response
    try:
        _read_chunks(reader, response, max_chunks)
    except ConnectionError:
        pass  # a reset: the response stays incomplete
    return response


def _read_chunks(reader, response: RawResponse, max_chunks: int | None) -> None:
    while max_chunks is None or len(response.chunks) < max_chunks:
        size_line = reader.readline()
        if not size_line.endswith(b"\n"):
            return  # connection closed mid-body
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            response.complete = reader.readline() == b"\r\n"
            return
        data = reader.read(size)
        if len(data) < size or reader.read(2) != b"\r\n":
            return
        response.chunks.append(data)
        response.arrival_times.append(time.monotonic())


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
