import pytest

from piagent.chat.budget import (
    RATIO_CEILING,
    MessageTooLong,
    estimate_tokens,
    fit_prompt,
    learned_ratio,
    trim_to_budget,
)
from piagent.memory.base import Message

SYSTEM = Message("system", "s" * 30)  # 4 + 10 tokens
NEW = Message("user", "n" * 30)  # 4 + 10 tokens


def history(exchanges: int, size: int = 30) -> list[Message]:
    messages = []
    for i in range(exchanges):
        letter = chr(ord("a") + i)
        messages += [Message("user", letter * size), Message("assistant", "r" * size)]
    return messages


def test_estimate_counts_three_bytes_a_token_plus_the_role_markers():
    assert estimate_tokens(Message("user", "")) == 4
    assert estimate_tokens(Message("user", "abc")) == 5
    assert estimate_tokens(Message("user", "abcd")) == 6


def test_estimate_counts_every_digit_as_a_token():
    assert estimate_tokens(Message("user", "1234567890")) == 4 + 10


def test_estimate_of_multibyte_text_counts_bytes_not_characters():
    assert estimate_tokens(Message("user", "中文字")) == 4 + 3  # nine bytes
    assert estimate_tokens(Message("user", "😀" * 3)) == 4 + 4  # twelve bytes


def test_everything_is_sent_when_it_fits():
    fitted = fit_prompt(SYSTEM, history(3), NEW, ctx_tokens=2048, max_tokens=200, token_ratio=None)
    assert fitted.messages == [SYSTEM, *history(3), NEW]
    assert fitted.estimate == 8 + 14 + 14 + 6 * 14


def test_oldest_whole_exchanges_go_first_and_the_newest_stay():
    # 8 + 14 + 14 fixed, 28 per exchange: room for two exchanges in 100 tokens.
    fitted = fit_prompt(SYSTEM, history(5), NEW, ctx_tokens=150, max_tokens=50, token_ratio=None)
    assert fitted.messages == [SYSTEM, *history(5)[-4:], NEW]
    assert fitted.estimate == 36 + 2 * 28


def test_sliding_and_block_send_everything_when_it_fits():
    for trim in ("sliding", "block"):
        fitted = fit_prompt(
            SYSTEM, history(3), NEW, ctx_tokens=2048, max_tokens=200, token_ratio=None, trim=trim
        )
        assert fitted.messages == [SYSTEM, *history(3), NEW]
        assert fitted.left_out == 0


def test_sliding_cuts_only_what_does_not_fit_and_says_how_much():
    fitted = fit_prompt(SYSTEM, history(5), NEW, ctx_tokens=150, max_tokens=50, token_ratio=None)
    assert len(fitted.messages) == 2 + 4
    assert fitted.left_out == 6


def test_block_cuts_down_to_half_the_room_beside_the_system_prompt_and_message():
    # 100 tokens of room, 36 fixed: the history gets 32 of the 64 left, one exchange of 28.
    fitted = fit_prompt(
        SYSTEM, history(5), NEW, ctx_tokens=150, max_tokens=50, token_ratio=None, trim="block"
    )
    assert fitted.messages == [SYSTEM, *history(5)[-2:], NEW]
    assert fitted.left_out == 8
    assert fitted.estimate == 36 + 28


def test_block_cut_leaves_room_for_the_next_turns_to_be_added_whole():
    def fit(messages):
        return fit_prompt(
            SYSTEM, messages, NEW, ctx_tokens=400, max_tokens=50, token_ratio=None, trim="block"
        )

    cut = fit(history(20))
    kept = cut.messages[1:-1]
    assert cut.left_out > 0 and len(kept) == 10
    for turns in range(1, 6):  # each turn adds an exchange
        assert fit(kept + history(turns)).left_out == 0
    assert fit(kept + history(7)).left_out > 0


def test_reply_room_is_reserved():
    room_for_two = fit_prompt(
        SYSTEM, history(5), NEW, ctx_tokens=92, max_tokens=0, token_ratio=None
    )
    room_for_one = fit_prompt(
        SYSTEM, history(5), NEW, ctx_tokens=92, max_tokens=1, token_ratio=None
    )
    assert len(room_for_two.messages) == 2 + 4
    assert len(room_for_one.messages) == 2 + 2


def test_a_smaller_ratio_keeps_more_and_a_larger_one_less():
    def fit(ratio):
        return fit_prompt(
            SYSTEM, history(5), NEW, ctx_tokens=150, max_tokens=50, token_ratio=ratio
        ).messages

    assert len(fit(None)) == 2 + 4
    assert len(fit(0.5)) == 2 + 10
    assert len(fit(2.0)) == 2


def test_history_is_never_split_inside_an_exchange():
    lopsided = [Message("user", "q"), Message("assistant", "r" * 300)]
    fitted = fit_prompt(SYSTEM, lopsided, NEW, ctx_tokens=120, max_tokens=50, token_ratio=None)
    assert fitted.messages == [SYSTEM, NEW]


def test_a_message_that_cannot_fit_alone_is_refused_naming_the_field():
    with pytest.raises(MessageTooLong) as raised:
        fit_prompt(
            SYSTEM, [], Message("user", "x" * 600), ctx_tokens=250, max_tokens=50, token_ratio=None
        )
    error = raised.value
    assert error.room == 200 and error.needed > error.room
    assert "CTX_TOKENS 250" in error.detail and "MAX_TOKENS 50" in error.detail


def test_learning_keeps_the_highest_ratio_with_a_margin():
    first = learned_ratio(None, 100, 70)
    assert first == pytest.approx(0.77)
    assert learned_ratio(first, 100, 60) == first  # a lower count never lowers it
    assert learned_ratio(first, 100, 90) == pytest.approx(0.99)


@pytest.mark.parametrize("count", [None, 0, 10])
def test_missing_or_implausibly_low_counts_teach_nothing(count):
    assert learned_ratio(None, 100, count) is None
    assert learned_ratio(0.8, 100, count) == 0.8


def test_learning_is_capped_at_one_token_a_byte():
    assert learned_ratio(None, 100, 10_000) == RATIO_CEILING


# --- /v1: trimming the messages a client sent, one by one ---------------------------------


def turns(count: int, size: int = 300) -> list[Message]:
    roles = ["user", "assistant"]
    return [Message(roles[i % 2], f"{i}:" + "x" * size) for i in range(count)]


def test_estimate_overestimates_english_and_counts_every_message():
    text = "The quick brown fox jumps over the lazy dog. " * 10  # ~100 real tokens
    assert estimate_tokens(Message("user", text)) > 100
    assert estimate_tokens(Message("user", "")) > 0


def trim(messages: list[Message], room: int) -> list[Message]:
    """trim_to_budget with `room` tokens for the prompt (a context of room + 100)."""
    return trim_to_budget(messages, ctx_tokens=room + 100, max_tokens=100)


def test_conversation_within_budget_is_untouched():
    messages = [Message("system", "be brief"), *turns(5)]
    assert trim(messages, 10_000) == messages


def test_oldest_turns_go_first_and_system_and_newest_stay():
    system = Message("system", "be brief")
    history = turns(9)  # user, assistant, ..., user
    kept = trim([system, *history], 400)
    assert kept[0] == system and kept[-1] == history[-1]
    assert kept[1:] == history[-len(kept) + 1 :]
    assert len(kept) < 10
    assert sum(estimate_tokens(m) for m in kept) <= 400


def test_kept_history_never_starts_with_an_orphaned_reply():
    history = turns(9)
    for room in range(150, 1200, 37):
        kept = trim(history, room)
        assert kept[0].role == "user", room


def test_system_and_newest_message_over_the_room_alone_are_refused():
    system, big = Message("system", "s"), Message("user", "x" * 1_000)
    with pytest.raises(MessageTooLong) as raised:
        trim_to_budget([system, *turns(4), big], ctx_tokens=400, max_tokens=100)
    error = raised.value
    assert error.room == 300 and error.needed > 300
    assert "CTX_TOKENS 400" in error.detail and "MAX_TOKENS 100" in error.detail
    # With a shorter reply there is room for the message, if for nothing older.
    assert trim_to_budget([system, *turns(4), big], ctx_tokens=400, max_tokens=10) == [
        system,
        big,
    ]
