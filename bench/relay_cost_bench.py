"""What relaying costs piagent's worker in CPU, beside nginx relaying the same stream, run by hand.

    .venv/bin/python bench/relay_cost_bench.py                # 3 rounds, about four minutes
    .venv/bin/python bench/relay_cost_bench.py --streams 10 --tokens 500 --rounds 1
    .venv/bin/python bench/relay_cost_bench.py --profile DIR  # and py-spy's top frames
    .venv/bin/python bench/relay_cost_bench.py --against DIR --requests 4000

The tests' fake Ollama (a process of its own) sends every token the moment it can.
`--streams` streams of `--tokens` tokens are read at once, in turn through piagent
(one gevent worker under `gunicorn -c gunicorn.conf.py`) as plain text, NDJSON, SSE
and /v1 chunks, through nginx proxying the fake directly with the shipped site's
settings (the floor a proxy can reach), and through bench/floor_app.py passing the
fake's chunks back untouched under the same gunicorn settings (the floor this stack can
reach). Each worker (nginx's too) is kept on CPU 0 and everything else on CPU 1; its
CPU time (user + system, from /proc) over the tokens relayed is the figure. Then, one
client at a time against a fake answering three tokens: the worker's CPU per non-stream
/chat beside the floor's (bench/floor_app.py again, making the same call with
`requests`: the least this stack spends on a relayed request; the two served at once,
in alternating blocks of requests), and the time to a stream's first byte and to a
whole non-stream reply, beside the fake asked directly.

The machine may be shared and noisy: each round prints its own figures and ratios,
and the summary gives the range over the rounds. On a quiet machine the worker keeps
up with what feeds it and reads more tokens at once whenever it falls behind, so its
CPU per token hardly follows the relay's own work; bench/relay_path_bench.py measures
that work alone. `--against` another checkout (an export of main) gives only the
per-request figures, of both and the floor at once.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # the load generator runs as greenlets

import argparse  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from gevent.pool import Pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fake_upstream import fake_process  # noqa: E402
from bench.processes import FLOOR_APP, children, cpu_seconds, piagent, pin  # noqa: E402
from bench.stream_bench import CHAT, DIRECT_CHAT, DIRECT_STREAM, STREAM, load, post  # noqa: E402
from tests.http_raw import encode_request  # noqa: E402
from tests.nginx import nginx, shipped_site  # noqa: E402
from tests.servers import RunningServer, free_port, wait_until  # noqa: E402

WORKER_CPU, LOAD_CPU = 0, 1
BLOCK = 200  # requests to one server before the next one's turn (per-request figures)
V1_STREAM = {"model": "general", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@dataclass(frozen=True)
class Route:
    """One way to ask for the same stream."""

    name: str
    path: str
    body: dict
    accept: str = "*/*"


ROUTES = [
    Route("text", "/chat", STREAM),
    Route("NDJSON", "/chat", STREAM, "application/x-ndjson"),
    Route("SSE", "/chat", STREAM, "text/event-stream"),
    Route("/v1 chunks", "/v1/chat/completions", V1_STREAM),
]
NGINX = Route("nginx -> fake", "/api/chat", DIRECT_STREAM)
# The same stream through bench/floor_app.py: the least this stack does to relay it.
BARE = Route("bare Flask relay", "/api/chat", DIRECT_STREAM)


def read_stream(url: str, route: Route) -> int:
    """One streamed request read to its end as fast as it comes; returns the bytes read."""
    host, port = url.removeprefix("http://").split(":")
    headers = {"Accept": route.accept, "Connection": "close"}
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(encode_request(url, route.path, route.body, headers))
        tail, size = b"", 0
        while data := sock.recv(262144):
            size += len(data)
            tail = (tail + data)[-5:]
    if not tail.endswith(b"0\r\n\r\n"):
        raise RuntimeError(f"{route.name}: the stream ended without its last chunk")
    return size


def cpu_per_token(url: str, route: Route, pid: int, streams: int, tokens: int) -> float:
    """Microseconds of `pid`'s CPU per token while `streams` streams are read at once."""
    before = cpu_seconds(pid)
    Pool(streams).map(lambda _: read_stream(url, route), range(streams))
    return (cpu_seconds(pid) - before) / (streams * tokens) * 1e6


def profiled(out: Path | None, url: str, route: Route, pid: int, args: argparse.Namespace) -> float:
    """cpu_per_token, with py-spy sampling `pid` into `out` (collapsed stacks) if asked."""
    if out is None:
        return cpu_per_token(url, route, pid, args.streams, args.tokens)
    spy = subprocess.Popen(
        [
            Path(sys.executable).with_name("py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "500",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)  # py-spy attaches
    try:
        return cpu_per_token(url, route, pid, args.streams, args.tokens)
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
        spy.wait(timeout=30)


def top_frames(collapsed: Path, count: int) -> list[str]:
    """The frames with the most samples of their own, and the share of all samples."""
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        own[stack.rsplit(";", 1)[-1]] += int(samples)
        total += int(samples)
    return [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(count)]


def stream_rounds(args: argparse.Namespace) -> dict[str, list[float]]:
    """Each round: nginx, the bare relay, then every route; µs of worker CPU per token, by route."""
    tokens = [f" w{i % 97}" for i in range(args.tokens)]
    figures: dict[str, list[float]] = defaultdict(list)
    with ExitStack() as stack:
        pinned = pin(0, LOAD_CPU)  # what starts from here (the fake, the servers) inherits it
        fake_url = stack.enter_context(fake_process(tokens=tokens))
        server, worker = stack.enter_context(piagent(fake_url))
        bare, bare_worker = stack.enter_context(piagent(fake_url, FLOOR_APP))
        site = shipped_site(fake_url.removeprefix("http://"), free_port())
        nginx_root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        proxy = stack.enter_context(nginx(site, nginx_root))
        nginx_worker = wait_until(lambda: children(proxy.pid), 10, what="nginx's worker")[0]
        if pinned:
            for pid in (worker, bare_worker, nginx_worker):
                pin(pid, WORKER_CPU)
        where = "pinned to CPU 0" if pinned else "not pinned (one CPU)"
        print(f"{args.streams} streams x {args.tokens} tokens at once, fake at full speed; "
              f"worker {where}", flush=True)  # fmt: skip
        measured = [(NGINX, proxy.url, nginx_worker), (BARE, bare.url, bare_worker)]
        measured += [(route, server.url, worker) for route in ROUTES]
        for route, url, _ in measured:  # warm up: connections, imports, first-use caches
            Pool(4).map(lambda _, r=route, u=url: read_stream(u, r), range(4))
        for r in range(1, args.rounds + 1):
            for route, url, pid in measured:
                out = None
                if args.profile and route in ROUTES and r == 1:
                    out = args.profile / f"{route.name.replace('/', '').replace(' ', '-')}.txt"
                figure = profiled(out, url, route, pid, args)
                figures[route.name].append(figure)
                by_nginx = figure / figures[NGINX.name][-1]
                print(f"round {r}  {route.name:16} {figure:7.1f} µs/token  "
                      f"{1e6 / figure / 1000:6.1f}k tokens/CPU-s  x{by_nginx:5.2f} nginx",
                      flush=True)  # fmt: skip
    return figures


def alternating(
    servers: dict[str, tuple[RunningServer, int]], requests: int
) -> dict[str, tuple[float, float]]:
    """Each server's worker CPU per non-stream /chat and latency p50, both in ms.

    One client at a time, in blocks of requests to each server in turn (the order
    reversed every other block), so that the machine's other load weighs on all alike.
    """
    cpu, taken = dict.fromkeys(servers, 0.0), {name: [] for name in servers}
    for server, worker in servers.values():
        pin(worker, WORKER_CPU)
        load(lambda url=server.url: post(url, "/chat", CHAT), 1, 200)  # warm up
    for block in range(max(2, requests // BLOCK)):
        for name, (server, worker) in sorted(servers.items(), reverse=block % 2 == 1):
            before = cpu_seconds(worker)
            taken[name] += load(lambda u=server.url: post(u, "/chat", CHAT), 1, BLOCK)[0]
            cpu[name] += cpu_seconds(worker) - before
    return {
        name: (cpu[name] / len(taken[name]) * 1000, statistics.median(taken[name]) * 1000)
        for name in servers
    }


def per_request(args: argparse.Namespace) -> list[str]:
    """One client at a time, a three-token answer: CPU per /chat, first byte and latency.

    The CPU is also given beside the floor (bench/floor_app.py: a bare Flask app making
    the same call to the model server with `requests`), served at the same time.
    """
    with ExitStack() as stack:
        fake_url = stack.enter_context(fake_process())
        server, worker = stack.enter_context(piagent(fake_url))
        floor = stack.enter_context(piagent(fake_url, FLOOR_APP))
        figures = alternating({"piagent": (server, worker), "floor": floor}, args.requests)
        direct, _ = load(lambda: post(fake_url, "/api/chat", DIRECT_CHAT), 1, args.requests)
        first = [post(server.url, "/chat", STREAM) for _ in range(args.requests)]
        first_direct = [post(fake_url, "/api/chat", DIRECT_STREAM) for _ in range(args.requests)]

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    (cpu_ms, latency), (floor_ms, _) = figures["piagent"], figures["floor"]
    return [
        f"worker CPU per non-stream /chat (floor)  {cpu_ms:6.2f} ms ({floor_ms:.2f} ms)"
        f"  x{cpu_ms / floor_ms:.2f} floor",
        f"stream first byte p50 (fake direct)      {ms(first):6.2f} ms ({ms(first_direct):.2f} ms)"
        f"  added {ms(first) - ms(first_direct):+.2f} ms",
        f"non-stream latency p50 (fake direct)     {latency:6.2f} ms ({ms(direct):.2f} ms)"
        f"  added {latency - ms(direct):+.2f} ms",
    ]


def against(args: argparse.Namespace) -> list[str]:
    """Worker CPU per non-stream /chat and latency p50 of this checkout, `--against`, the floor."""
    pin(0, LOAD_CPU)
    repos = {"this checkout": ROOT, str(args.against): args.against.resolve()}
    with ExitStack() as stack:
        fake_url = stack.enter_context(fake_process())
        servers = {n: stack.enter_context(piagent(fake_url, repo=r)) for n, r in repos.items()}
        servers["floor"] = stack.enter_context(piagent(fake_url, FLOOR_APP))
        figures = alternating(servers, args.requests)
    return [
        f"{name:30} worker CPU per non-stream /chat {cpu_ms:5.2f} ms, latency p50 {latency:5.2f} ms"
        for name, (cpu_ms, latency) in figures.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=500, help="one at a time, per figure")
    parser.add_argument("--profile", type=Path, help="write py-spy's samples of round 1 here")
    parser.add_argument(
        "--against", type=Path, help="another checkout: per-request figures of both"
    )
    args = parser.parse_args()
    if args.against:
        print("\n".join(against(args)))
        return
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    figures = stream_rounds(args)
    print(f"\nover {args.rounds} round(s): {'figure':18} {'µs/token':>13} "
          f"{'tokens/CPU-s':>15} {'x nginx':>13}")  # fmt: skip
    nginx_figures = figures[NGINX.name]
    for name, values in figures.items():
        ratios = [v / f for v, f in zip(values, nginx_figures, strict=True)]
        rates = [1000 / v for v in values]
        print(f"{'':17} {name:18} {min(values):5.1f}-{max(values):5.1f}   "
              f"{min(rates):5.1f}k-{max(rates):5.1f}k   "
              f"{min(ratios):4.2f}-{max(ratios):4.2f}")  # fmt: skip
    print()
    for line in per_request(args):
        print(line, flush=True)
    if args.profile:
        for collapsed in sorted(args.profile.glob("*.txt")):
            print(f"\npy-spy, {collapsed.stem}: frames with the most samples of their own")
            print("\n".join(top_frames(collapsed, 15)))


if __name__ == "__main__":
    main()
