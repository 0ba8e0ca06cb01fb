"""Streams through a real nginx in front of real gunicorn (gevent), both on loopback."""

from __future__ import annotations

import statistics
import time
import uuid
from itertools import pairwise

import pytest
import requests

from tests.conftest import gunicorn_for_module, shared_fake
from tests.http_raw import read_response, send_request
from tests.nginx import default_buffering_site, nginx, shipped_site
from tests.servers import free_port

PACE_S = 0.05
TOKENS = [f"tok{i} " for i in range(8)]


piagent = gunicorn_for_module(ACCESS_LOG="")
fake = shared_fake


@pytest.fixture(scope="module", params=["shipped", "default_buffering"])
def proxy(request, piagent, tmp_path_factory):
    upstream = piagent.url.removeprefix("http://")
    make_site = shipped_site if request.param == "shipped" else default_buffering_site
    with nginx(make_site(upstream, free_port()), tmp_path_factory.mktemp("nginx")) as running:
        yield running


def test_tokens_arrive_one_by_one_at_the_fakes_pace(proxy, fake):
    fake.behave(tokens=TOKENS, token_delay=PACE_S)
    sock = send_request(proxy.url, "/chat", {"message": "hi", "stream": True})
    with sock:
        response = read_response(sock)
    assert response.status == 200
    assert response.complete
    assert response.chunks == [t.encode() for t in TOKENS]  # each fragment its own read
    gaps = [b - a for a, b in pairwise(response.arrival_times)]
    # Buffering anywhere would bunch fragments together (gaps near 0).
    assert min(gaps) > PACE_S / 2
    assert abs(statistics.median(gaps) - PACE_S) < 0.02


def test_stream_cut_by_the_model_server_stays_visibly_cut_through_nginx(proxy, fake):
    fake.behave(tokens=TOKENS, token_delay=0.01, error_after=3)
    sock = send_request(proxy.url, "/chat", {"message": "hi", "stream": True})
    with sock:
        response = read_response(sock)
    assert response.status == 200
    assert response.body == "".join(TOKENS[:3]).encode()
    assert not response.complete  # nginx passes the cut on: no final chunk


def test_client_leaving_through_nginx_stops_generation(proxy, fake):
    fake.behave(tokens=TOKENS, token_delay=2)
    sock = send_request(proxy.url, "/chat", {"message": "hi", "stream": True})
    assert read_response(sock, max_chunks=1).chunks == [TOKENS[0].encode()]
    closed_at = time.monotonic()
    sock.close()
    generation = fake.wait_for_client_close(timeout=5)
    assert generation.client_closed_at - closed_at < 0.05
    assert generation.tokens_sent == 1


def test_conversation_id_and_stream_headers_pass_through(proxy, fake):
    conversation_id = uuid.uuid4().hex
    reply = requests.post(
        f"{proxy.url}/chat",
        json={"message": "hi", "stream": True, "conversation_id": conversation_id},
        timeout=10,
    )
    assert reply.headers["X-Conversation-Id"] == conversation_id
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_piagent_errors_pass_through_as_json(proxy, fake):
    fake.behave(status=503)
    reply = requests.post(f"{proxy.url}/chat", json={"message": "hi"}, timeout=10)
    assert reply.status_code == 503
    assert "Retry-After" in reply.headers
    assert "busy" in reply.json()["detail"]


def test_shipped_site_refuses_huge_bodies_with_json(piagent, tmp_path):
    upstream = piagent.url.removeprefix("http://")
    with nginx(shipped_site(upstream, free_port()), tmp_path) as proxy:
        reply = requests.post(
            f"{proxy.url}/chat",
            data=b"x" * (1024 * 1024),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
    assert reply.status_code == 413
    assert "larger than" in reply.json()["detail"]


def test_shipped_site_says_in_json_when_piagent_is_down(tmp_path):
    with nginx(shipped_site(f"127.0.0.1:{free_port()}", free_port()), tmp_path) as proxy:
        reply = requests.get(f"{proxy.url}/health", timeout=10)
    assert reply.status_code == 502
    assert "piagent is not answering" in reply.json()["detail"]
