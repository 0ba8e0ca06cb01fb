"""The three shapes of a streamed reply, chosen by the client's Accept header."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from json.encoder import encode_basestring
from typing import Any

from werkzeug.datastructures import MIMEAccept

TEXT = "text/plain"
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"

# Stands for a fragment in a delta framed once per stream; no real payload holds a NUL.
_SLOT = "\x00fragment\x00"


@dataclass(frozen=True)
class StreamFormat:
    """How fragments, the end and a failure are written for one media type."""

    media_type: str
    content_type: str

    @property
    def structured(self) -> bool:
        """Whether the stream carries event objects (SSE, NDJSON) rather than bare text."""
        return self.media_type != TEXT

    def event(self, payload: dict[str, Any]) -> bytes:
        """One event object, framed for this format."""
        return self._framed(payload).encode()

    def delta_payload(self, text: str) -> dict[str, Any]:
        """The event that carries one fragment of the reply."""
        return {"type": "delta", "text": text}

    def deltas(self, fragments: list[str]) -> bytes:
        """Fragments of the reply that arrived together, each its own delta, as one write."""
        if not self.structured:
            return "".join(fragments).encode()
        head, tail = self._delta_frame
        return (head + (tail + head).join(map(encode_basestring, fragments)) + tail).encode()

    @cached_property
    def _delta_frame(self) -> tuple[str, str]:
        # A delta is its event serialised with the fragment as its only varying string:
        # the same bytes as serialising each event whole, at the cost of one escape.
        head, tail = self._framed(self.delta_payload(_SLOT)).split(encode_basestring(_SLOT))
        return head, tail

    def _framed(self, payload: dict[str, Any]) -> str:
        if self.media_type == SSE:
            return f"data: {_compact_json(payload)}\n\n"
        return f"{_compact_json(payload)}\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event whose data is `payload` as compact JSON."""
    return FORMATS[SSE].event(payload)


def _compact_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


# Every stream must reach the client as written: no proxy buffering (nginx), no caching.
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}

# An SSE comment: ignored by clients, but it keeps proxies and browsers from timing out.
SSE_HEARTBEAT = b": waiting for the model\n\n"

FORMATS = {
    TEXT: StreamFormat(TEXT, "text/plain; charset=utf-8"),
    SSE: StreamFormat(SSE, "text/event-stream; charset=utf-8"),
    NDJSON: StreamFormat(NDJSON, "application/x-ndjson"),
}


def negotiate(accept: MIMEAccept) -> StreamFormat:
    """Plain text unless the client asks for SSE or NDJSON by name."""
    # Plain text is listed first, so `*/*` (curl, fetch) picks it.
    best = accept.best_match([TEXT, SSE, NDJSON], default=TEXT)
    return FORMATS[best]
