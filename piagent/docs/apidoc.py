"""What each route reads and answers, recorded on its view for the API document.

A view is annotated with `@operation(...)` (its bodies are the pydantic models that
validate and shape them) or `@undocumented(reason)`; `piagent.docs.openapi` reads the
annotations off the app's URL map and writes the OpenAPI document from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel

from ..errors import (
    Overloaded,
    PiagentError,
    UpstreamBusy,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from ..http.schemas import ErrorReply

View = TypeVar("View", bound=Callable[..., object])

# What asking the model may end in, whichever route asks it.
GENERATION_ERRORS: tuple[type[PiagentError], ...] = (
    UpstreamError,
    UpstreamRejected,
    UpstreamUnreachable,
    UpstreamTimeout,
    UpstreamBusy,
    Overloaded,
)

_OPERATION = "__piagent_operation__"
_UNDOCUMENTED = "__piagent_undocumented__"


@dataclass(frozen=True)
class Media:
    """Another shape of a successful reply: bare text, or a stream of JSON events.

    `event` is the model of each event (an SSE `data:` field, or an NDJSON line); None
    for text. `last_data` is an SSE data field that is not JSON and ends the stream.
    """

    media_type: str
    event: type[BaseModel] | None = None
    last_data: str | None = None


@dataclass(frozen=True)
class Operation:
    """What one view reads (body, query, path, headers) and answers (reply, errors)."""

    reply: type[BaseModel] | None = None  # the JSON body of a success
    status: int = 200
    reply_text: str = ""  # says what the success is when no model does
    media: tuple[Media, ...] = ()  # other media types of the success
    reply_headers: tuple[str, ...] = ()  # headers every success carries
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path: type[BaseModel] | None = None  # validated by the view, or only described
    headers: type[BaseModel] | None = None
    # What the view raises (InvalidRequest where it validates); the statuses come from
    # http/errors.py.
    raises: tuple[type[PiagentError], ...] = ()
    error_reply: type[BaseModel] = ErrorReply  # the blueprint's error body
    # The blueprint's own statuses for some errors (the table it gives use_error_shape).
    statuses: Mapping[type[PiagentError], int] = field(default_factory=dict)

    def __call__(self, view: View) -> View:
        """Used as a decorator: record this operation on the view."""
        setattr(view, _OPERATION, self)
        return view


# `@operation(reply=..., raises=...)` between the route decorator and the view.
operation = Operation


def undocumented(reason: str) -> Callable[[View], View]:
    """Keep the view out of the API document, saying why."""

    def record(view: View) -> View:
        setattr(view, _UNDOCUMENTED, reason)
        return view

    return record


def operation_of(view: Callable[..., object]) -> Operation | None:
    """The view's recorded operation, if it has one."""
    return getattr(view, _OPERATION, None)


def exclusion_of(view: Callable[..., object]) -> str | None:
    """Why the view is left out of the document, if it is."""
    return getattr(view, _UNDOCUMENTED, None)
