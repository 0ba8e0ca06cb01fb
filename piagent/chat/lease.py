"""Keeping a request's claim on its conversation alive for exactly as long as the request.

The claim is a short lease that a background thread renews: it covers the whole
request, however long it waits in the queue or streams to a slow reader, and when the
process dies mid-reply nobody renews it, so the conversation is free again within one
lease instead of the request's longest time limit. Under gunicorn's gevent worker the
thread is a greenlet (gevent patches `threading`); under a threaded server it is a real
thread, and every store is safe to share between threads.
"""

from __future__ import annotations

import logging
import threading

from ..errors import MemoryUnavailable
from ..memory.base import ConversationStore

log = logging.getLogger("piagent")

# Renewed this many times a lease, so that a renewal or two may fail (the store out of
# reach for a moment, a busy worker) before the claim lapses.
RENEWALS_PER_LEASE = 3


class LeaseKeeper:
    """Renews a claim from a daemon thread until `stop()`."""

    def __init__(
        self, store: ConversationStore, conversation_id: str, holder: str, lease_s: float
    ) -> None:
        """Start renewing a claim just taken with `store.begin(..., lease_s)`."""
        self._store = store
        self._conversation_id = conversation_id
        self._holder = holder
        self._lease_s = lease_s
        self._stopped = threading.Event()
        threading.Thread(
            target=self._renew_until_stopped, name="piagent-lease", daemon=True
        ).start()

    def stop(self) -> None:
        """Renew no more; returns at once.

        The thread is not joined: a renewal still under way when the claim is let go
        finds it gone (renew extends only a claim its holder still has) and changes
        nothing, so waiting for it would only hold up the request's close, by as much as
        the store's timeout when the store is out of reach.
        """
        self._stopped.set()

    def _renew_until_stopped(self) -> None:
        warned = False
        while not self._stopped.wait(self._lease_s / RENEWALS_PER_LEASE):
            try:
                renewed = self._store.renew(self._conversation_id, self._holder, self._lease_s)
            except MemoryUnavailable as exc:
                # Tried again at the next interval: the store may be back within the lease.
                if not warned:
                    log.warning(
                        "conversation %s: its claim could not be renewed: %s",
                        self._conversation_id,
                        exc.detail,
                    )
                    warned = True
                continue
            if not renewed:
                if not self._stopped.is_set():  # not merely let go while this renewal ran
                    log.warning(
                        "conversation %s: its claim lapsed before its reply ended (the memory "
                        "was out of reach, or this worker stalled, for longer than "
                        "MEMORY_LEASE_S=%g s); another message on it may be answered meanwhile",
                        self._conversation_id,
                        self._lease_s,
                    )
                return
