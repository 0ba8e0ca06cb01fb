"""A conversation's prompts only grow at their end, so the model server's prompt cache holds.

Twenty turns through the app and the fake Ollama, on every backend and with both trims,
read back from the fake's log of what piagent sent: each prompt must be the previous
one plus the reply and the new question, except on the turns where history was cut.
"""

from __future__ import annotations

import uuid
from itertools import pairwise

import pytest

from tests.fake_ollama import count_prompt_tokens

TURNS = 20


def question(turn: int) -> str:
    return f"Question {turn}: what should I check next on the Pi? ".ljust(90, ".")


def answer(turn: int) -> str:
    return f"Answer {turn}: look at the logs, then the disk. ".ljust(120, "-")


def converse(client, fake, *, density=lambda turn: 4.0) -> list[dict]:
    """Twenty turns of one conversation; the body of each /api/chat request piagent sent.

    `density` gives, per turn, the bytes a token of the fake's tokenizer.
    """
    conversation_id = uuid.uuid4().hex
    for turn in range(TURNS):
        fake.behave(tokens=[answer(turn)], bytes_per_token=density(turn))
        body = {"message": question(turn), "conversation_id": conversation_id}
        assert client.post("/chat", json=body).status_code == 200
    sent = [r.json for r in fake.requests if r.path == "/api/chat"]
    assert len(sent) == TURNS
    return sent


def cuts(sent: list[dict]) -> list[int]:
    """The turns whose prompt is not the previous one plus the reply and the new question.

    Checks on every turn that nothing but the messages changed (model, options, stream,
    keep_alive), and on a cut that it only dropped the oldest whole exchanges.
    """
    cut_turns = []
    for turn, (before, after) in enumerate(pairwise(sent), start=1):
        assert {k: v for k, v in after.items() if k != "messages"} == {
            k: v for k, v in before.items() if k != "messages"
        }
        previous, prompt = before["messages"], after["messages"]
        added = [
            {"role": "assistant", "content": answer(turn - 1)},
            {"role": "user", "content": question(turn)},
        ]
        if prompt == previous + added:
            continue
        cut_turns.append(turn)
        history, grown = prompt[1:], previous[1:] + added
        assert prompt[0] == previous[0]  # the same system prompt
        assert history == grown[len(grown) - len(history) :]  # the newest, in order
        assert history[0]["role"] == "user"  # whole exchanges
    return cut_turns


@pytest.mark.parametrize(
    ("trim", "expected"),
    [
        # Over eight messages, half go at once: the next two turns only add to the prompt.
        ("block", [5, 8, 11, 14, 17]),
        # Over eight messages, the oldest exchange goes every turn: every prompt differs
        # from the previous one right after the system prompt.
        ("sliding", list(range(5, TURNS))),
    ],
)
def test_each_prompt_extends_the_previous_one_except_where_history_is_cut(
    build_client, fake, trim, expected
):
    client = build_client(memory_trim=trim)  # MEMORY_MAX_TURNS 8, the default
    assert cuts(converse(client, fake)) == expected


@pytest.mark.parametrize("trim", ["block", "sliding"])
def test_a_history_cut_by_the_context_budget_stays_cut_under_block(build_client, fake, trim):
    # The context, not MEMORY_MAX_TURNS, bounds this conversation; and the fake's
    # tokenizer grows denser turn after turn, so the learnt token ratio keeps rising,
    # and with it the estimate of the same history.
    ctx_tokens, max_tokens = 1024, 100
    client = build_client(
        memory_trim=trim, memory_max_turns=100, ctx_tokens=ctx_tokens, max_tokens=max_tokens
    )

    def density(turn: int) -> float:
        return 4.0 - 2.5 * turn / (TURNS - 1)

    sent = converse(client, fake, density=density)
    cut_turns = cuts(sent)
    for turn, request in enumerate(sent):  # every prompt fits, as the model counts it
        contents = [m["content"] for m in request["messages"]]
        assert count_prompt_tokens(contents, density(turn)) <= ctx_tokens - max_tokens
    if trim == "block":
        assert 1 <= len(cut_turns) <= TURNS // 4, cut_turns
        # Each cut leaves room for at least two turns that only add to the prompt.
        assert all(b - a >= 3 for a, b in pairwise(cut_turns)), cut_turns
    else:
        assert len(cut_turns) >= 10, cut_turns  # once full, nearly every turn cuts again
