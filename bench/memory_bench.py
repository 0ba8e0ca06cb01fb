"""Benchmark of the memory backends, run by hand.

    .venv/bin/python bench/memory_bench.py            # about a minute
    .venv/bin/python bench/memory_bench.py --quick    # smaller counts, for a smoke run

1. Chat latency and throughput per backend: piagent under `gunicorn -c gunicorn.conf.py`
   (one gevent worker) in front of the tests' fake Ollama (in a process of its own),
   once per MEMORY_BACKEND, plus ENABLE_MEMORY=false. Every figure is printed beside
   the `memory` backend measured in the same run; the difference is what the backend
   costs. Targets: sqlite and redis add at most 2 ms to the median chat.
2. RSS of a process holding 100,000 distinct conversations of 8 short messages in the
   `memory` backend, uncapped and with the default MEMORY_MAX_CONVERSATIONS. Target:
   under 150 MB, or capped sooner.

Only loopback addresses are used; redis-server is started here on a free port.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_upstream import fake_process  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402
from tests.servers import gunicorn  # noqa: E402

ANSWER = ["Sure", ", here", " is", " a", " short", " answer", "."]
TARGET_ADDED_P50_MS = 2.0
TARGET_RSS_MB = 150.0
CONVERSATIONS_FOR_RSS = 100_000


# --- latency and throughput ---------------------------------------------------------------


def chat(http: requests.Session, url: str, conversation_id: str, message: str) -> None:
    body = {"message": message, "conversation_id": conversation_id}
    http.post(f"{url}/chat", json=body, timeout=30).raise_for_status()


def sequential_latencies(url: str, http: requests.Session, count: int, offset: int) -> list[float]:
    """Milliseconds per chat, one at a time, over twenty conversations in turn."""
    latencies = []
    for i in range(offset, offset + count):
        started = time.perf_counter()
        # Each call reads a full history and saves to it.
        chat(http, url, f"seq-{i % 20}", f"question number {i}")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def throughput(url: str, clients: int, per_client: int) -> float:
    """Chats a second with `clients` sending at once, each on its own conversations."""

    def client(n: int) -> None:
        with requests.Session() as http:
            for i in range(per_client):
                chat(http, url, f"load-{n}-{i % 5}", f"question number {i}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(client, n) for n in range(clients)]:
            done.result()
    return clients * per_client / (time.perf_counter() - started)


def backend_envs(tmp: Path, redis_url: str | None) -> dict[str, dict[str, str]]:
    envs = {
        "memory": {"MEMORY_BACKEND": "memory"},
        "off": {"ENABLE_MEMORY": "false"},
        "sqlite": {"MEMORY_BACKEND": "sqlite", "MEMORY_PATH": str(tmp / "memory.sqlite3")},
    }
    if redis_url:
        envs["redis"] = {"MEMORY_BACKEND": "redis", "REDIS_URL": redis_url}
    return envs


def latency_phase(quick: bool) -> list[str]:
    """Every backend served at once and measured in alternating rounds, so that the noise
    of a shared machine falls on all of them alike."""
    rounds, per_round, clients, per_client = (4, 50, 8, 25) if quick else (10, 100, 16, 50)
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_process(tokens=ANSWER) as fake_url,
        ExitStack() as stack,
    ):
        tmp_path = Path(tmp)
        try:
            redis_url = stack.enter_context(redis_server(tmp_path)).url
        except BaseException as exc:  # pytest's skip/fail outcomes are BaseExceptions
            print(f"(no redis row: {exc})")
            redis_url = None
        urls, sessions = {}, {}
        for name, env in backend_envs(tmp_path, redis_url).items():
            log_dir = tmp_path / name
            log_dir.mkdir()
            # Every client at once reaches the model: this measures memory, not the queue.
            env = {
                "OLLAMA_HOST": fake_url,
                "ACCESS_LOG": "",
                "MAX_CONCURRENT_GENERATIONS": str(clients),
                **env,
            }
            urls[name] = stack.enter_context(gunicorn(env, log_dir)).url
            sessions[name] = stack.enter_context(requests.Session())
            for i in range(50):  # warm up: connections, caches, the first SQLite pages
                chat(sessions[name], urls[name], f"warm-{i % 10}", "warming up")
        latencies = {name: [] for name in urls}
        rates = {name: [] for name in urls}
        for r in range(rounds):
            for name, url in urls.items():
                latencies[name] += sequential_latencies(
                    url, sessions[name], per_round, r * per_round
                )
                rates[name].append(throughput(url, clients, per_client))
    base_p50 = statistics.median(latencies["memory"])
    base_rate = statistics.median(rates["memory"])
    lines = [
        f"chat through gunicorn (1 gevent worker each), {rounds} alternating rounds of "
        f"{per_round} one at a time and {clients} clients x {per_client} at once",
        f"{'backend':<8} {'p50 ms':>8} {'p95 ms':>8} {'p50 - memory':>13} "
        f"{'p50 / memory':>13} {'chats/s':>9} {'/ memory':>9}",
    ]
    for name in urls:
        p50 = statistics.median(latencies[name])
        p95 = statistics.quantiles(latencies[name], n=20)[18]
        rate = statistics.median(rates[name])
        added = p50 - base_p50
        verdict = ""
        if name in ("sqlite", "redis"):
            verdict = "  ok" if added <= TARGET_ADDED_P50_MS else "  OVER TARGET"
        lines.append(
            f"{name:<8} {p50:8.2f} {p95:8.2f} {added:+13.2f} {p50 / base_p50:13.2f} "
            f"{rate:9.0f} {rate / base_rate:9.2f}{verdict}"
        )
    return lines


# --- RSS ----------------------------------------------------------------------------------

_FILL = """
import json, os, sys
from gevent import monkey
monkey.patch_all()  # as in a gunicorn gevent worker
from piagent.app import create_app
from piagent.memory.base import NewExchange
from piagent.settings import Settings

def rss_mb():
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

count, cap = int(sys.argv[1]), int(sys.argv[2])
app = create_app(Settings(memory_max_conversations=cap, memory_ttl_min=0))
store = app.extensions["piagent"].memory
before = rss_mb()
for c in range(count):
    cid = f"{c:08d}-4c1f-4a8e-9d7b-1f2e3d4c5b6a"  # as long as a uuid4
    for turn in range(4):  # as /chat does it: claim and recall, then keep and let go
        store.begin(cid, "bench", 60)
        exchange = NewExchange(f"short question {turn} here", f"a short answer, number {turn}", 1e9)
        store.end(cid, "bench", exchange)
print(json.dumps({"before": before, "after": rss_mb(), "kept": len(store)}))
"""


def rss_phase(quick: bool) -> list[str]:
    count = 20_000 if quick else CONVERSATIONS_FOR_RSS
    lines = [f"RSS with {count:,} distinct conversations of 8 short messages (memory backend)"]
    for label, cap in (("uncapped", count), ("default cap", 500)):
        result = subprocess.run(
            [sys.executable, "-c", _FILL, str(count), str(cap)],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            check=True,
        )
        figures = json.loads(result.stdout)
        after = figures["after"]
        verdict = "ok" if after < TARGET_RSS_MB else "OVER TARGET"
        lines.append(
            f"{label:<12} MEMORY_MAX_CONVERSATIONS={cap:<7} kept {figures['kept']:>7,}: "
            f"RSS {figures['before']:.0f} MB empty -> {after:.0f} MB "
            f"(+{after - figures['before']:.0f} MB, {after / figures['before']:.2f}x)  {verdict}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    args = parser.parse_args()
    report = latency_phase(args.quick) + [""] + rss_phase(args.quick)
    print("\n".join(report))


if __name__ == "__main__":
    main()
