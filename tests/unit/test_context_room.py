"""At start, every agent's prompt, a shortest message and its reply must fit CTX_TOKENS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from piagent.agents import load_agents
from piagent.app import create_app
from piagent.chat.budget import fit_prompt
from piagent.errors import MessageTooLong
from piagent.messages import Message
from piagent.providers.base import GenerationOptions
from piagent.settings import ConfigError, Settings

LONG_PROMPT = "Answer with care and cite the manual. " * 60  # about 800 tokens


def load(folder: Path, ctx_tokens: int, max_tokens: int = 200):
    options = GenerationOptions(temperature=0.7, ctx_tokens=ctx_tokens, max_tokens=max_tokens)
    return load_agents(folder, model="m", options=options)


def refusal(folder: Path, ctx_tokens: int, max_tokens: int = 200) -> str:
    with pytest.raises(ConfigError) as caught:
        load(folder, ctx_tokens, max_tokens)
    message = str(caught.value)
    assert "\n" not in message
    return message


def told(message: str, pattern: str) -> int:
    return int(re.search(pattern, message).group(1))


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    (tmp_path / "general.md").write_text("Be helpful.\n")
    (tmp_path / "manual.md").write_text(LONG_PROMPT)
    return tmp_path


def test_the_longest_prompt_is_named_with_the_numbers_and_the_fixes(prompts):
    message = refusal(prompts, ctx_tokens=900)
    assert message.startswith("agent 'manual' does not fit CTX_TOKENS=900: ")
    assert "its reply up to 200 (MAX_TOKENS)" in message
    assert "raise CTX_TOKENS to at least" in message and "lower MAX_TOKENS to at most" in message
    assert "shorten its prompt" in message


def test_the_context_it_asks_for_is_exactly_enough(prompts):
    enough = told(refusal(prompts, ctx_tokens=900), r"raise CTX_TOKENS to at least (\d+)")
    assert set(load(prompts, ctx_tokens=enough)) == {"general", "manual"}
    refusal(prompts, ctx_tokens=enough - 1)


def test_the_reply_limit_it_asks_for_is_exactly_enough(prompts):
    most = told(refusal(prompts, ctx_tokens=900), r"lower MAX_TOKENS to at most (\d+)")
    assert set(load(prompts, ctx_tokens=900, max_tokens=most)) == {"general", "manual"}
    refusal(prompts, ctx_tokens=900, max_tokens=most + 1)


def test_an_agent_that_loads_can_answer_the_shortest_message_at_run_time(prompts):
    enough = told(refusal(prompts, ctx_tokens=900), r"raise CTX_TOKENS to at least (\d+)")
    system = Message("system", load(prompts, ctx_tokens=enough)["manual"].system_prompt)
    fit_prompt(
        system, [], Message("user", "?"), ctx_tokens=enough, max_tokens=200, token_ratio=None
    )
    with pytest.raises(MessageTooLong):
        fit_prompt(
            system,
            [],
            Message("user", "?"),
            ctx_tokens=enough - 1,
            max_tokens=200,
            token_ratio=None,
        )


def test_an_agents_own_max_tokens_is_checked_and_named(prompts):
    (prompts / "general.toml").write_text("max_tokens = 2040\n")
    message = refusal(prompts, ctx_tokens=2048, max_tokens=200)
    assert message.startswith("agent 'general' does not fit CTX_TOKENS=2048: ")
    assert "its reply up to 2040 (max_tokens in general.toml)" in message
    assert "lower max_tokens in general.toml to at most" in message


def test_a_prompt_longer_than_the_whole_context_is_not_told_to_lower_the_reply(prompts):
    message = refusal(prompts, ctx_tokens=300, max_tokens=10)
    assert "raise CTX_TOKENS to at least" in message
    assert "lower" not in message


def test_shipped_agents_fit_the_default_settings():
    settings = Settings()
    options = GenerationOptions(settings.temperature, settings.ctx_tokens, settings.max_tokens)
    assert load_agents(settings.prompts_dir, model="m", options=options)


def test_create_app_stops_with_one_line_and_exit_code_4(prompts, capsys):
    with pytest.raises(SystemExit) as stopped:
        create_app(Settings(prompts_dir=prompts, ctx_tokens=900))
    assert stopped.value.code == 4
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("piagent: cannot start: agent 'manual' does not fit CTX_TOKENS=900")
