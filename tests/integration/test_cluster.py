"""Three Pis as one service: three piagents (gunicorn, one gevent worker, one generation
at a time, no queue), each in front of its own fake Ollama, one redis-server, and nginx
with the shipped config/nginx/piagent-cluster.conf in front of them.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import redis
import requests

from tests.cluster import CLUSTER_PI_ENV, Pi, running
from tests.conftest import MODEL
from tests.fake_ollama import FakeOllama, Generation
from tests.http_raw import read_response, send_request
from tests.nginx import cluster_site, nginx
from tests.prom import scrape, value
from tests.servers import REPO, free_port, wait_until

HEADER = "X-Conversation-Id"
_SITE = (REPO / "config" / "nginx" / "piagent-cluster.conf").read_text()
# How long nginx rests a Pi it marked failed, and how long after a request began it may
# still send it to another Pi: read from the shipped site, which is what is tested.
FAIL_TIMEOUT_S = int(re.search(r"fail_timeout=(\d+)s", _SITE)[1])
RETRY_WINDOW_S = int(re.search(r"proxy_next_upstream_timeout (\d+)s;", _SITE)[1])
# A dead worker's hold on its conversation must lapse within this (a renewed lease).
HOLD_LAPSES_WITHIN_S = 25


@pytest.fixture(scope="module")
def fakes() -> Iterator[list[FakeOllama]]:
    with ExitStack() as stack:
        yield [stack.enter_context(FakeOllama(models={MODEL})) for _ in range(3)]


@pytest.fixture(scope="module")
def pis(fakes, redis_url, tmp_path_factory) -> Iterator[list[Pi]]:
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    # Restarts need not wait for the connections nginx keeps open to end.
    env = {**CLUSTER_PI_ENV, "REDIS_URL": redis_url, "GRACEFUL_TIMEOUT": "1"}
    started = [
        Pi({**env, "OLLAMA_HOST": fake.url}, tmp_path_factory.mktemp(f"pi-{index}"))
        for index, fake in enumerate(fakes)
    ]
    try:
        for pi in started:
            pi.start()
        yield started
    finally:
        for pi in started:
            pi.stop()


@pytest.fixture
def cluster(pis, fakes) -> list[Pi]:
    """The three Pis running, whatever an earlier test did to them, and fresh fakes."""
    for pi in pis:
        if not pi.is_up():
            pi.start()
    for fake in fakes:
        fake.reset()
    return pis


@pytest.fixture
def proxy(cluster, tmp_path):
    """nginx with the shipped cluster site; a new one per test, so no Pi starts marked failed."""
    site = cluster_site([pi.address for pi in cluster], free_port())
    with nginx(site, tmp_path) as running_nginx:
        yield running_nginx


def ask(url: str, message: str, conversation: str | None = None, **fields) -> requests.Response:
    headers = {HEADER: conversation} if conversation else {}
    return requests.post(
        f"{url}/chat", json={"message": message, **fields}, headers=headers, timeout=30
    )


def generated_by(fakes: list[FakeOllama], message: str) -> list[int]:
    """The Pis (by index) whose model was asked `message`, once per time it was asked."""
    return [
        index
        for index, fake in enumerate(fakes)
        for request in fake.requests
        if request.path == "/api/chat" and request.json["messages"][-1]["content"] == message
    ]


def generation_of(fake: FakeOllama, message: str) -> Generation:
    """The fake's generation for `message`, once it has begun."""

    def found() -> Generation | None:
        asked = [
            g for g in fake.generations if g.request.json["messages"][-1]["content"] == message
        ]
        return asked[0] if asked else None

    return wait_until(found, 10, what=f"the model to be asked {message!r}")


def homes(proxy, fakes: list[FakeOllama], each: int = 1) -> dict[int, list[str]]:
    """Conversations the site sends to each Pi (`each` or more), found by starting some."""
    found: dict[int, list[str]] = {0: [], 1: [], 2: []}

    def enough_on_each() -> bool:
        conversation = str(uuid.uuid4())
        assert ask(proxy.url, f"probe {conversation}", conversation).status_code == 200
        [pi] = generated_by(fakes, f"probe {conversation}")
        found[pi].append(conversation)
        return all(len(ids) >= each for ids in found.values())

    wait_until(enough_on_each, 30, interval=0, what=f"{each} conversation(s) on each Pi")
    return found


def rejections(pi: Pi) -> float:
    return value(scrape(pi.url), "piagent_rejections_total", reason="queue_full")


# --- spreading the load -------------------------------------------------------------------


def test_three_streams_at_once_are_answered_by_three_pis_none_refused(proxy, cluster, fakes):
    for fake in fakes:
        fake.behave(tokens=["one ", "two ", "three"], token_delay=0.3)
    refused_before = [rejections(pi) for pi in cluster]

    streams = [
        send_request(proxy.url, "/chat", {"message": f"s{n}", "stream": True}) for n in range(3)
    ]
    replies = []
    for sock in streams:
        with sock:
            replies.append(read_response(sock))

    assert [(r.status, r.complete, r.body) for r in replies] == [(200, True, b"one two three")] * 3
    assert sorted(pi for n in range(3) for pi in generated_by(fakes, f"s{n}")) == [0, 1, 2]
    generations = [fake.generations[0].wait_finished() for fake in fakes]
    assert max(g.started_at for g in generations) < min(g.finished_at for g in generations)
    assert [rejections(pi) for pi in cluster] == refused_before


def test_a_fourth_while_all_three_are_busy_gets_a_503_never_a_502_nor_a_generation(
    proxy, cluster, fakes
):
    for fake in fakes:
        fake.behave(tokens=["a", "b"], stall_after=1)
    held = [
        send_request(proxy.url, "/chat", {"message": f"h{n}", "stream": True}) for n in range(3)
    ]
    for sock in held:
        assert read_response(sock, max_chunks=1).chunks == [b"a"]

    fourth = ask(proxy.url, "the fourth")
    named = ask(proxy.url, "a named fifth", str(uuid.uuid4()))
    completion = requests.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": "general", "messages": [{"role": "user", "content": "a sixth"}]},
        timeout=30,
    )
    # What needs no model is not held up by the Pis being busy.
    health = requests.get(f"{proxy.url}/health", timeout=10)
    for sock in held:
        sock.close()

    for refused in (fourth, named, completion):
        assert refused.status_code == 503
        assert refused.json()["detail"].startswith("every Pi is busy answering")
        assert refused.headers["Retry-After"].isdigit()
    for message in ("the fourth", "a named fifth", "a sixth"):
        assert generated_by(fakes, message) == []
    assert health.status_code == 200


def test_twelve_new_conversations_three_at_a_time_spread_over_all_three_pis(proxy, cluster, fakes):
    for fake in fakes:
        fake.behave(tokens=["one ", "two"], token_delay=0.2)
    ids = set()
    for wave in range(4):
        streams = [
            send_request(proxy.url, "/chat", {"message": f"new {wave}.{n}", "stream": True})
            for n in range(3)
        ]
        for sock in streams:
            with sock:
                reply = read_response(sock)
            assert (reply.status, reply.body) == (200, b"one two")
            ids.add(reply.headers["x-conversation-id"])
    assert len(ids) == 12
    served = Counter(
        pi for wave in range(4) for n in range(3) for pi in generated_by(fakes, f"new {wave}.{n}")
    )
    assert served == {0: 4, 1: 4, 2: 4}


# --- conversations --------------------------------------------------------------------------


def test_a_conversation_stays_on_its_pi_from_its_first_message_and_any_pi_can_continue_it(
    proxy, cluster, fakes
):
    first = ask(proxy.url, "first")  # names no conversation: nginx names the new one
    assert first.status_code == 200
    conversation = first.json()["conversation_id"]
    assert uuid.UUID(conversation).version == 4
    [home] = generated_by(fakes, "first")
    for n in range(2, 5):  # four exchanges: all of them fit MEMORY_MAX_TURNS (8)
        assert ask(proxy.url, f"message {n}", conversation).status_code == 200
        assert generated_by(fakes, f"message {n}") == [home]

    # Straight to another Pi: the shared memory has the whole conversation.
    other = (home + 1) % 3
    assert ask(cluster[other].url, "elsewhere", conversation).status_code == 200
    sent = fakes[other].last_messages()
    assert sent[1:3] == [("user", "first"), ("assistant", "Hello!")]
    assert sent[-3:] == [("user", "message 4"), ("assistant", "Hello!"), ("user", "elsewhere")]

    # While its Pi answers it, a resend is 409 on any Pi (through nginx: the next one), and
    # never reaches a model.
    fakes[home].behave(tokens=["a", "b"], stall_after=1)
    chat = {"message": "a long reply", "stream": True}
    with send_request(proxy.url, "/chat", chat, {HEADER: conversation}) as sock:
        assert read_response(sock, max_chunks=1).status == 200
        elsewhere = ask(cluster[other].url, "resend", conversation)
        through_nginx = ask(proxy.url, "resend", conversation)
    for busy in (elsewhere, through_nginx):
        assert busy.status_code == 409
        assert conversation in busy.json()["detail"]
    assert generated_by(fakes, "resend") == []


def test_a_conversation_whose_pi_is_busy_moves_to_a_free_one_with_its_history(
    proxy, cluster, fakes
):
    conversation = homes(proxy, fakes)[0][0]
    fakes[0].behave(tokens=["a", "b"], stall_after=1)
    refused_before = rejections(cluster[0])
    # A client that bypasses nginx takes Pi 0's one place: nginx still thinks Pi 0 free.
    with send_request(cluster[0].url, "/chat", {"message": "other", "stream": True}) as sock:
        read_response(sock, max_chunks=1)
        moved = ask(proxy.url, "while its Pi is busy", conversation)

    # Pi 0 claimed the conversation, refused with a 503, and let it go before the 503
    # left: nginx passed the request on, and the next Pi could take it (not a 409).
    assert rejections(cluster[0]) == refused_before + 1
    assert moved.status_code == 200
    [elsewhere] = generated_by(fakes, "while its Pi is busy")
    assert elsewhere != 0
    assert fakes[elsewhere].last_messages()[1:] == [
        ("user", f"probe {conversation}"),
        ("assistant", "Hello!"),
        ("user", "while its Pi is busy"),
    ]


def test_a_reply_that_fails_once_the_model_worked_is_not_sent_to_another_pi(proxy, cluster, fakes):
    conversation = homes(proxy, fakes)[2][0]
    fakes[2].behave(tokens=["half", " a", " reply"], error_after=2)
    failed = ask(proxy.url, "fails halfway", conversation)
    assert failed.status_code == 502  # piagent's, passed through, not nginx's
    assert failed.json()["detail"].startswith("Ollama answered HTTP 500")
    assert generated_by(fakes, "fails halfway") == [2]


# --- failures -------------------------------------------------------------------------------


def test_a_pi_killed_mid_stream_cuts_it_then_the_others_serve_until_it_is_back(
    proxy, cluster, fakes
):
    conversation, another = homes(proxy, fakes, each=2)[0][:2]
    fakes[0].behave(tokens=["a", "b"], stall_after=1)
    stream = requests.post(
        f"{proxy.url}/chat",
        json={"message": "cut short", "stream": True},
        headers={HEADER: conversation},
        stream=True,
        timeout=30,
    )
    chunks = stream.iter_content(chunk_size=None)
    assert next(chunks) == b"a"

    cluster[0].kill()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        b"".join(chunks)  # ends without its last chunk: the client can tell it was cut

    # New conversations, and one whose Pi is the dead one: nothing the client can see.
    asked = [ask(proxy.url, f"while down {n}") for n in range(6)]
    asked.append(ask(proxy.url, "a new named one", str(uuid.uuid4())))
    asked.append(ask(proxy.url, "its Pi is down", another))
    assert [a.status_code for a in asked] == [200] * len(asked)

    fakes[0].behave()  # answers at once again
    cluster[0].start()
    tries = iter(range(1000))

    def pi_0_answers() -> bool:
        message = f"back {next(tries)}"
        assert ask(proxy.url, message).status_code == 200
        return generated_by(fakes, message) == [0]

    wait_until(pi_0_answers, FAIL_TIMEOUT_S + 15, interval=0.2, what="Pi 0 to take work again")


def test_a_pi_whose_model_server_is_down_is_not_ready_and_its_requests_move(proxy, cluster, fakes):
    conversation = homes(proxy, fakes)[1][0]
    down = cluster[1]
    down.start(OLLAMA_HOST=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        ready = requests.get(f"{down.url}/ready", timeout=10)
        assert ready.status_code == 503
        assert "not reachable" in ready.json()["detail"]

        asked = [ask(proxy.url, f"new {n}") for n in range(6)]
        asked.append(ask(proxy.url, "its model server is down", conversation))
        assert [a.status_code for a in asked] == [200] * len(asked)

        # Pi 1 was asked, refused before anything happened, and nginx moved the request.
        unreachable = value(scrape(down.url), "piagent_upstream_errors_total", kind="unreachable")
        assert unreachable >= 1
        [elsewhere] = generated_by(fakes, "its model server is down")
        assert fakes[elsewhere].last_messages()[1:2] == [("user", f"probe {conversation}")]
    finally:
        down.start()


def test_a_pi_whose_master_dies_mid_reply_frees_its_conversation_within_seconds(
    proxy, cluster, fakes
):
    conversation = homes(proxy, fakes)[0][0]
    pace = 0.1
    fakes[0].behave(tokens=[f"t{n} " for n in range(200)], token_delay=pace)
    answers: list[requests.Response] = []
    asking = threading.Thread(
        target=lambda: answers.append(ask(proxy.url, "dies with its worker", conversation))
    )
    asking.start()
    generation = generation_of(fakes[0], "dies with its worker")
    # Generating for longer than nginx may still send a request to another Pi.
    wait_until(lambda: generation.tokens_sent * pace > RETRY_WINDOW_S + 0.5, 15, what="tokens")

    workers = cluster[0].kill_master()  # the worker holds the conversation and lingers
    wait_until(lambda: not any(running(pid) for pid in workers), 10, what="the worker to exit")
    asking.join(30)

    [answer] = answers
    assert answer.status_code == 502
    assert answer.json()["detail"].startswith("no Pi answered")  # nginx's, in JSON

    for fake in fakes:
        fake.behave(tokens=["served"])
    lost_at = time.monotonic()

    def resend_served() -> bool:
        again = ask(proxy.url, "dies with its worker", conversation)
        assert again.status_code in (200, 409), again.text
        return again.status_code == 200

    wait_until(resend_served, HOLD_LAPSES_WITHIN_S, interval=0.5, what="the resend to be served")
    assert time.monotonic() - lost_at < HOLD_LAPSES_WITHIN_S
