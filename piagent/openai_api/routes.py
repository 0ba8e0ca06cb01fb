"""The OpenAI-compatible API, so existing tools can talk to piagent: each agent is a model.

Requests are stateless (OpenAI clients send the history themselves), so memory is
neither read nor written; the history is trimmed to the context budget instead.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from typing import Any

from flask import Blueprint, Response, jsonify

from ..agents import find_agent
from ..chat.budget import trim_to_budget
from ..docs.apidoc import GENERATION_ERRORS, Media, operation
from ..errors import MessageTooLong, UnknownAgent
from ..http.body import parse_body
from ..http.errors import OPENAI_STATUSES, InvalidRequest, use_error_shape
from ..http.relay import collect_reply, new_generation, stream_body, stream_response
from ..http.schemas import AgentPath
from ..http.state import get_state
from ..http.stream_formats import SSE
from ..http.trace import current_trace
from ..messages import Message
from .errors import openai_shape
from .format import ChunkFormat, Completion, model_entry
from .schemas import (
    ChatCompletion,
    CompletionEvent,
    CompletionRequest,
    ModelEntry,
    ModelList,
    OpenAIErrorReply,
)

bp = Blueprint("v1", __name__, url_prefix="/v1")
use_error_shape(bp, openai_shape, statuses=OPENAI_STATUSES)
v1_operation = partial(operation, error_reply=OpenAIErrorReply, statuses=OPENAI_STATUSES)


@bp.get("/models")
@v1_operation(reply=ModelList)
def list_models() -> dict[str, Any]:
    """One model per agent."""
    return {"object": "list", "data": [model_entry(a) for a in get_state().agents.values()]}


@bp.get("/models/<name>")
@v1_operation(reply=ModelEntry, path=AgentPath, raises=(UnknownAgent,))
def get_model(name: str) -> dict[str, Any]:
    """The model that stands for one agent."""
    return model_entry(find_agent(get_state().agents, name))


@bp.post("/chat/completions")
@v1_operation(
    reply=ChatCompletion,
    media=(Media(SSE, CompletionEvent, last_data="[DONE]"),),
    body=CompletionRequest,
    raises=(InvalidRequest, UnknownAgent, MessageTooLong, *GENERATION_ERRORS),
)
def chat_completions() -> Response:
    """Answer the conversation the client sent, as one JSON body or as server-sent events."""
    state = get_state()
    body = parse_body(CompletionRequest)
    agent = find_agent(state.agents, body.model)

    # The client may lower the agent's token limit, never raise it: the Pi pays for it.
    asked = body.max_completion_tokens or body.max_tokens or agent.options.max_tokens
    options = replace(
        agent.options,
        temperature=agent.options.temperature if body.temperature is None else body.temperature,
        max_tokens=min(asked, agent.options.max_tokens),
    )
    messages = [m.to_message() for m in body.messages]
    if not any(m.role == "system" for m in messages):
        messages.insert(0, Message("system", agent.system_prompt))
    messages = trim_to_budget(
        messages, ctx_tokens=options.ctx_tokens, max_tokens=options.max_tokens
    )

    completion = Completion(model=agent.name)
    current_trace().chat(agent, None, messages[-1].content)
    call = (messages, agent.model, options)
    with ExitStack() as owner:
        generation = new_generation(stream=body.stream)
        owner.callback(generation.close)
        if body.stream:
            fmt = ChunkFormat.for_completion(completion, include_usage=body.include_usage)
            chunks = stream_body(generation, call, fmt, state.settings.sse_heartbeat_s)
            owner.pop_all()  # from here the response body closes the generation
            return stream_response(chunks, fmt.content_type)
        text, stats = collect_reply(generation, call)
    return jsonify(completion.whole(text, stats))
