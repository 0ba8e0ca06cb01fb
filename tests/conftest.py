"""Fixtures shared by every test: a fake Ollama, piagent apps built by the factory, servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis

from piagent.app import create_app
from piagent.settings import Settings
from tests.fake_ollama import FakeOllama
from tests.redis_server import redis_server
from tests.servers import RunningServer, piagent_under_gunicorn, waitress_server

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureFunctionDefinition

MODEL = "qwen2.5:3b-instruct"


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    """A fresh fake Ollama on a free loopback port, with the default model pulled."""
    with FakeOllama(models={MODEL}) as server:
        yield server


@pytest.fixture(scope="module")
def module_fake() -> Iterator[FakeOllama]:
    """One fake for a module's real servers, started once; `shared_fake` resets it per test."""
    with FakeOllama(models={MODEL}) as server:
        yield server


@pytest.fixture
def shared_fake(module_fake: FakeOllama) -> FakeOllama:
    """The module's fake, reset for this test: `fake = shared_fake` in a module serving from it."""
    module_fake.reset()
    return module_fake


def gunicorn_for_module(**env: str) -> FixtureFunctionDefinition:
    """A module-scoped fixture: piagent under gunicorn against `module_fake`, with `env`.

    Assigned in a test module (`server = gunicorn_for_module(ACCESS_LOG="")`), it starts
    once for the module's tests; pair it with `fake = shared_fake`.
    """

    @pytest.fixture(scope="module")
    def server(module_fake: FakeOllama, tmp_path_factory) -> Iterator[RunningServer]:
        log_dir = tmp_path_factory.mktemp("gunicorn")
        with piagent_under_gunicorn(module_fake, log_dir, **env) as running:
            yield running

    return server


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


@pytest.fixture
def served(app) -> Iterator[RunningServer]:
    """The test's app served by waitress on a loopback port, for clients of real sockets."""
    with waitress_server(app) as running:
        yield running


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A real redis-server for the whole run; each user picks its own keys or flushes."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(params=["memory", "sqlite", "redis"])
def memory_settings(request, tmp_path):
    """Settings fields that choose each memory backend in turn, on an empty store."""
    backend = request.param
    fields = {"memory_backend": backend, "memory_path": tmp_path / "memory.sqlite3"}
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        fields["redis_url"] = url
    return fields


@pytest.fixture
def build_client(make_settings, memory_settings):
    """Builds a test client of an app on each memory backend in turn, with `overrides`."""

    def build(**overrides):
        return create_app(make_settings(**memory_settings, **overrides)).test_client()

    return build
