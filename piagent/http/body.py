"""Reading a JSON request body into its pydantic model, whatever the Content-Type."""

from __future__ import annotations

from typing import TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from .errors import InvalidRequest

Body = TypeVar("Body", bound=BaseModel)


def parse_body(model: type[Body]) -> Body:
    """Validate the request's raw bytes as `model`, or raise InvalidRequest naming each field."""
    # Read the raw bytes whatever the Content-Type: curl -d sends form encoding by default.
    data = request.get_data(cache=False)
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc, "body") from None
