"""Every 503 piagent sends is a refusal made before the model or the memory did anything.

That is what lets the cluster site (config/nginx/piagent-cluster.conf) pass a 503 on to
another Pi: the request was neither generated nor kept. A failure after the model
worked is never a 503.
"""

from __future__ import annotations

import threading

import pytest

from piagent.app import create_app
from piagent.http.errors import CLUSTER_HEADER
from tests.redis_server import redis_server
from tests.servers import free_port

BEHIND_CLUSTER = {CLUSTER_HEADER: "1"}


def chat(client, headers=None, **body):
    return client.post("/chat", json={"message": "hi", **body}, headers=headers or {})


def complete(client, headers=None):
    body = {"model": "general", "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body, headers=headers or {})


def test_a_refused_request_lets_its_conversation_go(make_settings, fake):
    client = create_app(make_settings(queue_max=0)).test_client()
    fake.behave(tokens=["a", "b"], stall_after=1)
    held = chat(client, stream=True, conversation_id="holds-the-model")
    assert held.status_code == 200  # the one place is taken until this stream ends

    refused = chat(client, conversation_id="refused")
    assert refused.status_code == 503
    # Its conversation was claimed before the refusal, and let go before the 503 left:
    # a second refusal, not a 409 for a conversation still "answering".
    assert chat(client, conversation_id="refused").status_code == 503
    assert len(fake.generations) == 1

    held.close()
    fake.behave(tokens=["ok"])
    assert chat(client, conversation_id="refused").status_code == 200
    assert fake.last_messages()[1:] == [("user", "hi")]  # the refusals kept nothing


@pytest.mark.parametrize("stream", [False, True])
def test_unreachable_model_server_is_503_behind_the_cluster_site_and_502_alone(
    make_settings, stream
):
    port = free_port()  # nothing listens there
    client = create_app(make_settings(ollama_host=f"http://127.0.0.1:{port}")).test_client()

    alone = chat(client, stream=stream, conversation_id="u")
    behind = chat(client, BEHIND_CLUSTER, stream=stream, conversation_id="u")

    assert alone.status_code == 502
    assert behind.status_code == 503
    assert behind.get_json()["detail"] == alone.get_json()["detail"]
    assert "not reachable" in behind.get_json()["detail"]


def test_unreachable_model_server_is_503_behind_the_cluster_site_on_v1_too(make_settings):
    port = free_port()
    client = create_app(make_settings(ollama_host=f"http://127.0.0.1:{port}")).test_client()
    assert complete(client).status_code == 502
    assert complete(client, BEHIND_CLUSTER).status_code == 503


def test_other_failures_keep_their_status_behind_the_cluster_site(make_settings, fake):
    client = create_app(make_settings(ollama_model_general="not:pulled")).test_client()
    assert chat(client, BEHIND_CLUSTER).status_code == 502


def test_a_reply_the_memory_could_not_keep_is_502_not_a_refusal(make_settings, fake, tmp_path):
    # The whole reply takes a second: Redis is stopped while the model is answering.
    fake.behave(tokens=["kept", " nowhere"], token_delay=1.0)
    answers = []
    with redis_server(tmp_path) as redis:
        client = create_app(make_settings(memory_backend="redis", redis_url=redis.url))
        client = client.test_client()
        asking = threading.Thread(
            target=lambda: answers.append(chat(client, BEHIND_CLUSTER, conversation_id="k"))
        )
        asking.start()
        fake.wait_for_generation_start(timeout=5)
    asking.join(15)

    [answer] = answers
    assert answer.status_code == 502
    detail = answer.get_json()["detail"]
    assert detail.startswith("the model answered, but nothing of this exchange could be kept")
    assert f"the conversation memory at {redis.url} is not reachable" in detail
    assert fake.generations[0].wait_finished().outcome == "done"
