"""Generation speed: the model server's own measure first, else timed as the text arrived."""

from __future__ import annotations

import pytest

from piagent.ops.metrics import Arrival, tokens_per_second
from piagent.providers.base import ChatStats


def test_ollamas_eval_duration_is_preferred_to_the_arrival_times():
    stats = ChatStats(completion_tokens=20, eval_duration_ns=4_000_000_000)
    assert tokens_per_second(stats, Arrival(first_fragments=1, span_s=1.0)) == 5.0


def test_without_a_duration_the_tokens_after_the_first_read_are_timed_to_the_last():
    stats = ChatStats(completion_tokens=11)
    assert tokens_per_second(stats, Arrival(first_fragments=1, span_s=2.0)) == 5.0
    # Three tokens came with the first read: made before the span began.
    assert tokens_per_second(stats, Arrival(first_fragments=3, span_s=2.0)) == 4.0


@pytest.mark.parametrize(
    ("stats", "arrival"),
    [
        (None, Arrival(1, 1.0)),
        (ChatStats(completion_tokens=None), Arrival(1, 1.0)),  # no usage reported
        (ChatStats(completion_tokens=5), None),  # no text arrived
        (ChatStats(completion_tokens=5), Arrival(5, 0.0)),  # the reply in one piece
        (ChatStats(completion_tokens=5), Arrival(5, 0.3)),  # nothing after the first read
    ],
)
def test_no_speed_rather_than_a_wrong_one(stats, arrival):
    assert tokens_per_second(stats, arrival) is None
