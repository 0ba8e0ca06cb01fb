"""The floor for piagent's idle RSS: a bare Flask app using the same libraries.

Defining one pydantic model is part of the floor: pydantic loads most of itself only
when the first model class is built.

Served by the benchmark under the same gunicorn settings, so the difference between
its worker's memory and piagent's is what piagent itself costs.
"""

import dotenv  # noqa: F401
import flask
import pydantic
import requests  # noqa: F401


class Status(pydantic.BaseModel):
    """One small model, as any app on this stack has."""

    status: str


app = flask.Flask(__name__)


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness, as piagent answers it."""
    return Status(status="ok").model_dump()
