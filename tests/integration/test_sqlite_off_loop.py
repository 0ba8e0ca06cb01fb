"""A SQLite write lock held by another process stalls only the requests that need it.

Under real gunicorn (gevent worker, MEMORY_BACKEND=sqlite): while another process holds
the database's write lock for 2 s, a request that must write waits for it, and the
worker's running stream keeps its token pacing and /health keeps answering at once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import requests

from tests.servers import piagent_under_gunicorn, wait_until

TOKEN_DELAY_S = 0.05
LOCK_HELD_S = 2.0
# Beyond the fake's own pacing, at most this much between two pieces of the stream.
MAX_EXTRA_GAP_S = 0.1
MAX_HEALTH_S = 0.05

_HOLD_THE_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))  # how long the lock is held: the test's subject, not a wait
db.execute("COMMIT")
"""


def test_another_process_holding_the_write_lock_stalls_no_stream_and_no_health(fake, tmp_path):
    database = tmp_path / "memory.sqlite3"
    # Long enough to run before, through and after the lock.
    fake.behave(tokens=[f"t{i} " for i in range(120)], token_delay=TOKEN_DELAY_S)
    with piagent_under_gunicorn(
        fake, tmp_path, MEMORY_BACKEND="sqlite", MEMORY_PATH=str(database)
    ) as server:
        arrivals: list[float] = []
        done = threading.Event()

        def stream() -> None:
            try:
                with requests.post(
                    f"{server.url}/chat",
                    json={"message": "count", "stream": True, "conversation_id": "paced"},
                    stream=True,
                    timeout=30,
                ) as reply:
                    for _ in reply.iter_content(chunk_size=None):
                        arrivals.append(time.monotonic())
            finally:
                done.set()

        threading.Thread(target=stream, daemon=True).start()
        wait_until(lambda: len(arrivals) >= 5, 10, what="the stream to flow")

        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_THE_LOCK, str(database), str(LOCK_HELD_S)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "locked"
            locked_at = time.monotonic()
            # A write on the worker, which must wait for the lock (the store's busy timeout).
            writer: list[requests.Response] = []
            writing = threading.Thread(
                target=lambda: writer.append(
                    requests.delete(f"{server.url}/conversations/other", timeout=30)
                )
            )
            writing.start()
            health_times = []
            while holder.poll() is None:
                started = time.monotonic()
                assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
                health_times.append(time.monotonic() - started)
                time.sleep(0.05)  # a probe every 50 ms while the lock is held
            writing.join(30)
        finally:
            holder.wait(timeout=10)
        assert done.wait(30)

    assert writer and writer[0].status_code == 404  # it waited, then wrote (nothing to drop)
    assert time.monotonic() - locked_at >= LOCK_HELD_S
    assert max(health_times) < MAX_HEALTH_S and len(health_times) >= 10, health_times
    during = [t for t in arrivals if t >= locked_at]
    assert during and during[0] - locked_at < 1, "the stream did not run through the lock"
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    assert max(gaps) < TOKEN_DELAY_S + MAX_EXTRA_GAP_S, max(gaps)
