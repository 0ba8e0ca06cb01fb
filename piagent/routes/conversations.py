"""The caller's conversations: the list, what one remembers, and forgetting it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask import Blueprint, Response, request
from pydantic import ValidationError

from ..docs.apidoc import operation
from ..errors import ConversationBusy, MemoryUnavailable, UnknownConversation
from ..http.auth import conversation_key, conversation_namespace
from ..http.errors import InvalidRequest
from ..http.schemas import (
    ConversationList,
    ConversationListItem,
    ConversationListQuery,
    ConversationPath,
    Transcript,
    TranscriptMessage,
)
from ..http.state import get_state
from ..memory.base import ConversationStore

bp = Blueprint("conversations", __name__)


@bp.get("/conversations")
@operation(
    reply=ConversationList, query=ConversationListQuery, raises=(InvalidRequest, MemoryUnavailable)
)
def list_conversations() -> Response:
    """The caller's conversations, most recently updated first; an empty list, never 404."""
    try:
        query = ConversationListQuery.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc, "query") from None
    store = get_state().memory
    found = [] if store is None else store.conversations(conversation_namespace(), query.limit)
    listing = ConversationList(
        conversations=[
            ConversationListItem(
                conversation_id=summary.conversation_id,
                title=summary.title,
                updated_at=datetime.fromtimestamp(summary.updated_at, UTC),
                messages=summary.messages,
            )
            for summary in found
        ]
    )
    return Response(listing.model_dump_json(), content_type="application/json")


@bp.get("/conversations/<conversation_id>")
@operation(
    reply=Transcript,
    path=ConversationPath,
    raises=(InvalidRequest, UnknownConversation, MemoryUnavailable),
)
def show(conversation_id: str) -> Response:
    """Every remembered message of the conversation, oldest first, with its time."""
    store = _store_for(conversation_id)
    messages = store.transcript(conversation_key(conversation_id))
    if messages is None:
        raise _unknown(conversation_id)
    transcript = Transcript(
        conversation_id=conversation_id,
        messages=[
            TranscriptMessage(
                role=m.role, content=m.content, timestamp=datetime.fromtimestamp(m.at, UTC)
            )
            for m in messages
        ],
    )
    return Response(transcript.model_dump_json(), content_type="application/json")


@bp.delete("/conversations/<conversation_id>")
@operation(
    status=204,
    reply_text="Forgotten.",
    path=ConversationPath,
    raises=(InvalidRequest, UnknownConversation, ConversationBusy, MemoryUnavailable),
)
def forget(conversation_id: str) -> Response:
    """Forget the conversation (204); 409 while one of its messages is being answered."""
    store = _store_for(conversation_id)
    key = conversation_key(conversation_id)
    holder = uuid.uuid4().hex
    # Claimed first, so a reply still in flight cannot bring the conversation back. One
    # lease, not renewed, covers the single call to forget (a worker dying in between
    # leaves the claim for no longer than that).
    if store.begin(key, holder, get_state().settings.memory_lease_s) is None:
        raise ConversationBusy(
            f"conversation {conversation_id!r} is answering a message; "
            "delete it when that reply has finished"
        )
    try:
        forgotten = store.forget(key)
    finally:
        store.end(key, holder)
    if not forgotten:
        raise _unknown(conversation_id)
    response = Response(status=204)
    del response.headers["Content-Type"]  # Flask's default; a 204 has no body to have a type
    return response


def _store_for(conversation_id: str) -> ConversationStore:
    """The store, once the id is valid; 404 when memory is off."""
    try:
        ConversationPath(conversation_id=conversation_id)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc, "path") from None
    store = get_state().memory
    if store is None:
        raise UnknownConversation("no conversation is kept: memory is off (ENABLE_MEMORY=false)")
    return store


def _unknown(conversation_id: str) -> UnknownConversation:
    return UnknownConversation(
        f"no conversation {conversation_id!r} is remembered: it never had a reply, "
        "was deleted, or was forgotten (idle past MEMORY_TTL_MIN, or pushed out by newer "
        "ones past MEMORY_MAX_CONVERSATIONS)"
    )
