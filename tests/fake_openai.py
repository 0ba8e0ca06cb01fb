"""A scriptable fake of an OpenAI-compatible server (/v1/chat/completions) on loopback, for
the failure cases a real model server will not produce on demand."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "tiny-chat"


@dataclass(frozen=True)
class Behaviour:
    """How the fake answers a chat completion; each *_after counts content events sent."""

    tokens: Sequence[str] = ("Hel", "lo", "!")
    finish_reason: str = "stop"
    prompt_tokens: int = 9
    token_delay: float = 0.0
    status: int | None = None  # answer this HTTP error before any output
    error: str = "something went wrong"
    error_code: str | None = None
    retry_after: str | None = None
    content_type: str = "text/event-stream"
    malformed_after: int | None = None  # a data line that is not JSON
    error_event_after: int | None = None  # data: {"error": ...}, then the end of the body
    drop_after: int | None = None  # close the connection without ending the body
    stall_after: int | None = None  # go silent until the client leaves
    send_done: bool = True  # end with data: [DONE]
    send_finish: bool = True  # a chunk carrying finish_reason before the end


@dataclass(eq=False)
class Exchange:
    """One POST /v1/chat/completions as the fake saw and answered it."""

    headers: dict[str, str]
    body: Any
    tokens_sent: int = 0
    outcome: str | None = None  # rejected | done | error | dropped | client_closed
    finished: threading.Event = field(default_factory=threading.Event)


class FakeOpenAI:
    """Serves an OpenAI-style API on 127.0.0.1 from a background thread."""

    def __init__(self, models: Sequence[str] = (MODEL,), *, api_key: str | None = None) -> None:
        """Know these models; with `api_key`, answer 401 unless it is sent as a Bearer token."""
        self.models = set(models)
        self.api_key = api_key
        self.exchanges: list[Exchange] = []
        self._behaviour = Behaviour()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        # A short poll keeps stopping fast: serve_forever sees shutdown only between polls.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL is set to: the root of the API, ending in /v1."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def behave(self, **fields: Any) -> Behaviour:
        """Answer later requests this way; fields override the defaults, not the last call."""
        self._behaviour = replace(Behaviour(), **fields)
        return self._behaviour

    @property
    def last(self) -> Exchange:
        """The most recent chat completion request."""
        return self.exchanges[-1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # each event must leave at once

    def log_message(self, format: str, *args: Any) -> None:
        """Keep access logs out of test output."""

    def do_GET(self) -> None:
        fake: FakeOpenAI = self.server.fake  # type: ignore[attr-defined]
        if self.path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "fake"} for m in sorted(fake.models)]
            self._json(200, {"object": "list", "data": data})
        else:
            self._error(404, "Not Found", code=None)

    def do_POST(self) -> None:
        fake: FakeOpenAI = self.server.fake  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/chat/completions":
            self._error(404, "Not Found", code=None)
            return
        exchange = Exchange(dict(self.headers.items()), json.loads(raw))
        fake.exchanges.append(exchange)
        try:
            self._answer(fake, exchange)
        except OSError:
            exchange.outcome = "client_closed"
        finally:
            exchange.finished.set()

    def _answer(self, fake: FakeOpenAI, exchange: Exchange) -> None:
        behaviour, body = fake._behaviour, exchange.body
        exchange.outcome = "rejected"
        if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            self._error(401, "Incorrect API key provided", code="invalid_api_key")
        elif body.get("model") not in fake.models:
            message = f"The model `{body.get('model')}` does not exist"
            self._error(404, message, code="model_not_found")
        elif behaviour.status is not None:
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            self._error(behaviour.status, behaviour.error, behaviour.error_code, headers)
        elif body.get("stream"):
            _Stream(self, exchange, behaviour, fake._stopping).run()
        else:
            text = "".join(behaviour.tokens)
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": behaviour.finish_reason,
            }
            exchange.tokens_sent = len(behaviour.tokens)
            exchange.outcome = "done"
            self._json(200, {**_head(body), "choices": [choice], "usage": _usage(behaviour)})

    def _error(
        self, status: int, message: str, code: str | None, headers: dict[str, str] | None = None
    ) -> None:
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        self._json(status, {"error": error}, headers)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Stream:
    """One streamed answer: each event in its own HTTP chunk."""

    def __init__(
        self,
        handler: _Handler,
        exchange: Exchange,
        behaviour: Behaviour,
        stopping: threading.Event,
    ) -> None:
        self.handler = handler
        self.exchange = exchange
        self.behaviour = behaviour
        self.stopping = stopping
        self.head = _head(exchange.body)

    def run(self) -> None:
        handler, behaviour = self.handler, self.behaviour
        handler.send_response(200)
        handler.send_header("Content-Type", behaviour.content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        self._event(self._chunk({"role": "assistant", "content": None}))
        for index, token in enumerate(behaviour.tokens):
            if self._fault(index):
                return
            if index and not self._pause(behaviour.token_delay):
                return
            self._event(self._chunk({"content": token}))
            self.exchange.tokens_sent += 1
        if self._fault(len(behaviour.tokens)):
            return
        if behaviour.send_finish:
            self._event(self._chunk({}, behaviour.finish_reason))
        usage = self.exchange.body.get("stream_options", {}).get("include_usage")
        if usage:
            self._event({**self.head, "choices": [], "usage": _usage(behaviour)})
        if behaviour.send_done:
            self._send(b"data: [DONE]\n\n")
        self._end()
        self.exchange.outcome = "done"

    def _fault(self, index: int) -> bool:
        """Carry out the behaviour's fault if it is due after `index` tokens."""
        behaviour = self.behaviour
        if behaviour.malformed_after == index:
            self._send(b'data: {"choices": [{"delta": {"content": "tru\n\n')
        if behaviour.error_event_after == index:
            self._event({"error": {"message": behaviour.error, "type": "server_error"}})
            self._end()
            self.exchange.outcome = "error"
            return True
        if behaviour.drop_after == index:
            self.handler.close_connection = True
            self.handler.connection.shutdown(socket.SHUT_RDWR)
            self.exchange.outcome = "dropped"
            return True
        if behaviour.stall_after == index:
            self._pause(None)
            return True
        return False

    def _pause(self, seconds: float | None) -> bool:
        """Wait (forever when None) unless the client closes first; False if it did."""
        deadline = None if seconds is None else time.monotonic() + seconds
        connection = self.handler.connection
        while not self.stopping.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return True
            readable, _, _ = select.select([connection], [], [], left)
            if readable and not connection.recv(1, socket.MSG_PEEK):
                self.exchange.outcome = "client_closed"
                self.handler.close_connection = True
                return False
        return False

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {**self.head, "choices": [choice]}

    def _event(self, obj: Any) -> None:
        self._send(b"data: " + json.dumps(obj).encode() + b"\n\n")

    def _send(self, data: bytes) -> None:
        self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end(self) -> None:
        self.handler.wfile.write(b"0\r\n\r\n")


def _head(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk" if body.get("stream") else "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
    }


def _usage(behaviour: Behaviour) -> dict[str, int]:
    completion = len(behaviour.tokens)
    return {
        "prompt_tokens": behaviour.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": behaviour.prompt_tokens + completion,
    }
