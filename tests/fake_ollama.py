"""A scriptable fake of Ollama's HTTP API for tests, served from a background thread on loopback."""

from __future__ import annotations

import hashlib
import json
import math
import re
import selectors
import socket
import socketserver
import struct
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import Message
from http.client import responses as _REASONS
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tests.http_raw import read_chunk

DEFAULT_MODEL = "qwen2.5:3b-instruct"
OLLAMA_VERSION = "0.12.0"

# Error texts Ollama really sends in these situations.
RUNNER_KILLED = "llama runner process has terminated: signal: killed"
SERVER_BUSY = "server busy, please try again.  maximum pending requests exceeded"
GENERATION_FAILED = "an error was encountered while running the model: unexpected EOF"

JSON_TYPE = "application/json; charset=utf-8"  # what gin's c.JSON sets
NDJSON_TYPE = "application/x-ndjson"
TEXT_TYPE = "text/plain; charset=utf-8"

_TERMINATOR = b"0\r\n\r\n"
# Go's encoding/json escapes these even inside otherwise raw UTF-8 output.
_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)
_ZERO_DURATION = re.compile(r"0+(\.0+)?(ns|us|µs|ms|s|m|h)?")

# The fake's toy tokenizer, for prompt_eval_count. Ollama counts the prompt after the chat
# template has wrapped each message: for Qwen 2.5, <|im_start|>, the role and a newline
# before the content and <|im_end|> and a newline after it (5 tokens), then
# <|im_start|>assistant and a newline opening the reply (3). The content itself is counted
# at one token per `bytes_per_token` bytes of UTF-8, rounded up: about 4 for English text
# through a BPE vocabulary; a lower value stands for a denser tokenizer (code, digits,
# other scripts). Unlike Ollama, the fake caches nothing: every call counts its whole prompt.
TEMPLATE_TOKENS_PER_MESSAGE = 5
TEMPLATE_TOKENS_PER_PROMPT = 3
BYTES_PER_TOKEN = 4.0


@dataclass(frozen=True)
class Behaviour:
    """How the fake answers /api/chat and /api/generate; each *_after counts token lines sent."""

    tokens: Sequence[str] = ("Hel", "lo", "!")
    final_text: str = ""
    # Model load + prompt eval; as in Ollama, even the response headers wait for it.
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    done_reason: str = "stop"
    # None: counted from the prompt by the toy tokenizer (count_prompt_tokens); 0 leaves the
    # field out, as Ollama does when the whole prompt came from its cache.
    prompt_eval_count: int | None = None
    bytes_per_token: float = BYTES_PER_TOKEN  # the toy tokenizer's; lower counts more tokens
    eval_count: int | None = None  # None means len(tokens)
    status: int | None = None  # HTTP error answered after first_token_delay, before any output
    error: str | None = None  # message for status / error_after; None picks Ollama's usual text
    # Emit {"error": ...}; at 0 a stream gets a plain HTTP 500, as Ollama sends when nothing
    # was written yet.
    error_after: int | None = None
    drop_after: int | None = None  # close (FIN) without the terminating chunk
    reset_after: int | None = None  # close with SO_LINGER 0, so the client sees a reset
    stall_after: int | None = None  # go silent until the client closes or the fake stops
    malformed_after: int | None = None  # insert a non-JSON line, then carry on
    malformed_line: str = '{"model":"trunc'
    split_lines: bool = False  # each line in two chunks, cut mid-line (by bytes)
    split_delay: float = 0.0  # pause between the halves so the client really reads them apart
    pack_lines: bool = False  # lines buffered and written together until a pause or the end
    no_trailing_newline: bool = False  # the last line of a stream lacks its "\n"

    def __post_init__(self) -> None:
        """Normalise tokens and reject combinations that cannot happen on one connection."""
        if isinstance(self.tokens, str):
            raise TypeError("tokens must be a sequence of fragments, not a str")
        object.__setattr__(self, "tokens", tuple(self.tokens))
        endings = {
            name: getattr(self, name)
            for name in ("status", "error_after", "drop_after", "reset_after", "stall_after")
            if getattr(self, name) is not None
        }
        if len(endings) > 1:
            raise ValueError(f"choose one way for the request to end, got {sorted(endings)}")
        for name in ("error_after", "drop_after", "reset_after", "stall_after", "malformed_after"):
            after = getattr(self, name)
            if after is not None and not 0 <= after <= len(self.tokens):
                raise ValueError(f"{name}={after} is outside 0..{len(self.tokens)}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error code, got {self.status}")
        if min(self.first_token_delay, self.token_delay, self.split_delay) < 0:
            raise ValueError("delays cannot be negative")
        if self.prompt_eval_count is not None and self.prompt_eval_count < 0:
            raise ValueError(f"prompt_eval_count cannot be negative, got {self.prompt_eval_count}")
        if self.bytes_per_token <= 0:
            raise ValueError(f"bytes_per_token must be positive, got {self.bytes_per_token}")
        if self.split_lines and self.pack_lines:
            raise ValueError("split_lines and pack_lines contradict each other")
        if not self.malformed_line:
            raise ValueError("an empty malformed_line would frame as the terminating chunk")

    def error_text(self, *, mid_stream: bool) -> str:
        """The configured error message, or the one Ollama sends in that situation."""
        if self.error is not None:
            return self.error
        if mid_stream or self.status is None:
            return GENERATION_FAILED
        if self.status == 503:
            return SERVER_BUSY
        return RUNNER_KILLED if self.status >= 500 else _REASONS.get(self.status, "error").lower()

    @property
    def tokens_evaluated(self) -> int:
        """eval_count as reported: the configured value, else one per token fragment."""
        return len(self.tokens) if self.eval_count is None else self.eval_count

    def prompt_tokens(self, contents: Iterable[str]) -> int:
        """prompt_eval_count as reported: the configured value, else the prompt's count."""
        if self.prompt_eval_count is not None:
            return self.prompt_eval_count
        return count_prompt_tokens(contents, self.bytes_per_token)


def count_prompt_tokens(contents: Iterable[str], bytes_per_token: float = BYTES_PER_TOKEN) -> int:
    """The toy tokenizer's count for a prompt of messages with these contents."""
    return TEMPLATE_TOKENS_PER_PROMPT + sum(
        TEMPLATE_TOKENS_PER_MESSAGE + math.ceil(len(content.encode()) / bytes_per_token)
        for content in contents
    )


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the fake received it."""

    method: str
    path: str  # including any query string
    headers: Message  # case-insensitive lookups: headers["content-type"]
    body: bytes
    json: Any  # parsed body; None when absent or not JSON


@dataclass(eq=False)
class Generation:
    """What the fake did for one /api/chat or /api/generate request; times are time.monotonic()."""

    request: RecordedRequest
    stream: bool
    started_at: float
    behaviour: Behaviour | None = None  # None when the request was rejected before choosing one
    status: int | None = None  # HTTP status sent; None if no response began
    first_byte_at: float | None = None
    finished_at: float | None = None
    client_closed_at: float | None = None
    tokens_sent: int = 0  # token lines written (non-stream: tokens generated)
    # rejected | error | done | dropped | reset | client_closed | stopped; None while running.
    # status, first_byte_at, tokens_sent and outcome are set before the bytes leave, so they are
    # right once the client has seen them; finished_at needs wait_finished().
    outcome: str | None = None
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait_finished(self, timeout: float = 2.0) -> Generation:
        """Block until the fake has finished with this request (its fields are then final)."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"generation still running after {timeout}s")
        return self


class FakeOllama:
    """A scriptable stand-in for an Ollama server on 127.0.0.1, one behaviour per request."""

    def __init__(
        self, models: Iterable[str] = (DEFAULT_MODEL,), *, version: str = OLLAMA_VERSION
    ) -> None:
        """Prepare a fake knowing these model names; start() it or use it as a context manager."""
        if isinstance(models, str):
            raise TypeError("models must be an iterable of names, not a str")
        self.models: set[str] = set(models)
        self.version = version
        self._cond = threading.Condition()  # guards everything below; notified on generation events
        self._behaviour = Behaviour()
        self._queued: deque[Behaviour] = deque()
        self._choose: Callable[[RecordedRequest], Behaviour | None] | None = None
        self._requests: list[RecordedRequest] = []
        self._generations: list[Generation] = []
        self._closed: list[Generation] = []
        self._starts_taken = 0
        self._closes_taken = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None

    def start(self) -> FakeOllama:
        """Bind an ephemeral loopback port and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeOllama is single-use: it was already started")
        self._server = _Server(self)
        # A short poll keeps stop() fast: serve_forever notices shutdown only between polls.
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-ollama",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving, cut open connections (freeing stalled handlers) and join all threads."""
        server, thread = self._server, self._serve_thread
        if server is None or thread is None or self._stopping.is_set():
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout)
        stuck = server.end_connections(timeout)
        if stuck or thread.is_alive():
            raise RuntimeError(f"fake Ollama threads did not stop: {[t.name for t in stuck]}")

    def __enter__(self) -> FakeOllama:
        """Start on entry."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop on exit."""
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None:
            raise RuntimeError("FakeOllama is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def behave(self, behaviour: Behaviour | None = None, /, **fields: Any) -> Behaviour:
        """Set the behaviour for later requests; fields override the defaults, not the last call."""
        chosen = replace(behaviour or Behaviour(), **fields)
        with self._cond:
            self._behaviour = chosen
        return chosen

    def behave_once(self, behaviour: Behaviour | None = None, /, **fields: Any) -> Behaviour:
        """Queue a behaviour for exactly one later request; queued ones are used first, in order."""
        chosen = replace(behaviour or Behaviour(), **fields)
        with self._cond:
            self._queued.append(chosen)
        return chosen

    def behave_per_request(self, choose: Callable[[RecordedRequest], Behaviour | None]) -> None:
        """Let `choose` pick each request's behaviour from the request itself.

        For concurrent clients, whose requests arrive in no set order: each one can carry
        its own script (in its messages, say). Queued behaviours still come first, and a
        None from `choose` means the behaviour set by behave().
        """
        with self._cond:
            self._choose = choose

    def reset(self) -> None:
        """Forget requests, generations and queued behaviours; restore the default behaviour."""
        with self._cond:
            self._behaviour = Behaviour()
            self._queued.clear()
            self._choose = None
            self._requests.clear()
            self._generations.clear()
            self._closed.clear()
            self._starts_taken = self._closes_taken = 0

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order."""
        with self._cond:
            return list(self._requests)

    def last_messages(self) -> list[tuple[str, str]]:
        """(role, content) of each message in the last request, as piagent sent them."""
        return [(m["role"], m["content"]) for m in self.requests[-1].json["messages"]]

    @property
    def generations(self) -> list[Generation]:
        """A snapshot of the /api/chat and /api/generate records, in arrival order."""
        with self._cond:
            return list(self._generations)

    def wait_for_generation_start(self, timeout: float = 2.0) -> Generation:
        """Wait for, and return, the next generation this method has not returned yet."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: len(self._generations) > self._starts_taken, timeout
            ):
                raise TimeoutError(f"no new /api/chat or /api/generate request within {timeout}s")
            self._starts_taken += 1
            return self._generations[self._starts_taken - 1]

    def wait_for_client_close(self, timeout: float = 2.0) -> Generation:
        """Wait for, and return, the next generation whose client closed, each one once."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._closed) > self._closes_taken, timeout):
                raise TimeoutError(f"no client closed a running generation within {timeout}s")
            self._closes_taken += 1
            return self._closed[self._closes_taken - 1]

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(request)

    def _begin_generation(self, request: RecordedRequest, stream: bool) -> Generation:
        generation = Generation(request=request, stream=stream, started_at=time.monotonic())
        with self._cond:
            self._generations.append(generation)
            self._cond.notify_all()
        return generation

    def _next_behaviour(self, request: RecordedRequest) -> Behaviour:
        with self._cond:
            if self._queued:
                return self._queued.popleft()
            choose, default = self._choose, self._behaviour
        return (choose(request) if choose is not None else None) or default

    def _note_client_closed(self, generation: Generation) -> None:
        with self._cond:
            generation.client_closed_at = time.monotonic()
            generation.outcome = "client_closed"
            # A request from before reset() must not answer a later wait_for_client_close().
            if generation in self._generations:
                self._closed.append(generation)
                self._cond.notify_all()

    def _knows(self, model: str) -> bool:
        # Ollama reads a bare name as its ":latest" tag.
        return model in self.models or (":" not in model and f"{model}:latest" in self.models)


class _Server(ThreadingHTTPServer):
    """Threaded HTTP server that tracks its connections and threads so stop() can end them."""

    daemon_threads = True
    # Tests open hundreds of streams at once; the default backlog of 5 refuses some.
    request_queue_size = 1024

    def __init__(self, fake: FakeOllama) -> None:
        self.fake = fake
        self._track_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handler_threads: list[threading.Thread] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup, which can stall on odd resolvers."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a daemon thread we can find again at stop()."""
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"fake-ollama-conn-{client_address[1]}",
            daemon=True,
        )
        with self._track_lock:
            self._connections.add(request)
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()] + [thread]
        thread.start()

    def close_request(self, request: Any) -> None:
        """Forget the connection once its handler is done with it."""
        with self._track_lock:
            self._connections.discard(request)
        super().close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients vanishing mid-request; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def end_connections(self, timeout: float) -> list[threading.Thread]:
        """Shut every open connection so blocked handlers return; give back threads still alive."""
        with self._track_lock:
            connections, threads = list(self._connections), list(self._handler_threads)
        for connection in connections:
            try:
                # shutdown (unlike close) wakes threads blocked in select or recv on this socket.
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t for t in threads if t.is_alive()]


class _Handler(BaseHTTPRequestHandler):
    """Serves requests on one keep-alive connection, the way Ollama's Go server answers them."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # each line must leave at once, as after Go's Flush
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep access logs out of test output."""

    def _dispatch(self) -> None:
        """Read the body, record the request and route it."""
        body = self._read_body()
        if body is None:
            return
        parsed, parse_error = _parse_json(body)
        request = RecordedRequest(self.command, self.path, self.headers, body, parsed)
        fake = self.server.fake
        fake._record(request)
        path = urlsplit(self.path).path
        if self.command in ("GET", "HEAD") and path == "/":
            self._send(None, 200, TEXT_TYPE, b"Ollama is running")
        elif self.command in ("GET", "HEAD") and path == "/api/tags":
            models = [_model_entry(name) for name in sorted(fake.models)]
            self._send(None, 200, JSON_TYPE, _go_json({"models": models}))
        elif self.command in ("GET", "HEAD") and path == "/api/version":
            self._send(None, 200, JSON_TYPE, _go_json({"version": fake.version}))
        elif self.command == "POST" and path in ("/api/chat", "/api/generate"):
            stream = not isinstance(parsed, dict) or parsed.get("stream") is not False
            generation = fake._begin_generation(request, stream)
            try:
                self._serve_generation(generation, parse_error, chat=path == "/api/chat")
            finally:
                generation.finished_at = time.monotonic()
                generation._finished.set()
        else:
            # gin's answer to unknown routes, wrong methods included.
            self._send(None, 404, TEXT_TYPE, b"404 page not found")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def _read_body(self) -> bytes | None:
        """Read a Content-Length or chunked body; None when the connection cannot go on."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked_body()
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                self._send(None, 400, TEXT_TYPE, b"400 Bad Request")
                return None
            body = self.rfile.read(length)
            if len(body) < length:
                body = None
        if body is None:
            self.close_connection = True  # client gone mid-body or framing broken
        return body

    def _read_chunked_body(self) -> bytes | None:
        """Decode a chunked request body; None when it was cut short or broken."""
        parts = []
        while chunk := read_chunk(self.rfile):
            parts.append(chunk)
        return None if chunk is None else b"".join(parts)

    def _serve_generation(
        self, generation: Generation, parse_error: str | None, *, chat: bool
    ) -> None:
        """Validate like Ollama, then answer per the behaviour chosen for this request."""
        payload = generation.request.json
        problem = _request_problem(payload, parse_error, chat=chat)
        if problem is None and not self.server.fake._knows(payload["model"]):
            quoted = json.dumps(payload["model"], ensure_ascii=False)  # Go's %q
            problem = (404, f"model {quoted} not found, try pulling it first")
        if problem is not None:
            generation.outcome = "rejected"
            self._send_json(generation, problem[0], {"error": problem[1]})
            return
        behaviour = generation.behaviour = self.server.fake._next_behaviour(generation.request)
        if not self._pause(generation, behaviour.first_token_delay):
            return
        if behaviour.status is not None:
            generation.outcome = "error"
            self._send_json(
                generation, behaviour.status, {"error": behaviour.error_text(mid_stream=False)}
            )
            return
        reply = _Reply(self, generation, behaviour, chat=chat)
        if not (payload.get("messages") if chat else payload.get("prompt")):
            # Nothing to generate: Ollama only loads (or, with keep_alive 0, unloads) the model.
            reason = "unload" if _is_zero_duration(payload.get("keep_alive")) else "load"
            generation.outcome = "done"
            self._send_json(generation, 200, reply.final("", reason=reason, metrics=False))
            return
        self._generate(generation, behaviour, reply)

    def _generate(self, generation: Generation, behaviour: Behaviour, reply: _Reply) -> None:
        """Walk the token script, taking the configured exit at its index."""
        sink: _Sink = _StreamSink(reply) if generation.stream else _WholeSink(reply)
        tokens = behaviour.tokens
        for index in range(len(tokens) + 1):
            if index and not sink.pause(behaviour.token_delay):
                return
            if index == behaviour.stall_after:
                sink.pause(None)  # only the client closing or stop() ends a stall
                return
            if index in (behaviour.drop_after, behaviour.reset_after):
                if sink.flush():
                    self._abort(generation, reset=index == behaviour.reset_after)
                return
            if index == behaviour.error_after:
                generation.outcome = "error"
                sink.fail(behaviour.error_text(mid_stream=True))
                return
            if index == behaviour.malformed_after and not sink.malformed():
                return
            if index < len(tokens) and not sink.token(tokens[index]):
                return
        generation.outcome = "done"
        sink.finish()

    def _pause(self, generation: Generation, seconds: float | None) -> bool:
        """Wait (None: forever) watching for a client close; False if it closed or we stop."""
        stopping = self.server.fake._stopping
        deadline = None if seconds is None else time.monotonic() + seconds
        watching = True
        with selectors.DefaultSelector() as selector:
            selector.register(self.connection, selectors.EVENT_READ)
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if watching:
                    ready = bool(selector.select(remaining))
                else:
                    ready = stopping.wait(remaining)
                if stopping.is_set():
                    self._lost(generation)
                    return False
                if ready:
                    if self._client_gone():
                        self._lost(generation)
                        return False
                    # Bytes are waiting (a pipelined request), so readability can no longer reveal
                    # a close: sit out the pause and leave detection to the next failed write.
                    watching = False
                elif deadline is not None and time.monotonic() >= deadline:
                    return True

    def _client_gone(self) -> bool:
        """Peek without consuming: EOF or a socket error means the client closed."""
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _lost(self, generation: Generation | None) -> None:
        """The connection is unusable: note why (client close or our own stop) and end it."""
        self.close_connection = True
        if generation is None or generation.client_closed_at is not None:
            return
        if self.server.fake._stopping.is_set():
            generation.outcome = "stopped"
        else:
            self.server.fake._note_client_closed(generation)

    def _write(self, generation: Generation | None, data: bytes) -> bool:
        """Send bytes now; a failed write means the client is gone (or the fake is stopping)."""
        if generation is not None and generation.first_byte_at is None:
            generation.first_byte_at = time.monotonic()
        try:
            self.wfile.write(data)
        except OSError:
            self._lost(generation)
            return False
        return True

    def _head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        """Status line and headers as Go's net/http writes them (Date, no Server)."""
        if self.close_connection:
            headers = [*headers, ("Connection", "close")]
        reason = _REASONS.get(status, f"status code {status}")
        lines = [f"HTTP/1.1 {status} {reason}", f"Date: {self.date_time_string()}"]
        lines += [f"{name}: {value}" for name, value in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(
        self, generation: Generation | None, status: int, content_type: str, body: bytes
    ) -> bool:
        """Send a complete response with Content-Length in one write."""
        head = self._head(
            status, [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        )
        if generation is not None:
            generation.status = status
        return self._write(generation, head + (b"" if self.command == "HEAD" else body))

    def _send_json(self, generation: Generation | None, status: int, obj: Any) -> bool:
        """Send obj as Go-encoded JSON."""
        return self._send(generation, status, JSON_TYPE, _go_json(obj))

    def _abort(self, generation: Generation, *, reset: bool) -> None:
        """Cut the connection mid-response: FIN (drop) or RST (reset), no terminating chunk."""
        self.close_connection = True
        generation.outcome = "reset" if reset else "dropped"
        try:
            if reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client already went away; the close below is all that is left
        # rfile holds a reference to the socket; drop it so close() really closes it.
        self.rfile.close()
        self.connection.close()


class _Reply:
    """Builds Ollama's reply objects for one request."""

    def __init__(
        self, handler: _Handler, generation: Generation, behaviour: Behaviour, *, chat: bool
    ) -> None:
        self.handler = handler
        self.generation = generation
        self.behaviour = behaviour
        self.chat = chat
        payload = generation.request.json
        self.model: str = payload["model"]
        if chat:
            contents = [m.get("content") or "" for m in payload.get("messages") or ()]
        else:
            contents = [text for text in (payload.get("system"), payload.get("prompt")) if text]
        self.prompt_tokens = behaviour.prompt_tokens(contents)
        self.eval_started = time.monotonic()  # first_token_delay (load + prompt eval) ends here

    def piece(self, text: str) -> dict[str, Any]:
        """A streamed fragment."""
        return {
            "model": self.model,
            "created_at": _rfc3339_now(),
            **self._text(text),
            "done": False,
        }

    def final(self, text: str, *, reason: str, metrics: bool = True) -> dict[str, Any]:
        """The done object, with keys in the order Ollama's Go structs marshal them."""
        head = {"model": self.model, "created_at": _rfc3339_now(), **self._text(text)}
        if self.chat:
            obj = {**head, "done_reason": reason, "done": True}
        else:
            obj = {**head, "done": True, "done_reason": reason}
            if metrics:
                count = self.prompt_tokens + self.behaviour.tokens_evaluated
                obj["context"] = list(range(1, count + 1))
        if metrics:
            obj.update(self._metrics())
        return obj

    def _text(self, text: str) -> dict[str, Any]:
        return (
            {"message": {"role": "assistant", "content": text}} if self.chat else {"response": text}
        )

    def _metrics(self) -> dict[str, int]:
        now = time.monotonic()
        before_eval = max(2, int((self.eval_started - self.generation.started_at) * 1e9))
        load = before_eval // 2
        evaluation = max(1, int((now - self.eval_started) * 1e9))
        metrics = {
            "total_duration": before_eval + evaluation,
            "load_duration": load,
            "prompt_eval_count": self.prompt_tokens,
            "prompt_eval_duration": before_eval - load,
            "eval_count": self.behaviour.tokens_evaluated,
            "eval_duration": evaluation,
        }
        return {key: value for key, value in metrics.items() if value}  # Go's omitempty


class _Sink(ABC):
    """Where the token script goes: a chunked NDJSON stream or one JSON body."""

    def __init__(self, reply: _Reply) -> None:
        self.reply = reply
        self.handler = reply.handler
        self.generation = reply.generation
        self.behaviour = reply.behaviour

    def pause(self, seconds: float | None) -> bool:
        """Wait between lines, watching for the client closing."""
        return self.handler._pause(self.generation, seconds)

    def flush(self) -> bool:
        """Push out anything buffered."""
        return True

    @abstractmethod
    def token(self, text: str) -> bool:
        """Emit one fragment."""

    @abstractmethod
    def malformed(self) -> bool:
        """Emit the non-JSON line."""

    @abstractmethod
    def fail(self, message: str) -> bool:
        """End with an error."""

    @abstractmethod
    def finish(self) -> bool:
        """End normally."""


class _StreamSink(_Sink):
    """NDJSON over chunked encoding; headers leave with the first chunk, as at Go's first Flush."""

    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply)
        self._head = self.handler._head(
            200, [("Content-Type", NDJSON_TYPE), ("Transfer-Encoding", "chunked")]
        )
        self._packed: list[bytes] = []
        self._packed_tokens = 0

    def pause(self, seconds: float | None) -> bool:
        """Flush packed lines before a real pause so the client sees what came before it."""
        if seconds != 0 and not self.flush():
            return False
        return super().pause(seconds)

    def flush(self) -> bool:
        """Write the packed lines as one chunk."""
        if not self._packed:
            return True
        return self._send_packed(b"")

    def token(self, text: str) -> bool:
        """Stream one fragment line."""
        return self._line(_go_json(self.reply.piece(text)), tokens=1)

    def malformed(self) -> bool:
        """Stream the configured non-JSON line."""
        return self._line(self.behaviour.malformed_line.encode())

    def fail(self, message: str) -> bool:
        """An error line after output, or a plain HTTP 500 when no token was sent yet."""
        if self._head and not self._packed:  # nothing written or queued yet
            return self.handler._send_json(self.generation, 500, {"error": message})
        return self._line(_go_json({"error": message}), last=True) and self._end()

    def finish(self) -> bool:
        """Stream the done line and terminate the body."""
        done = self.reply.final(self.behaviour.final_text, reason=self.behaviour.done_reason)
        return self._line(_go_json(done), last=True) and self._end()

    def _line(self, data: bytes, *, tokens: int = 0, last: bool = False) -> bool:
        if not (last and self.behaviour.no_trailing_newline):
            data += b"\n"
        if self.behaviour.pack_lines:
            self._packed.append(data)
            self._packed_tokens += tokens
            return True
        if self.behaviour.split_lines and len(data) > 1:
            cut = len(data) // 2
            return (
                self._send(_chunk(data[:cut]))
                and self.pause(self.behaviour.split_delay)
                and self._send(_chunk(data[cut:]), tokens=tokens)
            )
        return self._send(_chunk(data), tokens=tokens)

    def _end(self) -> bool:
        return self._send_packed(_TERMINATOR) if self._packed else self._send(_TERMINATOR)

    def _send_packed(self, tail: bytes) -> bool:
        data, tokens = _chunk(b"".join(self._packed)) + tail, self._packed_tokens
        self._packed, self._packed_tokens = [], 0
        return self._send(data, tokens=tokens)

    def _send(self, data: bytes, *, tokens: int = 0) -> bool:
        if self._head:
            data, self._head = self._head + data, b""
            self.generation.status = 200
        self.generation.tokens_sent += tokens  # counted first: the client may react at once
        if self.handler._write(self.generation, data):
            return True
        self.generation.tokens_sent -= tokens
        return False


class _WholeSink(_Sink):
    """stream: false: generate everything, then answer with one JSON object."""

    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply)
        self._malformed = False

    def token(self, text: str) -> bool:
        """Count the fragment; the text is joined at the end."""
        self.generation.tokens_sent += 1
        return True

    def malformed(self) -> bool:
        """Remember to answer with the non-JSON body."""
        self._malformed = True
        return True

    def fail(self, message: str) -> bool:
        """Ollama answers a failed non-stream generation with HTTP 500."""
        return self.handler._send_json(self.generation, 500, {"error": message})

    def finish(self) -> bool:
        """Send the whole text in one object, or the malformed body."""
        if self._malformed:
            return self.handler._send(
                self.generation, 200, JSON_TYPE, self.behaviour.malformed_line.encode()
            )
        text = "".join(self.behaviour.tokens) + self.behaviour.final_text
        done = self.reply.final(text, reason=self.behaviour.done_reason)
        return self.handler._send_json(self.generation, 200, done)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _go_json(obj: Any) -> bytes:
    """Encode like Go's encoding/json: compact, raw UTF-8, HTML-safe escapes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in _GO_ESCAPES:
        text = text.replace(raw, escaped)  # these characters can only occur inside strings
    return text.encode()


def _rfc3339_now() -> str:
    """UTC time as Go's RFC3339Nano: nanoseconds with trailing zeros trimmed, then Z."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def _model_entry(name: str) -> dict[str, Any]:
    """A plausible /api/tags entry, stable for a given name."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    family, _, tag = name.partition(":")
    size = re.search(r"(\d+(?:\.\d+)?)b", tag)
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-09-01T12:00:00.123456789Z",
        "size": 1_000_000_000 + int(digest[:7], 16),
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": f"{size.group(1)}B" if size else "",
            "quantization_level": "Q4_K_M",
        },
    }


def _parse_json(body: bytes) -> tuple[Any, str | None]:
    """Parse a body, returning (value, None) or (None, Go-style error text)."""
    text = body.decode("utf-8", "replace")
    if not text.strip():
        return None, "missing request body"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()):
            return None, "unexpected EOF"
        return None, f"invalid character {text[exc.pos]!r} looking for beginning of value"


def _json_kind(value: Any) -> str:
    """The JSON type name Go's decoder uses in its errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


_FIELDS: dict[str, tuple[type, str]] = {
    "model": (str, "string"),
    "messages": (list, "[]api.Message"),
    "prompt": (str, "string"),
    "system": (str, "string"),
    "stream": (bool, "bool"),
    "options": (dict, "map[string]interface {}"),
}


def _request_problem(
    payload: Any, parse_error: str | None, *, chat: bool
) -> tuple[int, str] | None:
    """Ollama's 400 for a body it cannot bind, or None when the request is acceptable."""
    struct_name = "ChatRequest" if chat else "GenerateRequest"
    if parse_error is not None:
        return 400, parse_error
    if payload is not None and not isinstance(payload, dict):
        return (
            400,
            f"json: cannot unmarshal {_json_kind(payload)} into Go value of type api.{struct_name}",
        )
    payload = payload or {}
    names = ["model", "messages"] if chat else ["model", "prompt", "system"]
    for name in [*names, "stream", "options"]:
        value = payload.get(name)
        expected, go_type = _FIELDS[name]
        if value is not None and not isinstance(value, expected):
            return 400, _unmarshal_error(value, f"{struct_name}.{name}", go_type)
    for message in payload.get("messages") or ():
        if not isinstance(message, dict):
            return 400, _unmarshal_error(message, f"{struct_name}.messages", "api.Message")
        for key in ("role", "content"):
            value = message.get(key)
            if value is not None and not isinstance(value, str):
                return 400, _unmarshal_error(value, f"Message.messages.{key}", "string")
    if not payload.get("model"):
        return 400, "model is required"
    return None


def _unmarshal_error(value: Any, where: str, go_type: str) -> str:
    """Go's text for a JSON value of the wrong type in a struct field."""
    return (
        f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where} of type {go_type}"
    )


def _is_zero_duration(keep_alive: Any) -> bool:
    """Whether keep_alive asks Ollama to unload now (0, 0.0, "0", "0s", "0m", ...)."""
    if isinstance(keep_alive, bool):
        return False
    if isinstance(keep_alive, (int, float)):
        return keep_alive == 0
    return isinstance(keep_alive, str) and _ZERO_DURATION.fullmatch(keep_alive) is not None
