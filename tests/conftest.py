"""Fixtures shared by every test: a fake Ollama, and piagent apps built by the factory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from piagent.app import create_app
from piagent.settings import Settings
from tests.fake_ollama import FakeOllama
from tests.redis_server import redis_server

MODEL = "qwen2.5:3b-instruct"


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    """A fresh fake Ollama on a free loopback port, with the default model pulled."""
    with FakeOllama(models={MODEL}) as server:
        yield server


@pytest.fixture(scope="module")
def module_fake() -> Iterator[FakeOllama]:
    """One fake for a module's real servers, started once; a module's own `fake` resets it."""
    with FakeOllama(models={MODEL}) as server:
        yield server


@pytest.fixture
def make_settings(fake: FakeOllama):
    """Settings pointing at the fake, with per-test overrides."""

    def build(**overrides) -> Settings:
        return Settings(**{"ollama_host": fake.url, **overrides})

    return build


@pytest.fixture
def app(make_settings):
    """A piagent app with the real Ollama provider, talking to the fake."""
    return create_app(make_settings())


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A real redis-server for the whole run; each user picks its own keys or flushes."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url
