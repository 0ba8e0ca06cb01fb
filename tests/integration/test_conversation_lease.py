"""The conversation lease, live: held as long as its request, however long, and no longer.

A request renews its claim on the conversation while it runs, so a resend is refused
(409) through a long queue wait and a slow stream alike, and the history stays linear;
when the worker holding it dies, nobody renews it and the conversation is free again
within the lease, not after the request's longest time limit.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from piagent.app import create_app
from piagent.settings import Settings
from tests.prom import scrape, value
from tests.servers import RunningServer, gunicorn, wait_until, waitress_server, worker_pids

LEASE_S = 1.0
# Replies of fragments a tenth of a second apart, each outliving two leases.
BLOCKER = [f"b{i} " for i in range(25)]
SLOW = [f"s{i} " for i in range(30)]
# Resends stop this many fragments before the end of the slow reply: one sent later could
# rightly get in, once that reply has ended, before its client has seen the end.
TAIL = 10


def memory_fields(backend: str, tmp_path: Path, request) -> dict[str, Any]:
    """Settings fields choosing `backend`: SQLite in this test's folder, or the shared Redis."""
    fields: dict[str, Any] = {"memory_backend": backend}
    if backend == "sqlite":
        fields["memory_path"] = tmp_path / "memory.sqlite3"
    if backend == "redis":
        fields["redis_url"] = request.getfixturevalue("redis_url")
    return fields


@contextmanager
def serve(kind: str, fields: dict[str, Any], root: Path) -> Iterator[RunningServer]:
    """piagent with these settings under gunicorn (gevent: the lease kept by a greenlet) or
    waitress (threads: kept by a real thread)."""
    if kind == "gunicorn":
        with gunicorn({name.upper(): str(v) for name, v in fields.items()}, root) as server:
            yield server
    else:
        with waitress_server(create_app(Settings(**fields))) as server:
            yield server


def ask(url: str, conversation_id: str, message: str, **fields) -> requests.Response:
    return requests.post(
        f"{url}/chat",
        json={"message": message, "conversation_id": conversation_id, **fields},
        timeout=30,
    )


def stored(url: str, conversation_id: str) -> list[str]:
    response = requests.get(f"{url}/conversations/{conversation_id}", timeout=10)
    assert response.status_code == 200
    return [m["content"] for m in response.json()["messages"]]


@pytest.mark.parametrize(
    ("backend", "kind"),
    [("memory", "gunicorn"), ("sqlite", "waitress"), ("redis", "gunicorn")],
)
def test_a_resend_is_refused_through_a_long_queue_wait_and_a_slow_stream(
    backend, kind, fake, tmp_path, request
):
    fields = {
        "ollama_host": fake.url,
        "memory_lease_s": LEASE_S,
        # One reply at a time, and a queue wait far beyond the lease.
        "max_concurrent_generations": 1,
        "queue_timeout_s": 60,
        **memory_fields(backend, tmp_path, request),
    }
    cid = f"lease-{uuid.uuid4().hex}"
    fake.behave_once(tokens=BLOCKER, token_delay=0.1)  # another conversation's reply, first
    fake.behave_once(tokens=SLOW, token_delay=0.1)  # then this conversation's
    with serve(kind, fields, tmp_path) as server, ThreadPoolExecutor(2) as pool:
        blocker = pool.submit(ask, server.url, "blocker", "occupy the model", stream=True)
        fake.wait_for_generation_start(timeout=10)
        first = pool.submit(ask, server.url, cid, "first", stream=True)
        # Claimed and queued behind the blocker (the claim comes before the queue).
        wait_until(lambda: value(scrape(server.url), "piagent_queue_depth") == 1, 10, what="queued")

        def fragments_out() -> int:
            generations = fake.generations
            return generations[1].tokens_sent if len(generations) > 1 else 0

        refused_at = []
        while fragments_out() < len(SLOW) - TAIL:
            sent_at = time.monotonic()
            resend = ask(server.url, cid, "resend")
            assert resend.status_code == 409, (resend.text, server.log())
            assert "still answering an earlier message" in resend.json()["detail"]
            refused_at.append(sent_at)
            wait_for_futures([first], timeout=0.1)

        assert blocker.result().text == "".join(BLOCKER)
        assert first.result().status_code == 200
        assert first.result().text == "".join(SLOW)
        answered_at = fake.generations[1].started_at
        queued = [t for t in refused_at if t < answered_at]
        streaming = [t for t in refused_at if t > answered_at]
        # Refused all along: through the queue wait and the stream, over a lease each.
        assert queued[-1] - refused_at[0] > LEASE_S
        assert streaming[-1] - streaming[0] > LEASE_S
        assert refused_at[-1] - refused_at[0] > 3 * LEASE_S

        assert stored(server.url, cid) == ["first", "".join(SLOW)]
        fake.behave(tokens=["ok"])
        assert ask(server.url, cid, "second").status_code == 200
        assert stored(server.url, cid) == ["first", "".join(SLOW), "second", "ok"]
        # No refused resend ever reached the model.
        assert len(fake.generations) == 3


# Only the shared backends: with MEMORY_BACKEND=memory the conversations, and their
# claims, die with the worker that held them.
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_conversation_held_by_a_killed_worker_is_free_again_within_the_lease(
    backend, fake, tmp_path, request
):
    lease_s = 2.0
    fields = {
        "ollama_host": fake.url,
        "memory_lease_s": lease_s,
        **memory_fields(backend, tmp_path, request),
    }
    cid = f"killed-{uuid.uuid4().hex}"
    # Two servers on one memory (two services on a machine, two Pis on one Redis), so the
    # second answers while the first respawns its worker.
    with (
        serve("gunicorn", fields, tmp_path) as doomed,
        serve("gunicorn", fields, tmp_path) as survivor,
    ):
        fake.behave(tokens=[f"t{i} " for i in range(400)], token_delay=0.05)  # 20 s
        with requests.post(
            f"{doomed.url}/chat",
            json={"message": "lost", "conversation_id": cid, "stream": True},
            stream=True,
            timeout=30,
        ) as streaming:
            # Kept referenced: urllib3 drops the connection when this iterator is collected.
            fragments = streaming.iter_content(chunk_size=None)
            next(fragments)  # held, and mid-reply
            (worker,) = worker_pids(doomed.pid)
            os.kill(worker, signal.SIGKILL)
            killed_at = time.monotonic()
            fake.behave(tokens=["answered"])

            # Still held for the rest of the lease: nobody can tell a dead worker from a slow one.
            assert ask(survivor.url, cid, "retry").status_code == 409

            def answered() -> requests.Response | None:
                response = ask(survivor.url, cid, "retry")
                assert response.status_code in (200, 409), response.text
                return response if response.status_code == 200 else None

            reply = wait_until(answered, lease_s + 5, interval=0.05, what="the lease to lapse")
            freed_after = time.monotonic() - killed_at

        assert reply.json()["reply"] == "answered"
        # Free within one lease of the last renewal, and no sooner than most of it.
        assert lease_s * 2 / 3 - 0.1 < freed_after < lease_s + 3
        assert stored(survivor.url, cid) == ["retry", "answered"]
