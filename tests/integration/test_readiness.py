"""GET /ready against the fake Ollama: down, a model missing, everything present; and caching."""

from __future__ import annotations

import socket

import pytest

from piagent.app import create_app
from piagent.settings import Settings
from tests.conftest import MODEL
from tests.fake_ollama import FakeOllama
from tests.fake_openai import MODEL as OPENAI_MODEL
from tests.fake_openai import FakeOpenAI
from tests.servers import free_port


def tags_requests(fake: FakeOllama) -> int:
    return sum(1 for r in fake.requests if r.path == "/api/tags")


def test_ready_when_ollama_has_every_model(client, fake):
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "models": [MODEL]}
    assert tags_requests(fake) == 1


def test_not_ready_when_ollama_is_down(make_settings):
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = create_app(make_settings(ollama_host=host)).test_client()
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.get_json() == {
        "detail": f"Ollama is not reachable at {host}: is it running? (OLLAMA_HOST)"
    }


def test_not_ready_names_the_missing_model_and_the_command(make_settings):
    client = create_app(make_settings(ollama_model_general="llama3.2")).test_client()
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.get_json() == {
        "detail": "model llama3.2 is not pulled: run ollama pull llama3.2"
    }


def test_a_model_without_tag_means_latest():
    with FakeOllama(models={"llama3.2:latest"}) as fake:
        settings = Settings(ollama_host=fake.url, ollama_model_general="llama3.2")
        assert create_app(settings).test_client().get("/ready").status_code == 200


def test_not_ready_when_ollama_does_not_answer_in_time(make_settings):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = create_app(make_settings(ollama_host=host, ready_timeout_s=0.2)).test_client()
        response = client.get("/ready")
    assert response.status_code == 503
    assert response.get_json() == {"detail": f"Ollama at {host} did not answer within 0.2 s"}


def test_answer_is_cached_for_a_few_seconds(make_settings, fake):
    client = create_app(make_settings(ready_cache_s=60)).test_client()
    assert client.get("/ready").status_code == 200
    fake.models.clear()
    assert client.get("/ready").status_code == 200  # the cached answer
    assert tags_requests(fake) == 1


def test_without_cache_every_probe_asks_again(make_settings, fake):
    client = create_app(make_settings(ready_cache_s=0)).test_client()
    assert client.get("/ready").status_code == 200
    fake.models.clear()
    assert client.get("/ready").status_code == 503
    assert tags_requests(fake) == 2


@pytest.mark.parametrize("path", ["/health", "/agents", "/metrics"])
def test_other_routes_never_ask_ollama(client, fake, path):
    assert client.get(path).status_code == 200
    assert fake.requests == []


def test_every_agents_own_model_must_be_pulled(make_settings, tmp_path):
    (tmp_path / "general.md").write_text("You help.")
    (tmp_path / "coder.md").write_text("You code.")
    (tmp_path / "coder.toml").write_text('model = "qwen2.5-coder:1.5b"\n')
    client = create_app(make_settings(prompts_dir=tmp_path)).test_client()
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.get_json() == {
        "detail": "model qwen2.5-coder:1.5b is not pulled: run ollama pull qwen2.5-coder:1.5b"
    }


def test_openai_compatible_server_is_asked_for_its_models():
    with FakeOpenAI() as upstream:
        fields = {"provider": "openai", "openai_base_url": upstream.base_url}
        ready = create_app(Settings(**fields, openai_model=OPENAI_MODEL)).test_client()
        assert ready.get("/ready").get_json() == {"status": "ready", "models": [OPENAI_MODEL]}

        missing = create_app(Settings(**fields, openai_model="other")).test_client()
        response = missing.get("/ready")
    assert response.status_code == 503
    detail = response.get_json()["detail"]
    assert "does not serve the model(s) other" in detail and "OPENAI_MODEL" in detail
