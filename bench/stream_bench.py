"""Benchmark of piagent's stream path under gunicorn (one gevent worker), run by hand.

    .venv/bin/python bench/stream_bench.py            # everything, about three minutes
    .venv/bin/python bench/stream_bench.py --quick    # smaller counts, for a smoke run

Each phase starts the tests' fake Ollama (in a process of its own) and piagent under
`gunicorn -c gunicorn.conf.py` pointing at it, then sends the same traffic once through
piagent and once straight to the fake. Each figure is printed beside that direct
baseline; the difference or ratio is what piagent costs. The machine is shared and
noisy: compare figures from one run, not across runs.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # the load generator runs as greenlets

import argparse  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from itertools import pairwise  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.fake_upstream import fake_process  # noqa: E402
from bench.processes import FLOOR_APP, piagent, rss_mb  # noqa: E402
from bench.stats import percentile  # noqa: E402
from tests.fake_ollama import FakeOllama  # noqa: E402
from tests.http_raw import read_response, send_request  # noqa: E402

MODEL = "qwen2.5:3b-instruct"
CHAT = {"message": "hello", "stream": False}
STREAM = {"message": "hello", "stream": True}
DIRECT_CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "stream": False}
DIRECT_STREAM = {**DIRECT_CHAT, "stream": True}


# --- clients ------------------------------------------------------------------------------


def post(url: str, path: str, body: dict) -> float:
    """One POST read to its end; returns the time to the first body chunk, in seconds."""
    started = time.monotonic()
    sock = send_request(url, path, body)
    with sock:
        response = read_response(sock)
    if response.status != 200 or not response.complete:
        raise RuntimeError(f"status {response.status}, complete: {response.complete}")
    chunked = bool(response.arrival_times)
    return (response.arrival_times[0] if chunked else time.monotonic()) - started


def get(url: str, path: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass


def load(call: Callable[[], object], clients: int, count: int) -> tuple[list[float], float]:
    """`count` calls over `clients` greenlets; returns (latencies, calls per second)."""
    latencies: list[float] = []

    def one(_: int) -> None:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    Pool(clients).map(one, range(count))
    return latencies, count / (time.perf_counter() - started)


def chunk_gaps_ms(url: str, path: str, body: dict) -> list[float]:
    sock = send_request(url, path, body)
    with sock:
        times = read_response(sock).arrival_times
    return [(b - a) * 1000 for a, b in pairwise(times)]


def concurrent_streams(url: str, path: str, body: dict, count: int, worker: int | None):
    """`count` streams at once; returns (completed, errors, TTFB p99 ms, peak worker RSS)."""
    first_bytes: list[float] = []
    errors: list[str] = []
    peak = [rss_mb(worker)] if worker else []

    def one(_: int) -> None:
        try:
            first_bytes.append(post(url, path, body))
        except Exception as exc:  # counted, not raised: the count is the figure
            errors.append(repr(exc))

    def sample_rss() -> None:
        while True:
            peak.append(rss_mb(worker))
            gevent.sleep(0.1)

    sampler = gevent.spawn(sample_rss) if worker else None
    Pool(count).map(one, range(count))
    if sampler:
        sampler.kill()
    ttfb = percentile(first_bytes, 99) * 1000 if first_bytes else float("nan")
    return len(first_bytes), len(errors), ttfb, max(peak, default=None)


def cancellation_ms(fake: FakeOllama, url: str, path: str, body: dict, mid_stream: bool) -> float:
    """Close the client mid-stream or before any token; ms until the fake saw its request close."""
    fake.reset()
    if mid_stream:
        fake.behave(tokens=["a"] * 5, token_delay=3)
    else:
        fake.behave(first_token_delay=10)
    sock = send_request(url, path, body)
    if mid_stream:
        read_response(sock, max_chunks=1)
    else:
        fake.wait_for_generation_start(timeout=5)
    closed_at = time.monotonic()
    sock.close()
    return (fake.wait_for_client_close(timeout=5).client_closed_at - closed_at) * 1000


# --- report -------------------------------------------------------------------------------


def row(name: str, ours: float, direct: float | None, unit: str, target: str = "") -> None:
    if direct is None:
        compare = ""
    elif unit in ("ms", "MB"):
        compare = f"{direct:9.2f} {unit}  {ours - direct:+8.2f} {unit}"
    else:
        compare = f"{direct:9.1f} {unit}  x{ours / direct:7.2f}"
    print(f"{name:46} {ours:9.2f} {unit:5} {compare:31}  {target}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    scale = 0.2 if parser.parse_args().quick else 1.0

    def n(count: int) -> int:
        return max(10, int(count * scale))

    print(f"{'figure':46} {'piagent':>15} {'direct to fake':>15} {'difference':>14}  target")

    with fake_process() as fake_url, piagent(fake_url, FLOOR_APP) as (_, floor_pid):
        floor_rss = rss_mb(floor_pid)
    with fake_process(tokens=["Hel", "lo", "!"]) as fake_url, piagent(fake_url) as (server, pid):
        row("idle RSS of the worker (vs bare Flask app)", rss_mb(pid), floor_rss, "MB", "<= 45 MB")
        health = load(lambda: get(server.url, "/health"), 16, n(3000))[1]
        fake_root = load(lambda: get(fake_url, "/"), 16, n(3000))[1]
        row("GET /health, 16 clients", health, fake_root, "req/s")
        for clients in (1, 16):
            ours, ours_rate = load(lambda: post(server.url, "/chat", CHAT), clients, n(2000))
            base, base_rate = load(
                lambda: post(fake_url, "/api/chat", DIRECT_CHAT), clients, n(2000)
            )
            for p in (50, 99):
                row(
                    f"non-stream latency p{p}, {clients} client(s)",
                    percentile(ours, p) * 1000,
                    percentile(base, p) * 1000,
                    "ms",
                    "<= +3 ms" if (clients, p) == (1, 50) else "",
                )
            target = ">= 400/s" if clients == 16 else ""
            row(f"non-stream chats/s, {clients} client(s)", ours_rate, base_rate, "req/s", target)

    with (
        fake_process(tokens=["a", "b", "c"], first_token_delay=0.01) as fake_url,
        piagent(fake_url) as (server, _),
    ):
        ours = [post(server.url, "/chat", STREAM) for _ in range(n(300))]
        base = [post(fake_url, "/api/chat", DIRECT_STREAM) for _ in range(n(300))]
        row("stream time to first byte p50", statistics.median(ours) * 1000,
            statistics.median(base) * 1000, "ms", "<= +3 ms")  # fmt: skip

    tokens = [f"t{i}" for i in range(21)]
    with (
        fake_process(tokens=tokens, token_delay=0.05) as fake_url,
        piagent(fake_url) as (
            server,
            _,
        ),
    ):
        ours = chunk_gaps_ms(server.url, "/chat", STREAM)
        base = chunk_gaps_ms(fake_url, "/api/chat", DIRECT_STREAM)
        row("gap between chunks (fake: 50 ms), mean", statistics.mean(ours),
            statistics.mean(base), "ms")  # fmt: skip
        row("gap between chunks, worst |gap - 50 ms|", max(abs(g - 50) for g in ours),
            max(abs(g - 50) for g in base), "ms")  # fmt: skip

    streams = n(1000)
    # Ten tokens half a second apart: a five-second stream, paced like a small model.
    with (
        fake_process(tokens=["x "] * 10, token_delay=0.5) as fake_url,
        piagent(fake_url) as (
            server,
            pid,
        ),
    ):
        for label, url, path, body, worker in (
            ("piagent", server.url, "/chat", STREAM, pid),
            ("direct", fake_url, "/api/chat", DIRECT_STREAM, None),
        ):
            completed, errors, ttfb, peak = concurrent_streams(url, path, body, streams, worker)
            line = (
                f"{streams} concurrent 5 s streams, {label}: {completed} completed, "
                f"{errors} errors, time to first byte p99 {ttfb:.0f} ms"
            )
            if peak is not None:
                line += f", worker peak RSS {peak:.1f} MB   (0 errors, <= 150 MB)"
            print(line, flush=True)

    # The cancellation phase needs the fake's own clock of when it saw a close.
    with FakeOllama(models={MODEL}) as fake, piagent(fake.url) as (server, _):
        for case, body, direct, mid_stream in (
            ("mid-stream", STREAM, DIRECT_STREAM, True),
            ("before the first token", STREAM, DIRECT_STREAM, False),
            ("non-stream", CHAT, DIRECT_CHAT, False),
        ):
            ours = cancellation_ms(fake, server.url, "/chat", body, mid_stream)
            base = cancellation_ms(fake, fake.url, "/api/chat", direct, mid_stream)
            row(f"client close -> upstream close, {case}", ours, base, "ms", "<= 50 ms")


if __name__ == "__main__":
    main()
