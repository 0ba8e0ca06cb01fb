"""Benchmark of piagent's stream path under gunicorn (one gevent worker), run by hand.

    .venv/bin/python bench/stream_bench.py            # everything, about two minutes
    .venv/bin/python bench/stream_bench.py --quick    # smaller counts, for a smoke run

It starts the fake Ollama from the tests (in this process) and piagent under
`gunicorn -c gunicorn.conf.py`, then sends the same traffic once through piagent and
once straight to the fake. Each figure is printed beside that direct baseline, and the
difference or ratio is what piagent costs. The machine is shared and noisy: compare
figures from one run, not across runs.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # the load generator and the fake run as greenlets in this process

import argparse  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from itertools import pairwise  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_ollama import FakeOllama  # noqa: E402
from tests.http_raw import read_response, send_request  # noqa: E402
from tests.servers import gunicorn  # noqa: E402

MODEL = "qwen2.5:3b-instruct"
CHAT = {"message": "hello", "stream": False}
DIRECT_CHAT = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "hello"}],
    "stream": False,
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_pid(master_pid: int) -> int:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return int(children[0])


def request_once(url: str, path: str, body: dict, stream: bool = False) -> tuple[float, float]:
    """Send one POST; return (time to first body byte, total time) in seconds."""
    started = time.perf_counter()
    sock = send_request(url, path, body)
    with sock:
        response = read_response(sock, max_chunks=1 if stream else None)
        first = time.perf_counter() - started
        if stream:
            read_response_tail(sock)
    if response.status != 200:
        raise RuntimeError(f"status {response.status}")
    return first, time.perf_counter() - started


def get_once(url: str, path: str) -> None:
    sock = socket.create_connection(url.removeprefix("http://").split(":"), timeout=10)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass


def run_load(call: Callable[[], object], clients: int, count: int) -> tuple[list[float], float]:
    """Run `count` calls over `clients` greenlets; return (latencies, requests per second)."""
    latencies: list[float] = []

    def one(_: int) -> None:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    Pool(clients).map(one, range(count))
    return latencies, count / (time.perf_counter() - started)


def row(name: str, piagent: float, direct: float | None, unit: str, target: str = "") -> None:
    if direct is None:
        compare = ""
    elif unit == "ms":
        compare = f"{direct:9.2f} {unit}   +{piagent - direct:7.2f} {unit}"
    else:
        compare = f"{direct:9.1f} {unit}   x{piagent / direct:6.2f}"
    print(f"{name:44} {piagent:9.2f} {unit:5} {compare:32} {target}")


def cancellation_delay(
    fake: FakeOllama, url: str, path: str, body: dict, after_chunks: int
) -> float:
    """Close the client at the chosen moment; return ms until the fake saw its request close."""
    fake.reset()
    if after_chunks:
        fake.behave(tokens=["a"] * 5, token_delay=3)
    else:
        fake.behave(first_token_delay=10)
    sock = send_request(url, path, body)
    if after_chunks:
        read_response(sock, max_chunks=after_chunks)
    else:
        fake.wait_for_generation_start(timeout=5)
    closed_at = time.monotonic()
    sock.close()
    generation = fake.wait_for_client_close(timeout=5)
    return (generation.client_closed_at - closed_at) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    n = lambda count: max(10, int(count * scale))  # noqa: E731

    with FakeOllama(models={MODEL}) as fake, tempfile.TemporaryDirectory() as tmp:
        env = {"OLLAMA_HOST": fake.url, "ACCESS_LOG": ""}
        with gunicorn(env, Path(tmp)) as server:
            worker = worker_pid(server.pid)
            fake.behave(tokens=["Hel", "lo", "!"])
            print(f"{'figure':44} {'piagent':>15} {'direct to fake':>16} {'added':>14}   target")

            idle = rss_mb(worker)
            row("idle RSS of the worker", idle, None, "MB", "<= 45 MB")

            _, health_rps = run_load(lambda: get_once(server.url, "/health"), 16, n(3000))
            _, root_rps = run_load(lambda: get_once(fake.url, "/"), 16, n(3000))
            row("GET /health, 16 clients", health_rps, root_rps, "req/s")

            for clients in (1, 16):
                ours, ours_rps = run_load(
                    lambda: request_once(server.url, "/chat", CHAT), clients, n(1000)
                )
                base, base_rps = run_load(
                    lambda: request_once(fake.url, "/api/chat", DIRECT_CHAT), clients, n(1000)
                )
                for p in (50, 99):
                    target = "<= +3 ms" if (clients, p) == (1, 50) else ""
                    row(
                        f"non-stream latency p{p}, {clients} client(s)",
                        percentile(ours, p) * 1000,
                        percentile(base, p) * 1000,
                        "ms",
                        target,
                    )
                row(
                    f"non-stream chats/s, {clients} client(s)",
                    ours_rps,
                    base_rps,
                    "req/s",
                    ">= 400/s" if clients == 16 else "",
                )

            fake.behave(tokens=["a", "b", "c"], first_token_delay=0.01)
            stream_body = {**CHAT, "stream": True}
            direct_stream = {**DIRECT_CHAT, "stream": True}
            ours = [request_once(server.url, "/chat", stream_body, True)[0] for _ in range(n(200))]
            base = [
                request_once(fake.url, "/api/chat", direct_stream, True)[0] for _ in range(n(200))
            ]
            row(
                "stream time to first byte p50",
                statistics.median(ours) * 1000,
                statistics.median(base) * 1000,
                "ms",
                "<= +3 ms",
            )

            fake.behave(tokens=[f"t{i}" for i in range(21)], token_delay=0.05)
            ours_gaps = chunk_gaps_ms(server.url, "/chat", stream_body)
            base_gaps = chunk_gaps_ms(fake.url, "/api/chat", direct_stream)
            row(
                "gap between chunks (fake: 50 ms), mean",
                statistics.mean(ours_gaps),
                statistics.mean(base_gaps),
                "ms",
            )
            row(
                "gap between chunks, worst deviation",
                max(abs(g - 50) for g in ours_gaps),
                max(abs(g - 50) for g in base_gaps),
                "ms",
            )

            streams = n(1000)
            fake.behave(tokens=["x"] * 50, token_delay=0.1)  # 5 seconds each
            ours = concurrent_streams(server.url, "/chat", stream_body, streams, worker)
            base = concurrent_streams(fake.url, "/api/chat", direct_stream, streams, None)
            for label, (completed, errors, ttfb_p99, peak) in (("piagent", ours), ("direct", base)):
                line = (
                    f"{streams} concurrent 5 s streams, {label}: completed {completed}, "
                    f"errors {errors}, time to first byte p99 {ttfb_p99:.0f} ms"
                )
                if peak is not None:
                    line += f", worker peak RSS {peak:.1f} MB (targets: 0 errors, <= 150 MB)"
                print(line)

            for case, path, body, after in (
                ("mid-stream", "/chat", stream_body, 1),
                ("before the first token", "/chat", stream_body, 0),
                ("non-stream", "/chat", CHAT, 0),
            ):
                ours = cancellation_delay(fake, server.url, path, body, after)
                direct_body = direct_stream if body.get("stream") else DIRECT_CHAT
                base = cancellation_delay(fake, fake.url, "/api/chat", direct_body, after)
                row(f"client close -> upstream close, {case}", ours, base, "ms", "<= 50 ms")


def chunk_gaps_ms(url: str, path: str, body: dict) -> list[float]:
    """The gaps between the chunks of one paced stream."""
    sock = send_request(url, path, body)
    with sock:
        times = read_response(sock).arrival_times
    return [(b - a) * 1000 for a, b in pairwise(times)]


def concurrent_streams(
    url: str, path: str, body: dict, count: int, worker: int | None
) -> tuple[int, int, float, float | None]:
    """Open `count` streams at once; return (completed, errors, TTFB p99 ms, peak RSS MB)."""
    first_bytes: list[float] = []
    errors: list[str] = []
    peak = [rss_mb(worker)] if worker else []

    def stream_once(_: int) -> None:
        try:
            started = time.perf_counter()
            sock = send_request(url, path, body)
            with sock:
                head = read_response(sock, max_chunks=1)
                first_bytes.append(time.perf_counter() - started)
                complete = read_response_tail(sock)
            if head.status != 200 or not complete:
                errors.append(f"status {head.status}, complete {complete}")
        except Exception as exc:  # counted, not raised: the count is the figure
            errors.append(repr(exc))

    def sample_rss() -> None:
        while True:
            peak.append(rss_mb(worker))
            gevent.sleep(0.2)

    sampler = gevent.spawn(sample_rss) if worker else None
    Pool(count).map(stream_once, range(count))
    if sampler:
        sampler.kill()
    completed = len(first_bytes) - len(errors)
    return completed, len(errors), percentile(first_bytes, 99) * 1000, max(peak, default=None)


def read_response_tail(sock: socket.socket) -> bool:
    """Drain a chunked body; True when its terminating chunk arrived."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if data.endswith(b"0\r\n\r\n"):
            return True
    return False


if __name__ == "__main__":
    main()
