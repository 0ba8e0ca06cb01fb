"""One chat request's turn in its conversation: hold it, fit it to the context, keep the reply.

A conversation answers one message at a time. A second message that arrives while the
first is being answered gets 409 at once rather than a wait: a reply on a Pi can take
minutes, the model generates one reply at a time anyway, and the second message would
otherwise be answered without the first exchange it follows.
"""

from __future__ import annotations

import logging
import time
import uuid

from ..errors import ConversationBusy, MemoryUnavailable
from ..memory.base import ConversationStore, NewExchange, Recollection, TrimPolicy
from ..messages import Message
from ..providers.base import ChatStats, GenerationOptions
from .budget import fit_prompt, learned_ratio
from .lease import LeaseKeeper

log = logging.getLogger("piagent")


class Turn:
    """One request's hold on a conversation, from recalling it to keeping the reply.

    The hold is a lease of `lease_s`, renewed in the background until the turn ends.
    `finish` must follow, once, when the reply is known: it is what lets the next
    message in. Without a store (ENABLE_MEMORY=false) nothing is held or kept.
    """

    def __init__(
        self,
        store: ConversationStore | None,
        conversation_id: str,
        user_text: str,
        *,
        lease_s: float,
        trim: TrimPolicy,
        shown_as: str | None = None,
    ) -> None:
        """Hold the conversation and recall it; ConversationBusy while another request has it.

        `conversation_id` is where the store keeps it; `shown_as`, how the client names it;
        `trim`, how a history too long for the context is cut (MEMORY_TRIM).
        """
        self.conversation_id = conversation_id
        self._store = store
        self._user_text = user_text
        self._asked_at = time.time()
        self._holder = uuid.uuid4().hex
        self._trim = trim
        self._estimate = 0
        self._left_out = 0
        self._recalled = Recollection([])
        self._lease: LeaseKeeper | None = None
        if store is not None:
            recalled = store.begin(conversation_id, self._holder, lease_s)
            if recalled is None:
                name = shown_as or conversation_id
                raise ConversationBusy(
                    f"conversation {name!r} is still answering an earlier message; "
                    "send this one when that reply has finished"
                )
            self._recalled = recalled
            self._lease = LeaseKeeper(store, conversation_id, self._holder, lease_s)

    def prompt(self, system_prompt: str, options: GenerationOptions) -> list[Message]:
        """The messages to send: the system prompt, what fits of the history, the message."""
        fitted = fit_prompt(
            Message("system", system_prompt),
            self._recalled.messages,
            Message("user", self._user_text),
            ctx_tokens=options.ctx_tokens,
            max_tokens=options.max_tokens,
            token_ratio=self._recalled.token_ratio,
            trim=self._trim,
        )
        self._estimate = fitted.estimate
        # A block cut is kept: the store forgets what was left out, so the next prompts
        # start where this one does. A sliding cut is made afresh each turn.
        self._left_out = fitted.left_out if self._trim == "block" else 0
        return fitted.messages

    def finish(self, reply: str | None, stats: ChatStats | None) -> None:
        """Keep the exchange when the reply has text, and free the conversation.

        Raises MemoryUnavailable when a reply could not be kept.
        """
        if self._store is None:
            return
        self._lease.stop()
        if not reply:
            self._let_go()
            return
        prompt_tokens = stats.prompt_tokens if stats else None
        exchange = NewExchange(
            self._user_text,
            reply,
            asked_at=self._asked_at,
            token_ratio=learned_ratio(self._recalled.token_ratio, self._estimate, prompt_tokens),
            forgotten=self._left_out,
        )
        try:
            self._store.end(self.conversation_id, self._holder, exchange)
        except MemoryUnavailable:
            self._let_go()
            raise

    def _let_go(self) -> None:
        try:
            self._store.end(self.conversation_id, self._holder)
        except MemoryUnavailable as exc:
            # Not fatal: no longer renewed, the lease lapses by itself.
            log.warning("conversation %s stays held: %s", self.conversation_id, exc.detail)
