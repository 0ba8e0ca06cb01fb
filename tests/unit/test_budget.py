from piagent.budget import estimate_tokens, trim_to_budget
from piagent.memory import Message


def turns(count: int, size: int = 300) -> list[Message]:
    roles = ["user", "assistant"]
    return [Message(roles[i % 2], f"{i}:" + "x" * size) for i in range(count)]


def test_estimate_overestimates_english_and_counts_every_message():
    text = "The quick brown fox jumps over the lazy dog. " * 10  # ~100 real tokens
    assert estimate_tokens(Message("user", text)) > 100
    assert estimate_tokens(Message("user", "")) > 0


def test_conversation_within_budget_is_untouched():
    messages = [Message("system", "be brief"), *turns(5)]
    assert trim_to_budget(messages, 10_000) == messages


def test_oldest_turns_go_first_and_system_and_newest_stay():
    system = Message("system", "be brief")
    history = turns(9)  # user, assistant, ..., user
    kept = trim_to_budget([system, *history], 400)
    assert kept[0] == system and kept[-1] == history[-1]
    assert kept[1:] == history[-len(kept) + 1 :]
    assert len(kept) < 10
    assert sum(estimate_tokens(m) for m in kept) <= 400


def test_kept_history_never_starts_with_an_orphaned_reply():
    history = turns(9)
    for budget in range(50, 1200, 37):
        kept = trim_to_budget(history, budget)
        assert kept[0].role == "user", budget


def test_newest_message_stays_even_when_alone_over_budget():
    system, big = Message("system", "s"), Message("user", "x" * 10_000)
    assert trim_to_budget([system, *turns(4), big], 100) == [system, big]
