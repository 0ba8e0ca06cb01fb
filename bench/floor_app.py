"""The floor for piagent: a bare Flask app on the same libraries, doing the least it must.

For idle RSS, `GET /health`: defining one pydantic model is part of the floor, since
pydantic loads most of itself only when the first model class is built. For the CPU a
non-stream chat costs, `POST /chat`: read the JSON body, make one `requests` call to the
model server at OLLAMA_HOST, answer JSON; no memory, agents, queue, metrics or checks.
For the CPU a relayed token costs, `POST /api/chat`: the body passed on, and the model
server's stream passed back as it comes, chunk by chunk, untouched (as nginx relays it).

Served by the benchmarks under the same gunicorn settings, so the difference between
its worker's figures and piagent's is what piagent itself costs.
"""

import os
from functools import cache

import dotenv  # noqa: F401
import flask
import pydantic
import requests

# The fake Ollama's default model; not imported from tests.fake_ollama, whose modules
# would then count in the idle RSS this app is the floor for.
MODEL = "qwen2.5:3b-instruct"


class Status(pydantic.BaseModel):
    """One small model, as any app on this stack has."""

    status: str


app = flask.Flask(__name__)


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness, as piagent answers it."""
    return Status(status="ok").model_dump()


@cache
def _model_server() -> tuple[requests.Session, str]:
    """One pooled session and the chat URL, made at the first chat, as any app would."""
    return requests.Session(), f"{os.environ['OLLAMA_HOST']}/api/chat"


@app.post("/chat")
def chat() -> dict[str, str]:
    """The message to the model server, its reply back: a relay with nothing else."""
    message = flask.request.get_json(force=True)["message"]
    session, url = _model_server()
    answer = session.post(
        url,
        json={"model": MODEL, "messages": [{"role": "user", "content": message}], "stream": False},
        timeout=30,
    )
    return {"reply": answer.json()["message"]["content"]}


@app.post("/api/chat")
def relay() -> flask.Response:
    """The model server's stream, passed back chunk by chunk as it arrives."""
    session, url = _model_server()
    upstream = session.post(url, data=flask.request.get_data(), stream=True, timeout=30)
    return flask.Response(
        upstream.iter_content(chunk_size=None), content_type=upstream.headers["Content-Type"]
    )
