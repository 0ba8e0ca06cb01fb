"""GET /metrics: parsed by prometheus_client's own parser, moved by known traffic."""

from __future__ import annotations

import random
import re
import string

import requests

from piagent.app import create_app
from tests.http_raw import read_response, send_request
from tests.prom import samples, scrape, value
from tests.redis_server import redis_server
from tests.servers import free_port, piagent_under_gunicorn, wait_until, waitress_server


def chat(url: str, **body) -> requests.Response:
    return requests.post(f"{url}/chat", json={"message": "hi", **body}, timeout=10)


def delta(before, after, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_counters_move_by_the_traffic_sent(make_settings, fake):
    fake.behave(tokens=["a", "b", "c"], prompt_eval_count=12)
    with waitress_server(create_app(make_settings())) as server:
        before = scrape(server.url)
        assert chat(server.url).status_code == 200
        assert chat(server.url).status_code == 200
        assert chat(server.url, stream=True).text == "abc"
        assert chat(server.url, message="").status_code == 422
        fake.behave(status=500)
        assert chat(server.url).status_code == 502
        assert requests.get(f"{server.url}/nowhere", timeout=5).status_code == 404
        after = scrape(server.url)

    def requests_with(status: str, route: str = "/chat", method: str = "POST") -> float:
        return delta(
            before, after, "piagent_http_requests_total", route=route, method=method, status=status
        )

    assert requests_with("200") == 3
    assert requests_with("422") == 1
    assert requests_with("502") == 1
    assert requests_with("404", route="unmatched", method="GET") == 1
    assert requests_with("200", route="/metrics", method="GET") == 1  # the first scrape
    assert delta(before, after, "piagent_http_request_duration_seconds_count", route="/chat") == 5
    assert delta(before, after, "piagent_time_to_first_token_seconds_count") == 3
    assert delta(before, after, "piagent_generated_tokens_total") == 9
    assert delta(before, after, "piagent_prompt_tokens_total") == 36
    assert delta(before, after, "piagent_tokens_per_second_count") == 3
    assert delta(before, after, "piagent_upstream_errors_total", kind="error") == 1
    assert delta(before, after, "piagent_upstream_errors_total", kind="timeout") == 0
    assert delta(before, after, "piagent_queue_wait_seconds_count") == 4  # every admitted call
    assert value(after, "piagent_active_generations") == 0
    assert value(after, "piagent_queue_depth") == 0
    assert value(after, "piagent_conversations") == 3  # the failed reply saved nothing


def test_unreachable_ollama_is_its_own_kind(make_settings):
    app = create_app(make_settings(ollama_host=f"http://127.0.0.1:{free_port()}"))
    client = app.test_client()
    assert client.post("/chat", json={"message": "hi"}).status_code == 502
    parsed = samples(client.get("/metrics").get_data(as_text=True))
    assert value(parsed, "piagent_upstream_errors_total", kind="unreachable") == 1


def test_metrics_keep_answering_while_redis_is_down(make_settings, tmp_path):
    with redis_server(tmp_path) as redis:
        settings = make_settings(memory_backend="redis", redis_url=redis.url)
        client = create_app(settings).test_client()
        assert client.post("/chat", json={"message": "hi"}).status_code == 200
        up = client.get("/metrics")
        assert up.status_code == 200
        assert value(samples(up.get_data(as_text=True)), "piagent_memory_up") == 1
    # redis-server has stopped: a chat is refused, and monitoring still sees why.
    assert client.post("/chat", json={"message": "hi"}).status_code == 503
    down = client.get("/metrics")
    assert down.status_code == 200
    parsed = samples(down.get_data(as_text=True))
    assert value(parsed, "piagent_memory_up") == 0
    assert value(parsed, "piagent_http_requests_total", route="/chat", method="POST", status="503")
    assert value(parsed, "piagent_conversations") == 1  # the last count it could make


def test_memory_that_is_off_is_not_down(make_settings):
    client = create_app(make_settings(enable_memory=False)).test_client()
    parsed = samples(client.get("/metrics").get_data(as_text=True))
    assert value(parsed, "piagent_memory_up") == 1


def test_exposition_is_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    names = {name for name, _ in samples(response.get_data(as_text=True))}
    for expected in (  # present before anything happened, so alerts work from the start
        "piagent_time_to_first_token_seconds_bucket",
        "piagent_rejections_total",
        "piagent_cancellations_total",
        "piagent_conversations",
    ):
        assert expected in names


def test_two_workers_report_the_sum_of_both(fake, tmp_path):
    fake.behave(tokens=["x", "y"])
    env = {"WEB_CONCURRENCY": "2", "ENABLE_MEMORY": "false", "LOG_FORMAT": "text"}
    with piagent_under_gunicorn(fake, tmp_path, **env) as server:

        def serving_workers() -> set[str]:
            return set(re.findall(r"\[(\d+)\] \[INFO\] request .*path=/chat ", server.log()))

        # A new connection each time; the kernel picks the worker, so go on until both
        # have answered (any one scrape then has to add up both workers' counts).
        chats = 0
        while len(serving_workers()) < 2:
            assert chats < 200, "one worker took every connection"
            assert chat(server.url).status_code == 200
            chats += 1
            wait_until(lambda n=chats: server.log().count("path=/chat ") >= n, 5, what="the log")

        fake.behave(tokens=["a ", "b ", "c "], token_delay=5)
        sock = send_request(server.url, "/chat", {"message": "hi", "stream": True})
        assert read_response(sock, max_chunks=1).chunks == [b"a "]
        sock.close()
        fake.wait_for_client_close(timeout=5)

        def cancelled() -> float:
            return value(scrape(server.url), "piagent_cancellations_total", stage="generating")

        wait_until(lambda: cancelled() == 1, 5, what="the cancellation to be counted")
        for _ in range(4):  # whichever worker answers the scrape, the sums are the same
            parsed = scrape(server.url)
            chats_counted = value(
                parsed, "piagent_http_requests_total", route="/chat", method="POST", status="200"
            )
            assert chats_counted == chats + 1
            assert value(parsed, "piagent_generated_tokens_total") == 2 * chats


def test_random_methods_and_paths_add_only_a_handful_of_series(make_settings, fake):
    chance = random.Random(11)
    letters = string.ascii_uppercase

    def series(parsed) -> set:
        names = ("piagent_http_requests_total", "piagent_http_request_duration_seconds_count")
        return {key for key in parsed if key[0] in names}

    with waitress_server(create_app(make_settings())) as server, requests.Session() as session:
        scrape(server.url)  # so that the scrape's own series exist before counting
        before = series(scrape(server.url))
        for _ in range(1000):
            method = "".join(chance.choices(letters, k=chance.randint(3, 10)))
            path = "/" + "".join(chance.choices(string.ascii_lowercase + "/", k=12))
            if chance.random() < 0.2:  # a real route, with a method it does not take
                path = chance.choice(["/chat", "/health", "/agents"])
            assert session.request(method, f"{server.url}{path}", timeout=5).status_code in (
                404,
                405,
            )
        added = series(scrape(server.url)) - before
    # One route and one method label for all of them, by status (404, 405), and the
    # route's duration: three series.
    assert len(added) <= 4, sorted(added)
    assert {dict(labels).get("method") for _, labels in added} - {None} == {"other"}
    assert {dict(labels)["route"] for _, labels in added} == {"unmatched"}
