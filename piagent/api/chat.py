"""POST /chat: validate, pick the agent, add memory, relay the model's reply."""

from __future__ import annotations

import uuid
from functools import partial

from flask import Blueprint, Response, request
from pydantic import ValidationError

from ..disconnect import DisconnectWatch
from ..errors import InvalidRequest, UnknownAgent
from ..memory import Message
from ..relay import Exchange, collect_reply, stream_reply
from ..schemas import ChatReply, ChatRequest
from ..state import get_state
from ..stream_formats import negotiate

bp = Blueprint("chat", __name__)

_STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}


@bp.post("/chat")
def chat() -> Response:
    """Answer one message, as a JSON reply or as a stream (text, SSE or NDJSON)."""
    state = get_state()
    body = _parse_chat_request()
    agent = state.agents.get(body.agent)
    if agent is None:
        known = ", ".join(state.agents)
        raise UnknownAgent(f"unknown agent {body.agent!r}; known agents: {known}")

    conversation_id = body.conversation_id or str(uuid.uuid4())
    memory = state.memory
    history = memory.history(conversation_id) if memory is not None else []
    messages = [Message("system", agent.system_prompt), *history, Message("user", body.message)]
    model = state.settings.ollama_model_general
    exchange = Exchange(
        conversation_id=conversation_id,
        model=model,
        remember=partial(memory.save_exchange, conversation_id, body.message)
        if memory is not None
        else None,
    )
    open_upstream = partial(
        state.provider.open_chat, messages, model, state.options, stream=body.stream
    )
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
        return Response(chunks, content_type=fmt.content_type, headers=headers | _STREAM_HEADERS)

    try:
        reply, stats = collect_reply(open_upstream, watch, exchange)
    finally:
        watch.close()
    payload = ChatReply(
        reply=reply,
        conversation_id=conversation_id,
        model=model,
        provider=state.provider.name,
        usage=None
        if stats is None
        else {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens},
        done_reason=None if stats is None else stats.done_reason,
    )
    return Response(payload.model_dump_json(), content_type="application/json", headers=headers)


def _parse_chat_request() -> ChatRequest:
    # Read the raw bytes whatever the Content-Type: curl -d sends form encoding by default.
    data = request.get_data(cache=False)
    try:
        return ChatRequest.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise InvalidRequest(
            [{**error, "loc": ["body", *error["loc"]]} for error in errors]
        ) from None
