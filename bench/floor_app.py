"""The floor for piagent: a bare Flask app on the same libraries, doing the least it must.

For idle RSS, `GET /health`: defining one pydantic model is part of the floor, since
pydantic loads most of itself only when the first model class is built. For the CPU a
non-stream chat costs, `POST /chat`: read the JSON body, make one `requests` call to the
model server at OLLAMA_HOST, answer JSON; no memory, agents, queue, metrics or checks.

Served by the benchmarks under the same gunicorn settings, so the difference between
its worker's figures and piagent's is what piagent itself costs.
"""

import os
from functools import cache

import dotenv  # noqa: F401
import flask
import pydantic
import requests

MODEL = "qwen2.5:3b-instruct"  # the fake Ollama's default model


class Status(pydantic.BaseModel):
    """One small model, as any app on this stack has."""

    status: str


app = flask.Flask(__name__)


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness, as piagent answers it."""
    return Status(status="ok").model_dump()


@cache
def _session() -> requests.Session:
    return requests.Session()


@app.post("/chat")
def chat() -> dict[str, str]:
    """The message to the model server, its reply back: a relay with nothing else."""
    message = flask.request.get_json(force=True)["message"]
    answer = _session().post(
        f"{os.environ['OLLAMA_HOST']}/api/chat",
        json={"model": MODEL, "messages": [{"role": "user", "content": message}], "stream": False},
        timeout=30,
    )
    return {"reply": answer.json()["message"]["content"]}
