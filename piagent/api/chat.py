"""POST /chat: validate, pick the agent, add memory, relay the model's reply."""

from __future__ import annotations

import uuid
from functools import partial

from flask import Blueprint, Response, request

from ..agents import Agent, find_agent
from ..auth import conversation_key
from ..conversation import Turn, hold_seconds
from ..disconnect import DisconnectWatch
from ..model_call import admit_and_observe
from ..relay import Exchange, collect_reply, stream_reply
from ..schemas import ChatReply, ChatRequest
from ..state import get_state
from ..stream_formats import STREAM_HEADERS, negotiate
from ..trace import current_trace
from .body import parse_body

bp = Blueprint("chat", __name__)


@bp.post("/chat")
def chat() -> Response:
    """Answer one message, as a JSON reply or as a stream (text, SSE or NDJSON)."""
    state = get_state()
    body = parse_body(ChatRequest)
    agent = find_agent(state.agents, body.agent)

    conversation_id = body.conversation_id or str(uuid.uuid4())
    current_trace().chat(agent, conversation_id, body.message)
    hold_s = hold_seconds(state.settings, stream=body.stream)
    # Stored under the caller's API key, so another key never sees this conversation.
    turn = Turn(state.memory, conversation_key(conversation_id), body.message, hold_s=hold_s)
    try:
        return _answer(body, agent, turn, conversation_id)
    except BaseException:
        turn.abandon()
        raise


def _answer(body: ChatRequest, agent: Agent, turn: Turn, conversation_id: str) -> Response:
    state = get_state()
    messages = turn.prompt(agent.system_prompt, agent.options)
    exchange = Exchange(conversation_id=conversation_id, model=agent.model, finish=turn.finish)
    open_upstream = admit_and_observe(
        partial(state.provider.open_chat, messages, agent.model, agent.options, stream=body.stream)
    )
    headers = {"X-Conversation-Id": conversation_id}
    watch = DisconnectWatch(request.environ)

    if body.stream:
        fmt = negotiate(request.accept_mimetypes)
        chunks = stream_reply(open_upstream, watch, fmt, exchange, state.settings.sse_heartbeat_s)
        response = Response(chunks, content_type=fmt.content_type, headers=headers | STREAM_HEADERS)
        # A body the server never starts reading never reaches the relay's own ending.
        response.call_on_close(turn.abandon)
        return response

    reply, stats = collect_reply(open_upstream, watch, exchange)
    payload = ChatReply(
        reply=reply,
        conversation_id=conversation_id,
        model=agent.model,
        provider=state.provider.name,
        usage=None if stats is None else stats.usage,
        done_reason=None if stats is None else stats.done_reason,
    )
    return Response(payload.model_dump_json(), content_type="application/json", headers=headers)
