"""The three shapes of a streamed reply, chosen by the client's Accept header."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MIMEAccept

TEXT = "text/plain"
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"


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
        if self.media_type == SSE:
            return sse_event(payload)
        return f"{_compact_json(payload)}\n".encode()

    def delta(self, text: str) -> bytes:
        """A fragment of the reply."""
        return self.event({"type": "delta", "text": text}) if self.structured else text.encode()


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event whose data is `payload` as compact JSON."""
    return f"data: {_compact_json(payload)}\n\n".encode()


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
