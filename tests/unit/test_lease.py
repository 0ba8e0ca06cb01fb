"""The lease keeper against a real in-process store, with renewals that can be made to fail."""

from __future__ import annotations

import logging

import pytest

from piagent.chat.lease import LeaseKeeper
from piagent.errors import MemoryUnavailable
from piagent.memory.base import MemoryLimits
from piagent.memory.in_process import InProcessStore
from tests.servers import wait_until

LIMITS = MemoryLimits(
    max_messages=8, ttl_s=3600, max_conversations=10, max_message_chars=100, trim="block"
)


class FlakyStore(InProcessStore):
    """The real store, whose next `failures` renewals raise as an unreachable store would."""

    def __init__(self) -> None:
        super().__init__(LIMITS)
        self.failures = 0
        self.attempts = 0
        self.renewed = 0

    def renew(self, conversation_id: str, holder: str, lease_s: float) -> bool:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise MemoryUnavailable("the conversation memory is not reachable: test")
        renewed = super().renew(conversation_id, holder, lease_s)
        self.renewed += renewed
        return renewed


@pytest.fixture
def warnings(caplog):
    with caplog.at_level(logging.WARNING, logger="piagent"):
        yield lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_lease_is_kept_for_many_terms_and_lapses_once_stopped(warnings):
    store = FlakyStore()
    assert store.begin("c", "mine", 0.15) is not None
    keeper = LeaseKeeper(store, "c", "mine", 0.15)

    def held_for_many_terms() -> bool:
        assert store.begin("c", "other", 0.15) is None
        return store.renewed >= 6  # two lease terms and more

    wait_until(held_for_many_terms, 10, what="six renewals")
    keeper.stop()
    wait_until(lambda: store.begin("c", "other", 30), 5, what="the lease to lapse")
    assert store.renew("c", "mine", 0.15) is False
    assert warnings() == []


def test_a_renewal_failing_once_is_survived_with_one_warning(warnings):
    store = FlakyStore()
    store.failures = 1
    assert store.begin("c", "mine", 1.5) is not None
    keeper = LeaseKeeper(store, "c", "mine", 1.5)
    wait_until(lambda: store.renewed >= 1, 10, what="a renewal after the failure")
    assert store.begin("c", "other", 30) is None
    keeper.stop()
    assert warnings() == [
        "conversation c: its claim could not be renewed: "
        "the conversation memory is not reachable: test"
    ]


def test_a_store_out_of_reach_past_the_lease_warns_once_then_says_the_lease_lapsed(warnings):
    store = FlakyStore()
    store.failures = 4  # each a third of a lease apart: the lease lapses meanwhile
    assert store.begin("c", "mine", 0.3) is not None
    keeper = LeaseKeeper(store, "c", "mine", 0.3)
    wait_until(lambda: len(warnings()) == 2, 10, what="the lapse to be logged")
    assert store.attempts == 5 and store.renewed == 0
    assert "could not be renewed" in warnings()[0]
    assert "its claim lapsed before its reply ended" in warnings()[1]
    assert "MEMORY_LEASE_S=0.3 s" in warnings()[1]
    assert store.begin("c", "other", 30) is not None
    keeper.stop()
