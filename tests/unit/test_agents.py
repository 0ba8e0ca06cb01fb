from pathlib import Path

import pytest

from piagent.agents import load_agents
from piagent.providers.base import GenerationOptions
from piagent.settings import ConfigError

DEFAULTS = GenerationOptions(temperature=0.7, ctx_tokens=2048, max_tokens=200)


def load(folder: Path):
    return load_agents(folder, model="default-model", options=DEFAULTS)


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    (tmp_path / "general.md").write_text("Be helpful.\n")
    return tmp_path


def test_agent_without_settings_uses_the_server_defaults(prompts):
    agent = load(prompts)["general"]
    assert (agent.system_prompt, agent.model, agent.options) == (
        "Be helpful.",
        "default-model",
        DEFAULTS,
    )
    assert agent.description is None


def test_settings_file_beside_the_prompt_overrides_each_default(prompts):
    (prompts / "poet.txt").write_text("Answer in verse.")
    (prompts / "poet.toml").write_text(
        'description = "Rhymes"\nmodel = "llama3.2:1b"\ntemperature = 1\nmax_tokens = 64\n'
    )
    agent = load(prompts)["poet"]
    assert agent.description == "Rhymes"
    assert agent.model == "llama3.2:1b"
    assert agent.options == GenerationOptions(temperature=1.0, ctx_tokens=2048, max_tokens=64)


def test_temperature_zero_is_kept_not_taken_for_unset(prompts):
    (prompts / "general.toml").write_text("temperature = 0.0\n")
    assert load(prompts)["general"].options.temperature == 0.0


def test_settings_file_is_not_an_agent_of_its_own(prompts):
    (prompts / "general.toml").write_text('description = "x"\n')
    assert list(load(prompts)) == ["general"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("temprature = 0.5\n", ["temprature"]),  # a typo is an error, not silently ignored
        ("temperature = 3\n", ["temperature", "2"]),
        ("max_tokens = 0\n", ["max_tokens"]),
        ('max_tokens = "lots"\n', ["max_tokens"]),
        ("model = \n", ["not valid TOML"]),
    ],
)
def test_bad_settings_stop_the_start_naming_the_file_and_key(prompts, text, words):
    (prompts / "general.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(prompts)
    message = str(caught.value)
    assert "general.toml" in message and "\n" not in message
    assert all(word in message for word in words)


def test_settings_without_a_prompt_are_an_error(prompts):
    (prompts / "ghost.toml").write_text('description = "x"\n')
    with pytest.raises(ConfigError, match="ghost.toml"):
        load(prompts)


def test_shipped_agents_all_load_with_descriptions():
    agents = load(Path(__file__).resolve().parents[2] / "prompts")
    assert {"general", "shell", "coder"} <= set(agents)
    assert all(agent.description for agent in agents.values())
