"""POST /chat: validate, pick the agent, add memory, relay the model's reply."""

from __future__ import annotations

import uuid
from contextlib import ExitStack

from flask import Blueprint, Response, request
from pydantic import ValidationError

from ..agents import find_agent
from ..chat.conversation import Turn
from ..docs.apidoc import GENERATION_ERRORS, Media, operation
from ..errors import (
    ConversationBusy,
    MemoryUnavailable,
    MessageTooLong,
    ReplyNotKept,
    UnknownAgent,
)
from ..http.auth import conversation_key
from ..http.body import parse_body
from ..http.errors import InvalidRequest
from ..http.relay import collect_reply, new_generation, stream_body, stream_response
from ..http.schemas import (
    CONVERSATION_HEADER,
    NEW_CONVERSATION_HEADER,
    ChatHeaders,
    ChatReply,
    ChatRequest,
    StreamEvent,
)
from ..http.state import get_state
from ..http.stream_formats import NDJSON, SSE, TEXT, negotiate
from ..http.trace import current_trace

bp = Blueprint("chat", __name__)


@bp.post("/chat")
@operation(
    reply=ChatReply,
    media=(Media(TEXT), Media(SSE, StreamEvent), Media(NDJSON, StreamEvent)),
    reply_headers=(CONVERSATION_HEADER,),
    body=ChatRequest,
    headers=ChatHeaders,
    raises=(
        InvalidRequest,
        UnknownAgent,
        MessageTooLong,
        ConversationBusy,
        MemoryUnavailable,
        ReplyNotKept,
        *GENERATION_ERRORS,
    ),
)
def chat() -> Response:
    """Answer one message, as a JSON reply or as a stream (text, SSE or NDJSON)."""
    state = get_state()
    body = parse_body(ChatRequest)
    conversation_id = _conversation_id(body)
    agent = find_agent(state.agents, body.agent)
    current_trace().chat(agent, conversation_id, body.message)
    headers = {CONVERSATION_HEADER: conversation_id}

    with ExitStack() as owner:
        generation = new_generation(stream=body.stream)
        owner.callback(generation.close)
        # Stored under the caller's API key, so another key never sees this conversation.
        turn = Turn(
            state.memory,
            conversation_key(conversation_id),
            body.message,
            lease_s=state.settings.memory_lease_s,
            trim=state.settings.memory_trim,
            shown_as=conversation_id,
        )
        generation.take(turn)
        call = (turn.prompt(agent.system_prompt, agent.options), agent.model, agent.options)
        if body.stream:
            fmt = negotiate(request.accept_mimetypes)
            chunks = stream_body(generation, call, fmt, state.settings.sse_heartbeat_s)
            owner.pop_all()  # from here the response body closes the generation
            return stream_response(chunks, fmt.content_type, headers)
        try:
            reply, stats = collect_reply(generation, call)
        except MemoryUnavailable as exc:
            # Here only keeping the reply uses the memory, after the model has answered: not
            # the 503 of a refusal before anything happened, which a balancer passes on.
            raise ReplyNotKept(
                "the model answered, but nothing of this exchange could be kept, so send the "
                f"message again: {exc.detail}"
            ) from None

    payload = ChatReply(
        reply=reply,
        conversation_id=conversation_id,
        model=agent.model,
        provider=state.provider.name,
        usage=None if stats is None else stats.usage,
        done_reason=None if stats is None else stats.done_reason,
    )
    return Response(payload.model_dump_json(), content_type="application/json", headers=headers)


def _conversation_id(body: ChatRequest) -> str:
    """The conversation named in the body or X-Conversation-Id (or both, alike), or a new one."""
    sent = {
        name: request.headers[name]
        for name in (CONVERSATION_HEADER, NEW_CONVERSATION_HEADER)
        if name in request.headers
    }
    try:
        headers = ChatHeaders.model_validate(sent)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc, "header") from None
    named = headers.conversation_id
    if named is not None and body.conversation_id not in (None, named):
        raise InvalidRequest(
            [
                {
                    "type": "conversation_id_mismatch",
                    "loc": ["header", CONVERSATION_HEADER],
                    "msg": f"names conversation {named!r}, but the body's conversation_id is "
                    f"{body.conversation_id!r}; send one of them, or the same id in both",
                }
            ]
        )
    return named or body.conversation_id or headers.new_conversation_id or str(uuid.uuid4())
