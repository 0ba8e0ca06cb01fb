"""OLLAMA_KEEP_ALIVE on every call, and WARMUP loading the model without holding up the start."""

from __future__ import annotations

import logging

import pytest
import requests

from piagent.app import create_app
from piagent.settings import ConfigError, load_settings
from tests.conftest import MODEL
from tests.servers import free_port, piagent_under_gunicorn, wait_until


@pytest.mark.parametrize(
    ("setting", "sent"),
    [("5m", "5m"), ("1h30m", "1h30m"), ("-1", -1), ("300", 300), ("2.5", 2.5), ("0", 0)],
)
def test_keep_alive_is_sent_on_every_chat(make_settings, fake, setting, sent):
    client = create_app(make_settings(ollama_keep_alive=setting)).test_client()
    client.post("/chat", json={"message": "hi"})
    client.post("/chat", json={"message": "hi", "stream": True}).get_data()
    assert [r.json["keep_alive"] for r in fake.requests] == [sent, sent]


def test_keep_alive_default_is_ollamas_own(client, fake):
    client.post("/chat", json={"message": "hi"})
    assert fake.requests[-1].json["keep_alive"] == "5m"


@pytest.mark.parametrize("value", ["5 minutes", "forever", "m5", ""])
def test_unreadable_keep_alive_stops_the_start(value):
    with pytest.raises(ConfigError, match="OLLAMA_KEEP_ALIVE"):
        load_settings(environ={"OLLAMA_KEEP_ALIVE": value}, env_file=None)


def test_no_warmup_unless_asked(make_settings, fake):
    create_app(make_settings())
    assert fake.requests == []


def test_warmup_loads_each_model_in_the_background(make_settings, fake, caplog):
    fake.behave(first_token_delay=1)  # loading takes a while
    with caplog.at_level(logging.INFO, logger="piagent"):
        create_app(make_settings(warmup=True, ollama_keep_alive="-1"))
        generation = fake.wait_for_generation_start(timeout=5)
        assert generation.finished_at is None  # create_app returned while it was loading
        assert generation.request.json == {"model": MODEL, "messages": [], "keep_alive": -1}
        wait_until(
            lambda: any("is loaded" in r.getMessage() for r in caplog.records), 5, what="the log"
        )


def test_warmup_with_ollama_down_only_logs(make_settings, caplog):
    host = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="piagent"):
        app = create_app(make_settings(warmup=True, ollama_host=host))
        wait_until(
            lambda: any("not reachable" in r.getMessage() for r in caplog.records),
            5,
            what="the warning",
        )
    assert app.test_client().get("/health").status_code == 200


def test_warmup_does_not_hold_up_a_gunicorn_worker(fake, tmp_path):
    fake.behave(first_token_delay=30)  # a cold model on a Pi
    with piagent_under_gunicorn(fake, tmp_path, WARMUP="true") as server:
        generation = fake.wait_for_generation_start(timeout=5)
        assert generation.request.json["messages"] == []
        # The worker answers while the model is still loading.
        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
        assert generation.finished_at is None
