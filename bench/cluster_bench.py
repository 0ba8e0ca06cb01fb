"""Benchmark of 1, 2 and 3 Pis behind the shipped cluster site, run by hand.

    .venv/bin/python bench/cluster_bench.py                 # about two minutes
    .venv/bin/python bench/cluster_bench.py --seconds 10    # a shorter run

Each Pi is piagent under `gunicorn -c gunicorn.conf.py`, set up as the README's "More
than one Pi" says (one generation at a time, no queue, conversations in one
redis-server), in front of a fake Ollama of its own (a process of its own) that
generates at a fixed speed; nginx serves config/nginx/piagent-cluster.conf in front of
them. CLIENTS clients chat at once for --seconds: each keeps one conversation going,
naming it in X-Conversation-Id from its second message on, reads each reply for THINK_S
before writing the next, and tries a refused chat again every RETRY_S (sooner than the
Retry-After it is given, so that no Pi waits for a client: the figure is what the Pis
can do; even three cannot keep up with these clients).

Prints completed chats per minute, the time to first token of the chats answered (p50,
p99, from the chat's first try, waits included; and p50 of those answered at their
first try), the refusals, how many clients got at least one answer, and the ratio to
one Pi. The first row, one client
straight to one fake, is the floor: what one model generating one reply at a time does
with nothing in between. The machine is shared and noisy: compare figures from one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_upstream import fake_process  # noqa: E402
from bench.stats import percentile  # noqa: E402
from tests.cluster import CLUSTER_PI_ENV, Pi  # noqa: E402
from tests.nginx import cluster_site, nginx  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402
from tests.servers import free_port  # noqa: E402

MODEL = "qwen2.5:3b-instruct"
HEADER = "X-Conversation-Id"
CLIENTS = 12
TOKENS_PER_S = 20
REPLY = [f"word{n} " for n in range(20)]  # one second of generation per reply
THINK_S = 1.0  # a client reads each reply before it writes the next message
RETRY_S = 0.25  # and tries a refused chat again this soon


@dataclass
class Figures:
    """What the clients of one run saw."""

    seconds: float
    first_token_s: list[float] = field(default_factory=list)
    first_try_s: list[float] = field(default_factory=list)  # of chats answered at once
    clients_served: set[int] = field(default_factory=set)
    refusals: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def per_minute(self) -> float:
        """Chats answered whole, per minute."""
        return len(self.first_token_s) / self.seconds * 60


@contextmanager
def cluster(size: int, root: Path) -> Iterator[str]:
    """`size` Pis, each with its own paced fake, one Redis, and nginx; yields nginx's URL."""
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(root))
        pis = []
        for index in range(size):
            fake_url = stack.enter_context(fake_process(tokens=REPLY, token_delay=1 / TOKENS_PER_S))
            pi_root = root / f"pi-{index}"
            pi_root.mkdir()
            env = {**CLUSTER_PI_ENV, "OLLAMA_HOST": fake_url, "REDIS_URL": redis.url}
            pis.append(Pi(env, pi_root).start())
            stack.callback(pis[-1].stop)
        nginx_root = root / "nginx"
        nginx_root.mkdir()
        site = cluster_site([pi.address for pi in pis], free_port())
        yield stack.enter_context(nginx(site, nginx_root)).url


def chat_until(
    url: str, deadline: float, figures: Figures, lock: threading.Lock, client: int
) -> None:
    """One client: a conversation of stream chats until the deadline, each read to its end."""
    session = requests.Session()
    conversation: str | None = None
    while True:
        asked = time.monotonic()
        refused = False
        while True:  # tries of one chat
            headers = {HEADER: conversation} if conversation else {}
            body = {"message": "hello", "stream": True}
            with session.post(
                f"{url}/chat", json=body, headers=headers, stream=True, timeout=60
            ) as reply:
                if reply.status_code == 200:
                    chunks = reply.iter_content(chunk_size=None)
                    next(chunks)
                    first_token_s = time.monotonic() - asked
                    for _ in chunks:
                        pass
                    conversation = reply.headers[HEADER]
                    break
                refused = True
                with lock:
                    if reply.status_code == 503:
                        figures.refusals += 1
                    else:
                        figures.errors.append(f"{reply.status_code} {reply.text[:80]}")
            if time.monotonic() + RETRY_S > deadline:
                return
            time.sleep(RETRY_S)
        if time.monotonic() > deadline:
            return
        with lock:
            figures.first_token_s.append(first_token_s)
            if not refused:
                figures.first_try_s.append(first_token_s)
            figures.clients_served.add(client)
        time.sleep(THINK_S)


def load(url: str, seconds: float) -> Figures:
    """CLIENTS clients chatting at once for `seconds`."""
    figures, lock = Figures(seconds), threading.Lock()
    deadline = time.monotonic() + seconds
    clients = [
        threading.Thread(target=chat_until, args=(url, deadline, figures, lock, client))
        for client in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    return figures


def direct(seconds: float) -> Figures:
    """One client straight to one fake, one chat after another: the model's own pace."""
    figures = Figures(seconds)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "stream": True}
    with fake_process(tokens=REPLY, token_delay=1 / TOKENS_PER_S) as url:
        session = requests.Session()
        deadline = time.monotonic() + seconds
        while True:
            asked = time.monotonic()
            with session.post(f"{url}/api/chat", json=body, stream=True, timeout=60) as reply:
                lines = reply.iter_lines()
                next(lines)
                first_token_s = time.monotonic() - asked
                for _ in lines:
                    pass
            if time.monotonic() > deadline:
                return figures
            figures.first_token_s.append(first_token_s)
            figures.first_try_s.append(first_token_s)
            figures.clients_served.add(0)


def row(name: str, figures: Figures, one_pi: Figures | None) -> None:
    ttft, first_try = figures.first_token_s, figures.first_try_s
    ratio = f"x{figures.per_minute / one_pi.per_minute:5.2f}" if one_pi else ""
    print(
        f"{name:28} {figures.per_minute:9.1f} {percentile(ttft, 50) * 1000:9.1f} "
        f"{percentile(ttft, 99) * 1000:9.1f} {percentile(first_try, 50) * 1000:11.1f} "
        f"{figures.refusals:8d} {len(figures.errors):6d} {len(figures.clients_served):7d} "
        f"{ratio:>7}",
        flush=True,
    )
    for error in figures.errors[:3]:
        print(f"    {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="load per cluster size")
    parser.add_argument("--sizes", default="1,2,3", help="numbers of Pis, comma-separated")
    args = parser.parse_args()
    print(
        f"{CLIENTS} clients, replies of {len(REPLY)} tokens at {TOKENS_PER_S} tokens/s; "
        "times in ms\n"
        f"{'':28} {'chats/min':>9} {'ttft p50':>9} {'ttft p99':>9} {'at once p50':>11} "
        f"{'refused':>8} {'errors':>6} {'clients':>7} {'vs 1 Pi':>7}"
    )
    row("direct to one fake, 1 client", direct(args.seconds), None)
    one_pi = None
    for size in (int(n) for n in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp, cluster(size, Path(tmp)) as url:
            figures = load(url, args.seconds)
        one_pi = one_pi or figures
        row(f"{size} Pi(s) behind nginx", figures, one_pi)


if __name__ == "__main__":
    main()
