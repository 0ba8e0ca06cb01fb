"""POST /chat: validate, pick the agent, add memory, relay the model's reply."""

from __future__ import annotations

import uuid
from functools import partial

from flask import Blueprint, Response, request

from ..agents import find_agent
from ..auth import conversation_key
from ..disconnect import DisconnectWatch
from ..memory import Message
from ..model_call import admit_and_observe
from ..providers.base import ChatStream
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
    memory, memory_key = state.memory, conversation_key(conversation_id)
    current_trace().chat(agent, conversation_id, body.message)

    def open_chat() -> ChatStream:
        # Memory is read once admitted, so a queued request sees the turn saved before it.
        history = memory.history(memory_key) if memory is not None else []
        messages = [Message("system", agent.system_prompt), *history, Message("user", body.message)]
        return state.provider.open_chat(messages, agent.model, agent.options, stream=body.stream)

    exchange = Exchange(
        conversation_id=conversation_id,
        model=agent.model,
        remember=partial(memory.save_exchange, memory_key, body.message)
        if memory is not None
        else None,
    )
    open_upstream = admit_and_observe(open_chat)
    headers = {"X-Conversation-Id": conversation_id}
    watch = DisconnectWatch(request.environ)

    if body.stream:
        fmt = negotiate(request.accept_mimetypes)
        try:
            chunks = stream_reply(
                open_upstream, watch, fmt, exchange, state.settings.sse_heartbeat_s
            )
        except BaseException:
            watch.close()
            raise
        return Response(chunks, content_type=fmt.content_type, headers=headers | STREAM_HEADERS)

    try:
        reply, stats = collect_reply(open_upstream, watch, exchange)
    finally:
        watch.close()
    payload = ChatReply(
        reply=reply,
        conversation_id=conversation_id,
        model=agent.model,
        provider=state.provider.name,
        usage=None
        if stats is None
        else {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens},
        done_reason=None if stats is None else stats.done_reason,
    )
    return Response(payload.model_dump_json(), content_type="application/json", headers=headers)
