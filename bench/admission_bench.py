"""Benchmark of admission control and the per-request bookkeeping, run by hand.

    .venv/bin/python bench/admission_bench.py            # about half a minute
    .venv/bin/python bench/admission_bench.py --rounds 10

Starts the tests' fake Ollama (a process of its own, every answer held for a minute)
and piagent under `gunicorn -c gunicorn.conf.py` with the default limits, fills the one
place and the four queue places, then sends rounds of 10 simultaneous requests:

- refusals: POST /chat while the queue is full, each answered 503 at once;
- baseline: GET /health from the same 10 clients in the same way.

A refusal should cost what a health check costs (ratio near 1) and stay under 100 ms.
It also times GET /metrics against GET /health, and, in this process, piagent's
GET /health against a bare Flask app's (bench/floor_app.py): the difference is what the
request id, log line and metrics cost per request. The machine is shared and noisy:
compare figures from one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_upstream import fake_process  # noqa: E402
from bench.stats import percentile  # noqa: E402
from tests.http_raw import read_response, send_request  # noqa: E402
from tests.servers import gunicorn, run_in_threads, wait_until  # noqa: E402

CLIENTS = 10
HELD = 5  # one generating, four queued: the defaults


def burst(url: str, request: bytes, expected: int) -> list[float]:
    """CLIENTS pre-connected sockets send `request` at once; seconds until each answer."""
    host, port = url.removeprefix("http://").split(":")
    sockets = [socket.create_connection((host, int(port)), timeout=10) for _ in range(CLIENTS)]
    start = threading.Barrier(CLIENTS)
    times: list[float] = []

    def one(sock: socket.socket) -> None:
        start.wait()
        sent = time.perf_counter()
        sock.sendall(request)
        status = read_response(sock).status
        times.append(time.perf_counter() - sent)
        if status != expected:
            raise RuntimeError(f"expected {expected}, got {status}")

    run_in_threads(one, sockets)
    for sock in sockets:
        sock.close()
    return times


def http(method: str, host: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    return (head + "Content-Type: application/json\r\n\r\n").encode() + body


def sequential_ms(call: Callable[[], object], count: int) -> float:
    """Median milliseconds of `count` calls, one after another."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def row(name: str, ours: float, baseline: float, target: str = "") -> None:
    print(
        f"{name:44} {ours:8.2f} ms  {baseline:8.2f} ms  x{ours / baseline:6.2f}  {target}",
        flush=True,
    )


def live(rounds: int) -> None:
    with fake_process(first_token_delay=60) as fake_url, tempfile.TemporaryDirectory() as tmp:
        env = {"OLLAMA_HOST": fake_url}
        with gunicorn(env, Path(tmp)) as server:
            host = server.url.removeprefix("http://")
            chat = http("POST", host, "/chat", json.dumps({"message": "hi"}).encode())
            held = [send_request(server.url, "/chat", {"message": "hi"}) for _ in range(HELD)]

            session = requests.Session()

            def get(path: str) -> str:
                return session.get(f"{server.url}{path}", timeout=10).text

            def queue_full() -> bool:
                return "piagent_queue_depth 4.0" in get("/metrics")

            wait_until(queue_full, 10, what="the queue to fill")

            refusals: list[float] = []
            health: list[float] = []
            for _ in range(rounds):
                health += burst(server.url, http("GET", host, "/health"), 200)
                refusals += burst(server.url, chat, 503)
            for name, p in (("p50", 50), ("p99", 99)):
                row(
                    f"refusal {name}, {CLIENTS} at once (vs GET /health)",
                    percentile(refusals, p) * 1000,
                    percentile(health, p) * 1000,
                    "<= 100 ms" if name == "p99" else "",
                )
            row(
                "refusal worst (vs GET /health worst)",
                max(refusals) * 1000,
                max(health) * 1000,
                "<= 100 ms",
            )
            row(
                "GET /metrics, one at a time (vs /health)",
                sequential_ms(lambda: get("/metrics"), 200),
                sequential_ms(lambda: get("/health"), 200),
            )
            for sock in held:
                sock.close()


def in_process(count: int) -> None:
    """piagent's hooks per request: its /health against a bare Flask app's, no sockets."""
    from bench.floor_app import app as floor
    from piagent.app import create_app
    from piagent.settings import Settings

    logging.getLogger("piagent").handlers.clear()
    logging.getLogger("piagent").addHandler(logging.FileHandler("/dev/null"))
    piagent = create_app(Settings()).test_client()
    bare = floor.test_client()
    for client in (piagent, bare):  # warm up
        sequential_ms(lambda c=client: c.get("/health"), 200)
    row(
        "in-process GET /health (vs bare Flask app)",
        sequential_ms(lambda: piagent.get("/health"), count),
        sequential_ms(lambda: bare.get("/health"), count),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="bursts of each kind")
    rounds = parser.parse_args().rounds
    print(f"{'figure':44} {'piagent':>11}  {'baseline':>11}  {'ratio':>7}  target")
    live(rounds)
    in_process(2000)


if __name__ == "__main__":
    main()
