"""Running a blocking store's calls beside gevent's event loop instead of inside it.

sqlite3 never yields to gevent: a call that waits for another process's write lock (up
to the store's busy timeout) or for a slow SD card to sync would freeze every stream of
the worker. Under gevent each call therefore runs in one native thread of the store's
own, while the calling greenlet waits cooperatively and the loop keeps turning. One
thread, so the store's connection and lock are only ever used from it: the calls stay
one at a time, as the store's lock made them before.

Without gevent (threads, waitress, the tests' client) the store is used as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from .base import ConversationStore, ConversationSummary, NewExchange, Recollection, StoredMessage

T = TypeVar("T")


def off_the_loop(store: ConversationStore) -> ConversationStore:
    """`store`, its calls moved off the event loop when gevent has patched this process."""
    # gunicorn's gevent worker patches before the app is imported; anything else never
    # loaded gevent's monkey module, so it is not imported here for nothing.
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return store
    return OffLoopStore(store)


class OffLoopStore:
    """A ConversationStore whose every call runs in one native thread of its own."""

    def __init__(self, store: ConversationStore) -> None:
        from gevent.threadpool import ThreadPool

        self._store = store
        self._pool = ThreadPool(1)

    def _run(self, call: Callable[..., T], *args: Any) -> T:
        return self._pool.apply(call, args)

    def begin(self, conversation_id: str, holder: str, lease_s: float) -> Recollection | None:
        """Claim the conversation for `lease_s` and recall it; None while another holder has it."""
        return self._run(self._store.begin, conversation_id, holder, lease_s)

    def renew(self, conversation_id: str, holder: str, lease_s: float) -> bool:
        """Extend the claim to `lease_s` from now; False when `holder` no longer holds it."""
        return self._run(self._store.renew, conversation_id, holder, lease_s)

    def end(self, conversation_id: str, holder: str, exchange: NewExchange | None = None) -> None:
        """Keep the exchange, if any, and let go of the claim (unless it passed to another)."""
        self._run(self._store.end, conversation_id, holder, exchange)

    def transcript(self, conversation_id: str) -> list[StoredMessage] | None:
        """Every remembered message with its time; None when the conversation is unknown."""
        return self._run(self._store.transcript, conversation_id)

    def forget(self, conversation_id: str) -> bool:
        """Drop the conversation; False when it was unknown."""
        return self._run(self._store.forget, conversation_id)

    def conversations(self, namespace: str, limit: int) -> list[ConversationSummary]:
        """The namespace's conversations, most recently updated first; looking is not use."""
        return self._run(self._store.conversations, namespace, limit)

    def __len__(self) -> int:
        """How many conversations are remembered."""
        return self._run(self._store.__len__)

    def check(self) -> None:
        """Raise MemoryUnavailable when the store cannot be reached or read right now."""
        self._run(self._store.check)

    def close(self) -> None:
        """Release the store's files and connections, then the thread."""
        try:
            self._run(self._store.close)
        finally:
            self._pool.kill()
