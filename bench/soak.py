"""Soak: one gevent worker takes a long, bounded mix of everything that can happen to it.

    .venv/bin/python bench/soak.py                      # 20,000 requests, about 5 minutes
    .venv/bin/python bench/soak.py --requests 2000       # a shorter run

piagent runs under `gunicorn -c gunicorn.conf.py` (one gevent worker) in front of the
tests' fake Ollama, which each request scripts through its message: replies that end
well, slowly or in every fault the fake can make (an error status, a busy model server,
an error line, a dropped or reset connection, silence before or after the first token,
a line that is not JSON, lines split or packed), in each format (JSON, text, SSE,
NDJSON, /v1 whole and streamed); clients that leave before the answer, after its
headers or mid-stream; bodies that break the rules; 409s on a conversation in use; and,
between rounds, a burst past the admission queue for its 503s. Every answer is checked
against what that request must get.

The worker is measured from outside, after a warm-up round and again at the end: open
file descriptors, connections to the model server and to clients, threads, RSS (/proc),
and from /metrics the conversations kept, the generations and queue, and any 500. The
run fails when one of them passes its bound (BOUNDS), when a request went unanswered or
got the wrong answer, or when a conversation stays claimed after its request ended.
Greenlets are not visible from outside: each one the worker runs serves a client
connection or holds an upstream connection or a claim, and those are all counted.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import children, rss_mb  # noqa: E402
from tests.fake_ollama import Behaviour, FakeOllama, RecordedRequest  # noqa: E402
from tests.http_raw import RawResponse, read_head, read_response_from  # noqa: E402
from tests.servers import RunningServer, gunicorn, wait_until  # noqa: E402

MODEL = "qwen2.5:3b-instruct"
CLIENTS = 16
# The worker's limits: admission and memory small enough to be reached, timeouts short
# enough that silent upstreams end within the run.
SERVER_ENV = {
    "MAX_CONCURRENT_GENERATIONS": "8",
    "QUEUE_MAX": "8",
    "QUEUE_TIMEOUT_S": "10",
    "MEMORY_MAX_CONVERSATIONS": "64",
    # Long enough that a claim an ended request failed to let go of is still there when
    # the run looks for one at the end.
    "MEMORY_LEASE_S": "30",
    "REPLY_TIMEOUT_S": "0.5",
    "FIRST_TOKEN_TIMEOUT_S": "0.5",
    "STREAM_IDLE_TIMEOUT_S": "0.5",
    "SSE_HEARTBEAT_S": "0.2",
    "ACCESS_LOG": "",
}
SLOTS = int(SERVER_ENV["MAX_CONCURRENT_GENERATIONS"])
FLOOD = SLOTS + int(SERVER_ENV["QUEUE_MAX"]) + 4  # past every place and queue seat
# The bound of each figure at the end: "at most" a value, or "grows by" at most a value
# over the warm-up's figure. Upstream connections are pooled: at most one per generation
# at once (and one for /ready's check) stays open.
BOUNDS: dict[str, tuple[str, float]] = {
    "client connections": ("at most", 0),
    "upstream connections": ("at most", SLOTS + 1),
    "fds beside upstream": ("grows by", 0),
    # The main thread and gevent's pool (10 at most), which resolves host names and lets
    # its idle threads go.
    "threads": ("at most", 11),
    "RSS MB": ("grows by", 10.0),
    "conversations kept": ("at most", int(SERVER_ENV["MEMORY_MAX_CONVERSATIONS"])),
    "generations": ("at most", 0),
    "queued": ("at most", 0),
    "500s": ("at most", 0),
}

# --- what the fake does, named in each request's message ------------------------------------

TOKENS = ("Hel", "lo", " there", "!")
SLOW = Behaviour(tokens=tuple("abcdefghij"), token_delay=0.03)
# Long enough for a second message and a delete to arrive while it is answered.
HOLDING = Behaviour(tokens=tuple("abcdefghij"), token_delay=0.1)
FAULTS: dict[str, Behaviour] = {
    "ok": Behaviour(tokens=TOKENS),
    "split": Behaviour(tokens=TOKENS, split_lines=True),
    "pack": Behaviour(tokens=TOKENS, pack_lines=True),
    "no-newline": Behaviour(tokens=TOKENS, no_trailing_newline=True),
    "status-500": Behaviour(tokens=TOKENS, status=500),
    "not-pulled": Behaviour(tokens=TOKENS, status=404, error='model "x" not found'),
    "busy": Behaviour(tokens=TOKENS, status=503),
    "silent-first": Behaviour(tokens=TOKENS, stall_after=0),
    "error-line": Behaviour(tokens=TOKENS, error_after=1),
    "drop": Behaviour(tokens=TOKENS, drop_after=1),
    "reset": Behaviour(tokens=TOKENS, reset_after=1),
    "silent-after": Behaviour(tokens=TOKENS, stall_after=1),
    "not-json": Behaviour(tokens=TOKENS, malformed_after=1),
    "slow": SLOW,
    "holding": HOLDING,
}
GOOD = {"ok", "split", "pack", "no-newline", "slow", "holding"}
# Before any text: the status says it, unless an SSE stream has already begun with its
# heartbeats (after SSE_HEARTBEAT_S): then an error event ends it.
EARLY = {"status-500": 502, "not-pulled": 502, "busy": 503, "silent-first": 504}
# After the first text: a stream is cut short; a whole reply fails with this status.
LATE = {"error-line": 502, "drop": 502, "reset": 502, "silent-after": 504, "not-json": 502}
_SCRIPT = re.compile(r"soak:([a-z0-9-]+)")


def choose(request: RecordedRequest) -> Behaviour | None:
    """The fake's behaviour for one request: the fault its last message names."""
    messages = (request.json or {}).get("messages") or [{}]
    found = _SCRIPT.search(str(messages[-1].get("content", "")))
    return FAULTS.get(found.group(1)) if found else None


# --- a raw HTTP client, to see exactly how each answer ends --------------------------------


@dataclass
class Answer:
    """What the client saw: the response, or None when it left on purpose first."""

    response: RawResponse | None
    seconds: float


def call(
    url: str,
    method: str,
    path: str,
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    *,
    leave: str | None = None,
) -> Answer:
    """One request on a new connection; `leave` ("sent", "head", "chunk") walks away early."""
    started = time.monotonic()
    data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    parts = urlsplit(url)
    head = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        if leave == "sent":
            return Answer(None, time.monotonic() - started)
        reader = sock.makefile("rb")
        if leave == "head":
            read_head(reader)
            return Answer(None, time.monotonic() - started)
        response = read_response_from(reader, max_chunks=1 if leave == "chunk" else None)
    return Answer(None if leave else response, time.monotonic() - started)


# --- the scenarios ----------------------------------------------------------------------------

# Where each kind of request goes, how it is asked, and how its stream is framed.
KINDS = {
    "chat": ("/chat", False, None),
    "chat-text": ("/chat", True, "text/plain"),
    "chat-sse": ("/chat", True, "text/event-stream"),
    "chat-ndjson": ("/chat", True, "application/x-ndjson"),
    "v1": ("/v1/chat/completions", False, None),
    "v1-stream": ("/v1/chat/completions", True, "text/event-stream"),
}


def request_for(kind: str, fault: str, conversation: str | None = None) -> tuple[str, dict, dict]:
    """Path, body and headers of one generation request scripting `fault`."""
    path, stream, accept = KINDS[kind]
    text = f"soak:{fault} {uuid.uuid4().hex[:8]}"
    if path == "/chat":
        body = {"message": text, "stream": stream}
        if conversation is not None:
            body["conversation_id"] = conversation
    else:
        body = {"model": "general", "messages": [{"role": "user", "content": text}]}
        body["stream"] = stream
    return path, body, ({"Accept": accept} if accept else {})


def expected(kind: str, fault: str) -> set[int | str]:
    """What `fault` may end in for `kind`: a status, "done" or "cut" (a 200 cut short)."""
    stream, accept = KINDS[kind][1:]
    if fault in GOOD:
        return {"done"}
    if fault in EARLY:
        return {EARLY[fault], "cut"} if accept == "text/event-stream" else {EARLY[fault]}
    return {"cut"} if stream else {LATE[fault]}


def ending(kind: str, response: RawResponse) -> int | str:
    """How a response ended: its status, "done" (whole, with its end) or "cut"."""
    if response.status != 200:
        return response.status
    path, stream, accept = KINDS[kind]
    body = response.body.decode(errors="replace")
    if not stream:
        return "done" if response.complete and json.loads(body) else "cut"
    if not response.complete:
        return "cut"
    if accept == "text/plain":
        return "done"
    events = _events(body, sse=accept == "text/event-stream")
    if path == "/chat":
        return "done" if events and events[-1].get("type") == "done" else "cut"
    return "done" if events and events[-1] == "[DONE]" else "cut"


def _events(body: str, *, sse: bool) -> list:
    if not sse:
        return [json.loads(line) for line in body.splitlines() if line]
    data = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    return [item if item == "[DONE]" else json.loads(item) for item in data]


@dataclass
class Tally:
    """What the run saw, shared by the client threads."""

    outcomes: Counter = field(default_factory=Counter)  # (scenario, ending) -> count
    problems: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    left: int = 0
    conversations: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, scenario: str, got: int | str, want: int | str | set, detail: str = "") -> None:
        """Record one answer; a wrong one is a problem."""
        wanted = want if isinstance(want, set) else {want}
        with self.lock:
            self.outcomes[(scenario, got)] += 1
            if isinstance(got, int):
                self.statuses[got] += 1
            elif got in ("done", "cut"):
                self.statuses[200] += 1
            if got not in wanted:
                self.problems.append(
                    f"{scenario}: got {got}, wanted {sorted(map(str, wanted))} {detail}"
                )


def generation(url: str, tally: Tally, rng: random.Random) -> None:
    """A chat or /v1 request in one format, ending well or in one of the faults."""
    kind = rng.choice(list(KINDS))
    fault = rng.choice([name for name in FAULTS if name != "holding"])
    conversation = f"soak-{uuid.uuid4().hex[:12]}" if KINDS[kind][0] == "/chat" else None
    if conversation:
        tally.conversations.add(conversation)
    path, body, headers = request_for(kind, fault, conversation)
    answer = call(url, "POST", path, body, headers)
    got = ending(kind, answer.response)
    # A request may meet the queue full while the burst of another thread runs: a
    # refusal is an answer, with the status that says so.
    want = expected(kind, fault) | {503}
    tally.saw(f"{kind}/{fault}", got, want, answer.response.body[:200].decode(errors="replace"))


def leaving(url: str, tally: Tally, rng: random.Random) -> None:
    """A client that walks away: once sent, after the headers, or after the first chunk."""
    kind = rng.choice(list(KINDS))
    stages = ["sent", "head", "chunk"] if KINDS[kind][1] else ["sent"]
    stage = rng.choice(stages)
    conversation = f"soak-{uuid.uuid4().hex[:12]}" if KINDS[kind][0] == "/chat" else None
    if conversation:
        tally.conversations.add(conversation)
    path, body, headers = request_for(kind, "slow", conversation)
    call(url, "POST", path, body, headers, leave=stage)
    with tally.lock:
        tally.left += 1
        tally.outcomes[(f"leave/{kind}/{stage}", "left")] += 1


BAD = [
    ("POST", "/chat", b"{not json", {}, 422),
    ("POST", "/chat", {"message": "hi", "stream": "yes"}, {}, 422),
    ("POST", "/chat", {"message": "   "}, {}, 422),
    ("POST", "/chat", {"message": "hi", "agent": "nobody"}, {}, 404),
    ("POST", "/chat", {"message": "x" * 70_000}, {}, 413),
    ("POST", "/chat", {"message": "hi", "conversation_id": "a b"}, {}, 422),
    (
        "POST",
        "/chat",
        {"message": "hi", "conversation_id": "one"},
        {"X-Conversation-Id": "two"},
        422,
    ),
    ("POST", "/v1/chat/completions", {"model": "general", "messages": []}, {}, 422),
    ("POST", "/v1/chat/completions", {"model": "nobody", "messages": [{"role": "user"}]}, {}, 404),
    ("POST", "/v1/chat/completions", b"[]", {}, 422),
    ("GET", "/conversations?limit=0", None, {}, 422),
    ("GET", "/conversations/not%20an%20id", None, {}, 422),
    ("DELETE", "/conversations/never-seen", None, {}, 404),
    ("GET", "/agents/nobody", None, {}, 404),
    ("PUT", "/health", None, {}, 405),
    ("GET", "/no/such/route", None, {}, 404),
]


def bad_request(url: str, tally: Tally, rng: random.Random) -> None:
    """A request that breaks a rule, answered with the status and a JSON error body."""
    method, path, body, headers, status = rng.choice(BAD)
    response = call(url, method, path, body, headers).response
    shape = "error" if path.startswith("/v1") else "detail"
    shaped = response.headers.get("content-type", "").startswith("application/json") and (
        shape in json.loads(response.body or b"{}")
    )
    tally.saw(f"bad {method} {path[:30]}", response.status if shaped else "not JSON", status)


READS = [
    ("/health", 200),
    ("/ready", 200),
    ("/agents", 200),
    ("/agents/general", 200),
    ("/v1/models", 200),
    ("/conversations?limit=5", 200),
    ("/metrics", 200),
    ("/openapi.json", 200),
]


def read(url: str, tally: Tally, rng: random.Random) -> None:
    """A read-only route."""
    path, status = rng.choice(READS)
    tally.saw(f"GET {path}", call(url, "GET", path).response.status, status)


def conflict(url: str, tally: Tally, rng: random.Random) -> None:
    """A conversation answering one message refuses a second and a delete (409), then not."""
    conversation = f"soak-{uuid.uuid4().hex[:12]}"
    tally.conversations.add(conversation)
    path, body, headers = request_for("chat-text", "holding", conversation)
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as first:
        data = json.dumps(body).encode()
        first.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        reader = first.makefile("rb")
        status, _ = read_head(reader)  # the stream has begun: the conversation is claimed
        if status == 503:  # the burst of another thread has the queue
            tally.saw("409/first", 503, 503)
            return
        second = call(url, "POST", *request_for("chat", "ok", conversation))
        tally.saw("409/second message", second.response.status, 409)
        forget = call(url, "DELETE", f"/conversations/{conversation}")
        tally.saw("409/delete", forget.response.status, 409)
        rest = read_response_from_rest(reader)
        tally.saw("409/first", "done" if rest else "cut", "done")
    after = call(url, "POST", *request_for("chat", "ok", conversation))
    tally.saw("409/after", ending("chat", after.response), {"done", 503})


def read_response_from_rest(reader) -> bool:
    """Whether the rest of a chunked body arrives whole."""
    from tests.http_raw import read_chunk

    while (chunk := read_chunk(reader)) is not None:
        if chunk == b"":
            return True
    return False


SCENARIOS: list[tuple[Callable[[str, Tally, random.Random], None], int]] = [
    (generation, 12),
    (leaving, 3),
    (bad_request, 3),
    (read, 2),
    (conflict, 1),
]


def burst(url: str, tally: Tally) -> None:
    """More slow chats at once than places and queue seats: the rest get 503 at once."""
    results: list[int | str] = []

    def one(_: int) -> None:
        answer = call(url, "POST", *request_for("chat-text", "slow"))
        response = answer.response
        retry = response.status != 503 or response.headers.get("retry-after", "").isdigit()
        results.append(ending("chat-text", response) if retry else "503 without Retry-After")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(FLOOD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got in results:
        tally.saw("burst", got, {"done", 503})
    if 503 not in results:
        tally.problems.append(f"burst of {FLOOD}: no 503 ({Counter(results)})")


def run_mix(url: str, tally: Tally, count: int, seed: int) -> None:
    """`count` requests from the scenarios, over CLIENTS threads, then one burst."""
    weights = [weight for _, weight in SCENARIOS]
    jobs = iter(range(count))
    jobs_lock = threading.Lock()

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        while True:
            with jobs_lock:
                if next(jobs, None) is None:
                    return
            scenario = rng.choices([s for s, _ in SCENARIOS], weights)[0]
            try:
                scenario(url, tally, rng)
            except Exception as exc:  # an unanswered request is a finding, not a crash
                with tally.lock:
                    tally.problems.append(f"{scenario.__name__}: {exc!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    burst(url, tally)


# --- measuring the worker from outside ------------------------------------------------------


def sockets_of(pid: int) -> dict[int, tuple[int, int, str]]:
    """The worker's TCP sockets by inode: (local port, remote port, state)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    found = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            inode = int(fields[9])
            if inode in inodes:
                local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
                found[inode] = (local, remote, fields[3])
    return found


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text."""
    pattern = re.compile(rf"^{name}(?:{{[^}}]*}})? (\S+)$", re.M)
    return sum(float(value) for value in pattern.findall(text))


def snapshot(server: RunningServer, worker: int, fake_port: int) -> dict[str, float]:
    """Every figure the run is judged on, read now."""
    port = int(server.url.rsplit(":", 1)[1])
    sockets = sockets_of(worker).values()
    upstream = sum(1 for _, remote, _ in sockets if remote == fake_port)
    clients = sum(1 for local, _, state in sockets if local == port and state != "0A")
    fds = len(list(Path(f"/proc/{worker}/fd").iterdir()))
    threads = next(
        int(line.split()[1])
        for line in Path(f"/proc/{worker}/status").read_text().splitlines()
        if line.startswith("Threads:")
    )
    metrics = call(server.url, "GET", "/metrics").response.body.decode()
    return {
        "client connections": clients,
        "upstream connections": upstream,
        "fds beside upstream": fds - upstream,
        "threads": threads,
        "RSS MB": round(rss_mb(worker), 1),
        "conversations kept": metric(metrics, "piagent_conversations"),
        "generations": metric(metrics, "piagent_active_generations"),
        "queued": metric(metrics, "piagent_queue_depth"),
        "500s": sum(float(value) for value in _FIVE_HUNDREDS.findall(metrics)),
    }


_FIVE_HUNDREDS = re.compile(r'^piagent_http_requests_total{.*status="500".*} (\S+)$', re.M)


def settled(server: RunningServer, worker: int, fake_port: int) -> dict[str, float]:
    """A snapshot once the worker has let go of every client and generation."""

    def quiet() -> dict[str, float] | None:
        now = snapshot(server, worker, fake_port)
        busy = now["generations"] or now["queued"] or now["client connections"]
        return None if busy else now

    return wait_until(quiet, 30, interval=0.1, what="the worker to settle")


def still_claimed(url: str, conversations: set[str]) -> list[str]:
    """Conversations some ended request still holds: a delete of them answers 409."""
    held = []
    for conversation in sorted(conversations):
        if call(url, "DELETE", f"/conversations/{conversation}").response.status == 409:
            held.append(conversation)
    return held


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Report:
    """The figures before and after, what was sent and seen, and what went wrong."""

    before: dict[str, float]
    after: dict[str, float]
    requests: int
    seconds: float
    tally: Tally
    held: list[str]

    @property
    def broken(self) -> list[str]:
        """Every bound passed and every wrong answer."""
        found = list(self.tally.problems)
        for name, (kind, bound) in BOUNDS.items():
            before, after = self.before[name], self.after[name]
            if (after - before if kind == "grows by" else after) > bound:
                found.append(f"{name}: {before:g} -> {after:g}, past its bound ({kind} {bound:g})")
        if self.tally.statuses[500]:
            found.append(f"500 answered {self.tally.statuses[500]} times")
        if self.held:
            found.append(f"{len(self.held)} conversations still claimed: {self.held[:5]}")
        return found

    def lines(self) -> Iterator[str]:
        """The report as printed."""
        yield f"{self.requests} requests in {self.seconds:.0f} s, one gevent worker"
        yield f"{'figure':<24}{'before':>10}{'after':>10}  bound"
        for name, (kind, bound) in BOUNDS.items():
            yield f"{name:<24}{self.before[name]:>10g}{self.after[name]:>10g}  {kind} {bound:g}"
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.tally.statuses.items()))
        endings = Counter()
        for (_, got), count in self.tally.outcomes.items():
            endings[got] += count
        yield f"answers by status: {statuses}; clients that left on purpose: {self.tally.left}"
        yield f"200s whole: {endings['done']}, cut short by a fault as documented: {endings['cut']}"
        yield f"conversations claimed after the run: {len(self.held)}"
        yield f"problems: {len(self.broken)}"
        yield from (f"  {problem}" for problem in self.broken[:20])


@contextmanager
def soaked_server(log_dir: Path) -> Iterator[tuple[RunningServer, int, FakeOllama]]:
    """The fake, scripted per request, and piagent under gunicorn in front of it."""
    with FakeOllama(models={MODEL}) as fake:
        fake.behave_per_request(choose)
        env = {"OLLAMA_HOST": fake.url, **SERVER_ENV}
        with gunicorn(env, log_dir) as server:
            yield server, children(server.pid)[0], fake


def soak(requests: int, *, seed: int = 1, log_dir: Path | None = None) -> Report:
    """Warm up, measure, run `requests` requests in rounds, measure again."""
    with tempfile.TemporaryDirectory() as tmp, soaked_server(log_dir or Path(tmp)) as running:
        server, worker, fake = running
        tally = Tally()
        # Warm-up: every lazily made thing (pools, caches, helper threads) exists after it.
        run_mix(server.url, Tally(), 100, seed=seed + 10_000)
        before = settled(server, worker, fake.port)
        started = time.monotonic()
        rounds = max(1, requests // 1000)
        for number in range(rounds):
            run_mix(server.url, tally, requests // rounds, seed=seed + number)
            fake.reset()  # the fake's own records only; its script stays
            fake.behave_per_request(choose)
        seconds = time.monotonic() - started
        after = settled(server, worker, fake.port)
        held = still_claimed(server.url, tally.conversations)
        return Report(before, after, requests, seconds, tally, held)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    report = soak(args.requests, seed=args.seed)
    for line in report.lines():
        print(line)
    sys.exit(1 if report.broken else 0)


if __name__ == "__main__":
    main()
