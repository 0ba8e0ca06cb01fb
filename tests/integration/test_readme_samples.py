"""The README's sample replies are what a newcomer sees after `make demo`.

The demo runs piagent with PROVIDER=openai in front of llama.cpp serving SmolLM2; here
the same settings face the fake OpenAI-compatible server serving a model of that name,
and each sample must have the reply's fields and the values that tell what answered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.llama_server import MODEL_NAME
from piagent.app import create_app
from piagent.settings import Settings
from tests.fake_openai import FakeOpenAI

README = Path(__file__).resolve().parents[2] / "README.md"


def section(title: str) -> str:
    """The README's text under `## title`, up to the next section of that level."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def sample_replies(text: str) -> Iterator[dict]:
    """Each JSON object shown as a `# {...}` comment, continuation lines (`#  `) joined."""
    for match in re.finditer(r"^# (\{.*(?:\n#  .*)*)", text, re.M):
        yield json.loads(re.sub(r"\n#  ", "", match.group(1)))


def sample(text: str, key: str, value: object = None) -> dict:
    (found,) = [s for s in sample_replies(text) if key in s and value in (None, s[key])]
    return found


@pytest.fixture(scope="module")
def demo_client():
    """piagent with the demo's settings, in front of a server that serves the demo's model."""
    with FakeOpenAI(models=(MODEL_NAME,)) as server:
        settings = Settings(
            provider="openai", openai_base_url=server.base_url, openai_model=MODEL_NAME
        )
        yield create_app(settings).test_client()


def assert_like(shown: dict, actual: dict, *same: str) -> None:
    """The same fields, and the same values for those that say what answered."""
    assert set(shown) == set(actual), (shown, actual)
    for key in same:
        assert shown[key] == actual[key], key


def test_the_samples_of_using_it_are_the_demos_replies(demo_client):
    text = section("Using it")
    assert sample(text, "status") == demo_client.get("/health").get_json()
    assert sample(text, "agents") == demo_client.get("/agents").get_json()

    shown = sample(text, "name", "shell")
    actual = demo_client.get("/agents/shell").get_json()
    assert_like(shown, actual, "name", "provider", "model", "temperature", "max_tokens")

    shown = sample(text, "reply")
    reply = demo_client.post("/chat", json={"message": "Disk space?", "agent": "shell"})
    actual = reply.get_json()
    assert_like(shown, actual, "provider", "model", "done_reason")
    assert set(shown["usage"]) == set(actual["usage"])

    shown = sample(text, "type", "done")
    events = demo_client.post(
        "/chat",
        json={"message": "Hi", "stream": True},
        headers={"Accept": "application/x-ndjson"},
    ).get_data(as_text=True)
    done = json.loads(events.splitlines()[-1])
    assert_like(shown, done, "type", "model", "done_reason")


def test_the_openai_sdk_example_says_how_to_get_the_package():
    text = section("OpenAI-compatible API")
    before_the_example = text[: text.index("from openai import OpenAI")]
    assert ".venv/bin/pip install openai" in before_the_example
