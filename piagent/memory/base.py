"""What every conversation store promises, whichever backend keeps the conversations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from ..messages import Message


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A remembered message and when it was written (wall-clock seconds since the epoch)."""

    role: str
    content: str
    at: float


@dataclass(frozen=True, slots=True)
class Recollection:
    """What a conversation brings to the next call: its messages, oldest first."""

    messages: list[Message]
    # The model's reported prompt size over our estimate, learnt from earlier calls.
    token_ratio: float | None = None


# How a conversation that outgrows its bounds shrinks (MEMORY_TRIM): by its oldest
# exchange each turn (sliding), or by the older half at once (block). A model server
# reuses what it computed for the previous prompt up to the first message that differs,
# so a history that only grows at its end is read once; a sliding window changes its
# start every turn and has it read again whole.
TrimPolicy = Literal["block", "sliding"]


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """The bounds every backend enforces."""

    max_messages: int  # per conversation; user and assistant messages both count
    ttl_s: float  # idle time before a conversation is forgotten; 0 keeps it forever
    max_conversations: int  # past this the least recently used one is dropped
    max_message_chars: int  # longer messages are cut before they are stored
    trim: TrimPolicy

    @property
    def kept_messages(self) -> int:
        """Messages kept per conversation: whole exchanges only, so never a lone reply."""
        return self.max_messages - self.max_messages % 2

    @property
    def trimmed_to(self) -> int:
        """Messages left once a conversation outgrows `kept_messages`.

        Sliding keeps all it may; block keeps the newer half of the exchanges, at least
        the newest one, so that several turns can be added before the next cut.
        """
        kept = self.kept_messages
        if self.trim == "sliding" or kept == 0:
            return kept
        return max(2, kept // 4 * 2)

    def dropped(self, count: int, forgotten: int = 0) -> int:
        """How many of a conversation's `count` messages go, oldest first, as an exchange is kept.

        `count` includes the new exchange (the last two). The `forgotten` oldest go in
        any case (those its prompt left out, see NewExchange); when what is left is more
        than `kept_messages`, it is cut to the newest `trimmed_to`. The Redis store runs
        the same rule in its script, with these numbers as arguments.
        """
        forgotten = max(0, min(forgotten, count - 2))
        if count - forgotten > self.kept_messages:
            return count - self.trimmed_to
        return forgotten


@dataclass(frozen=True, slots=True)
class NewExchange:
    """A user message and the model's reply, kept together."""

    user_text: str
    reply_text: str
    asked_at: float  # when the user message arrived (wall-clock seconds)
    token_ratio: float | None = None  # newly learnt; None keeps the conversation's own
    # How many of the oldest remembered messages to drop before keeping this exchange:
    # those the context budget left out of its prompt (MEMORY_TRIM=block), so that what
    # is kept is what the model was sent, and the next prompt only adds to this one.
    forgotten: int = 0


class ConversationStore(Protocol):
    """Recent messages per conversation id, bounded, expiring, safe under concurrent use.

    A request claims its conversation with `begin`, keeps the claim with `renew` for as
    long as it runs, and lets go with `end`, one call each (one round trip, one
    transaction): while it holds the claim, no other request can begin on that
    conversation. The claim is a lease: one that is not renewed within `lease_s` lapses,
    so the conversation of a process that died mid-reply is soon free again. Messages are
    kept in pairs, so a conversation always starts with a user message. `begin` counts as
    use (the conversation stays alive and recent); `transcript` only looks.
    """

    def begin(self, conversation_id: str, holder: str, lease_s: float) -> Recollection | None:
        """Claim the conversation for `lease_s` and recall it; None while another holder has it."""

    def renew(self, conversation_id: str, holder: str, lease_s: float) -> bool:
        """Extend the claim to `lease_s` from now; False when `holder` no longer holds it."""

    def end(self, conversation_id: str, holder: str, exchange: NewExchange | None = None) -> None:
        """Keep the exchange, if any, and let go of the claim (unless it passed to another)."""

    def transcript(self, conversation_id: str) -> list[StoredMessage] | None:
        """Every remembered message with its time; None when the conversation is unknown."""

    def forget(self, conversation_id: str) -> bool:
        """Drop the conversation; False when it was unknown."""

    def conversations(self, namespace: str, limit: int) -> list[ConversationSummary]:
        """The namespace's conversations, most recently updated first; looking is not use."""

    def __len__(self) -> int:
        """How many conversations are remembered."""

    def check(self) -> None:
        """Raise MemoryUnavailable when the store cannot be reached or read right now."""

    def close(self) -> None:
        """Release files and connections."""


def clipped(exchange: NewExchange, limits: MemoryLimits) -> tuple[str, str]:
    """The exchange's message and reply, each cut to the longest message a store keeps."""
    longest = limits.max_message_chars
    return exchange.user_text[:longest], exchange.reply_text[:longest]


# --- Listing: the conversations of one namespace (one API key's, or those of no key) ------

TITLE_MAX_CHARS = 80


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """A conversation as a list shows it; the id is without its namespace."""

    conversation_id: str
    title: str  # its first remembered user message, cut to TITLE_MAX_CHARS
    updated_at: float  # when its newest message was written (wall-clock seconds)
    messages: int


def namespace_of(key: str) -> str:
    """The namespace of a conversation key: up to and including its last "/", else "".

    A key is a namespace followed by a conversation id, which never holds a "/".
    """
    return key[: key.rfind("/") + 1]
