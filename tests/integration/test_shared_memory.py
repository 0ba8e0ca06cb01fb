"""Shared memory under real gunicorn: two gevent workers on SQLite, two "Pis" on Redis."""

from __future__ import annotations

import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from tests.conftest import shared_fake
from tests.servers import piagent_under_gunicorn, worker_pids

CONVERSATIONS = 50
TURNS = 10
# The worker's pid and the conversation of every answer, to see who served what.
ACCESS_FORMAT = ("--access-logformat", '%(p)s %({x-conversation-id}o)s "%(r)s" %(s)s')
_ACCESS_LINE = re.compile(r"^<?(\d+)>? (\S+) \"POST /chat ", re.MULTILINE)


fake = shared_fake

# Every turn of a conversation fits, so what was sent is exactly what was kept.
# Every conversation is answered at once: this tests memory, not the admission queue.
ROOMY = {"MEMORY_MAX_TURNS": str(2 * TURNS), "MAX_CONCURRENT_GENERATIONS": "256"}


@pytest.fixture(scope="module")
def sqlite_workers(module_fake, tmp_path_factory):
    """One gunicorn with two gevent workers sharing a SQLite file."""
    root = tmp_path_factory.mktemp("sqlite-workers")
    env = {**ROOMY, "WEB_CONCURRENCY": "2", "MEMORY_BACKEND": "sqlite"}
    env["MEMORY_PATH"] = str(root / "memory.sqlite3")
    with piagent_under_gunicorn(module_fake, root, extra_args=ACCESS_FORMAT, **env) as server:
        assert len(worker_pids(server.pid)) == 2
        yield server


@pytest.fixture(scope="module")
def redis_pis(module_fake, redis_url, tmp_path_factory):
    """Two separate gunicorn processes, as on two Pis, sharing one Redis."""
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    env = {**ROOMY, "MEMORY_BACKEND": "redis", "REDIS_URL": redis_url}
    with (
        piagent_under_gunicorn(module_fake, tmp_path_factory.mktemp("pi-1"), **env) as first,
        piagent_under_gunicorn(module_fake, tmp_path_factory.mktemp("pi-2"), **env) as second,
    ):
        yield [first, second]


def ask(
    url: str, conversation_id: str, message: str, *, stream_response: bool = False, **fields
) -> requests.Response:
    return requests.post(
        f"{url}/chat",
        json={"message": message, "conversation_id": conversation_id, **fields},
        timeout=30,
        stream=stream_response,
    )


def converse_concurrently(urls: list[str], prefix: str) -> list[str]:
    """CONVERSATIONS clients at once, each taking TURNS turns in order, spread over `urls`."""
    ids = [f"{prefix}-{c}" for c in range(CONVERSATIONS)]

    def converse(c: int) -> None:
        for turn in range(TURNS):
            url = urls[(c + turn) % len(urls)]  # each turn on another server when there are two
            response = ask(url, ids[c], f"{ids[c]} turn {turn}")
            assert response.status_code == 200, response.text

    with ThreadPoolExecutor(CONVERSATIONS) as pool:
        for done in [pool.submit(converse, c) for c in range(CONVERSATIONS)]:
            done.result()
    return ids


def assert_each_history_is_its_own_turns_in_order(urls: list[str], fake, ids: list[str]) -> None:
    own_turns = {cid: [f"{cid} turn {t}" for t in range(TURNS)] for cid in ids}
    # What the model was sent: every call carried exactly its conversation's earlier turns.
    calls = [r.json["messages"] for r in fake.requests if r.path == "/api/chat"]
    assert len(calls) == CONVERSATIONS * TURNS
    for messages in calls:
        asked = messages[-1]["content"]
        cid, turn = asked.rsplit(" turn ", 1)
        expected = []
        for earlier in own_turns[cid][: int(turn)]:
            expected += [("user", earlier), ("assistant", "Hello!")]
        assert [(m["role"], m["content"]) for m in messages[1:-1]] == expected, asked
    # What is stored: each conversation exactly its own turns, in order, read from any server.
    for index, cid in enumerate(ids):
        response = requests.get(f"{urls[index % len(urls)]}/conversations/{cid}", timeout=10)
        assert response.status_code == 200
        stored = [(m["role"], m["content"]) for m in response.json()["messages"]]
        assert stored[::2] == [("user", text) for text in own_turns[cid]]
        assert stored[1::2] == [("assistant", "Hello!")] * TURNS


def test_two_workers_on_sqlite_keep_50_concurrent_conversations_apart(sqlite_workers, fake):
    ids = converse_concurrently([sqlite_workers.url], "sqlite")
    assert_each_history_is_its_own_turns_in_order([sqlite_workers.url], fake, ids)
    served_by = defaultdict(set)
    for pid, cid in _ACCESS_LINE.findall(sqlite_workers.log()):
        served_by[cid].add(pid)
    assert len(set().union(*served_by.values())) == 2, "both workers answered"
    assert any(len(pids) == 2 for pids in served_by.values()), "a conversation crossed workers"


def test_two_pis_on_redis_keep_50_concurrent_conversations_apart(redis_pis, fake):
    urls = [pi.url for pi in redis_pis]
    ids = converse_concurrently(urls, "redis")
    assert_each_history_is_its_own_turns_in_order(urls, fake, ids)


def assert_second_message_waits_its_turn(first_url: str, second_url: str, fake, cid: str):
    """While a reply streams on one server, a second message on the same conversation is 409."""
    tokens = [f"t{i} " for i in range(20)]
    fake.behave(tokens=tokens, token_delay=0.05)
    with ask(first_url, cid, "first", stream=True, stream_response=True) as streaming:
        fragments = streaming.iter_content(chunk_size=None)
        first = next(fragments)  # the reply has started: the conversation is held
        busy = ask(second_url, cid, "second")
        assert busy.status_code == 409
        assert cid in busy.json()["detail"]
        assert first + b"".join(fragments) == "".join(tokens).encode()
    stored = requests.get(f"{second_url}/conversations/{cid}", timeout=10).json()["messages"]
    assert [m["content"] for m in stored] == ["first", "".join(tokens)]
    fake.behave(tokens=["ok"])
    assert ask(second_url, cid, "second").status_code == 200


def test_a_second_message_during_a_reply_is_409_across_workers(sqlite_workers, fake):
    assert_second_message_waits_its_turn(
        sqlite_workers.url, sqlite_workers.url, fake, "busy-sqlite"
    )


def test_a_second_message_during_a_reply_is_409_across_pis(redis_pis, fake):
    first, second = (pi.url for pi in redis_pis)
    assert_second_message_waits_its_turn(first, second, fake, "busy-redis")


def test_sqlite_conversation_continues_after_a_restart(fake, tmp_path):
    env = {**ROOMY, "MEMORY_BACKEND": "sqlite", "MEMORY_PATH": str(tmp_path / "memory.sqlite3")}
    fake.behave(tokens=["kept across the restart"])
    with piagent_under_gunicorn(fake, tmp_path, **env) as before:
        assert ask(before.url, "durable", "before").status_code == 200
    fake.behave(tokens=["continued"])
    with piagent_under_gunicorn(fake, tmp_path, **env) as after:
        assert ask(after.url, "durable", "after").status_code == 200
        stored = requests.get(f"{after.url}/conversations/durable", timeout=10).json()
    sent = [(m["role"], m["content"]) for m in fake.requests[-1].json["messages"][1:]]
    assert sent == [("user", "before"), ("assistant", "kept across the restart"), ("user", "after")]
    assert [m["content"] for m in stored["messages"]] == [
        "before",
        "kept across the restart",
        "after",
        "continued",
    ]


@pytest.mark.parametrize("off", ["false", "off"])
def test_without_memory_every_worker_asked_for_runs(fake, tmp_path, off):
    with piagent_under_gunicorn(
        fake, tmp_path, **ROOMY, WEB_CONCURRENCY="2", ENABLE_MEMORY=off
    ) as server:
        assert len(worker_pids(server.pid)) == 2


def test_in_process_memory_keeps_one_worker_and_says_why(fake, tmp_path):
    with piagent_under_gunicorn(fake, tmp_path, **ROOMY, WEB_CONCURRENCY="3") as server:
        assert len(worker_pids(server.pid)) == 1
        log = server.log()
    assert "running 1 worker, not WEB_CONCURRENCY=3" in log
    assert "MEMORY_BACKEND=sqlite" in log
