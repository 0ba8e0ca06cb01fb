"""A real model end to end: SmolLM2 on llama.cpp, piagent in front with PROVIDER=openai.

The assertions are on the protocol, never on the words.
"""

from __future__ import annotations

import uuid

import openai
import pytest
import requests

from demo.llama_server import MODEL_NAME
from piagent.app import create_app
from piagent.settings import Settings
from tests.components import require_demo_packages
from tests.http_raw import read_response, send_request
from tests.llama import llama_server
from tests.servers import waitress_server

pytestmark = pytest.mark.realmodel


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory):
    require_demo_packages()
    with llama_server(tmp_path_factory.mktemp("llama")) as url:
        yield url


@pytest.fixture(scope="module")
def app(llama_url):
    settings = Settings(
        provider="openai",
        openai_base_url=f"{llama_url}/v1",
        openai_model=MODEL_NAME,
        max_tokens=24,  # short replies keep the suite fast
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def served(app):
    with waitress_server(app) as running:
        yield running


def chat(served, **body) -> dict:
    response = requests.post(f"{served.url}/chat", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_non_stream_reply_from_the_real_model(served):
    body = chat(served, message="Name a colour.")
    assert body["reply"].strip()
    assert (body["provider"], body["model"]) == ("openai", MODEL_NAME)
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0
    assert body["done_reason"] in ("stop", "length")


def test_stream_fragments_join_to_what_memory_stored_and_the_next_turn_sees_it(app, served):
    conversation_id = uuid.uuid4().hex
    request = {"message": "Say hello.", "stream": True, "conversation_id": conversation_id}
    with send_request(served.url, "/chat", request) as sock:
        streamed = read_response(sock)
    assert streamed.status == 200 and streamed.complete
    assert len(streamed.chunks) > 1  # relayed fragment by fragment, not buffered
    text = streamed.body.decode()
    assert text.strip()

    memory = app.extensions["piagent"].memory
    assert [(m.role, m.content) for m in memory.transcript(conversation_id)] == [
        ("user", "Say hello."),
        ("assistant", text),
    ]

    first_alone = chat(served, message="And goodbye?")["usage"]["prompt_tokens"]
    second = chat(served, message="And goodbye?", conversation_id=conversation_id)
    assert second["reply"].strip()
    assert second["usage"]["prompt_tokens"] > first_alone  # the first turn went along
    assert len(memory.transcript(conversation_id)) == 4


def test_openai_sdk_streams_from_the_real_model_through_piagent(served):
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="general",
                messages=[{"role": "user", "content": "Count to three."}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].usage.prompt_tokens > 0 and chunks[-1].usage.completion_tokens > 0
