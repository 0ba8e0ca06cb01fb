"""POST /chat: validate, pick the agent, add memory, relay the model's reply."""

from __future__ import annotations

import uuid
from contextlib import ExitStack

from flask import Blueprint, Response, request

from ..agents import find_agent
from ..chat.conversation import Turn
from ..http.auth import conversation_key
from ..http.body import parse_body
from ..http.relay import collect_reply, new_generation, stream_body
from ..http.schemas import ChatReply, ChatRequest
from ..http.state import get_state
from ..http.stream_formats import STREAM_HEADERS, negotiate
from ..http.trace import current_trace

bp = Blueprint("chat", __name__)


@bp.post("/chat")
def chat() -> Response:
    """Answer one message, as a JSON reply or as a stream (text, SSE or NDJSON)."""
    state = get_state()
    body = parse_body(ChatRequest)
    agent = find_agent(state.agents, body.agent)
    conversation_id = body.conversation_id or str(uuid.uuid4())
    current_trace().chat(agent, conversation_id, body.message)
    headers = {"X-Conversation-Id": conversation_id}

    with ExitStack() as owner:
        generation = new_generation(stream=body.stream)
        owner.callback(generation.close)
        # Stored under the caller's API key, so another key never sees this conversation.
        turn = Turn(
            state.memory,
            conversation_key(conversation_id),
            body.message,
            lease_s=state.settings.memory_lease_s,
            shown_as=conversation_id,
        )
        generation.take(turn)
        call = (turn.prompt(agent.system_prompt, agent.options), agent.model, agent.options)
        if body.stream:
            fmt = negotiate(request.accept_mimetypes)
            chunks = stream_body(generation, call, fmt, state.settings.sse_heartbeat_s)
            owner.pop_all()  # from here the response body closes the generation
            return Response(chunks, content_type=fmt.content_type, headers=headers | STREAM_HEADERS)
        reply, stats = collect_reply(generation, call)

    payload = ChatReply(
        reply=reply,
        conversation_id=conversation_id,
        model=agent.model,
        provider=state.provider.name,
        usage=None if stats is None else stats.usage,
        done_reason=None if stats is None else stats.done_reason,
    )
    return Response(payload.model_dump_json(), content_type="application/json", headers=headers)
