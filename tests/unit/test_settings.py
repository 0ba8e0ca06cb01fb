from pathlib import Path

import pytest

from piagent.settings import ConfigError, Settings, load_settings


def test_defaults_match_the_spec():
    settings = load_settings(environ={}, env_file=None)
    assert settings.provider == "ollama"
    assert settings.ollama_host == "http://127.0.0.1:11434"
    assert settings.ollama_model_general == "qwen2.5:3b-instruct"
    assert (settings.ctx_tokens, settings.max_tokens, settings.temperature) == (2048, 200, 0.7)
    assert settings.enable_memory is True
    assert settings.memory_max_turns == 8
    assert settings.memory_ttl_min == 60
    assert settings.memory_max_conversations == 500
    assert settings.memory_backend == "memory"


def test_memory_backend_variables_are_read(tmp_path: Path):
    settings = load_settings(
        environ={
            "MEMORY_BACKEND": "sqlite",
            "MEMORY_PATH": str(tmp_path / "m.sqlite3"),
            "REDIS_URL": "redis://127.0.0.2:6380/2",
        },
        env_file=None,
    )
    assert settings.memory_backend == "sqlite"
    assert settings.memory_path == tmp_path / "m.sqlite3"
    assert settings.redis_url == "redis://127.0.0.2:6380/2"


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "Yes", "y", "Y"])
def test_enable_memory_true_words(word):
    assert load_settings(environ={"ENABLE_MEMORY": word}, env_file=None).enable_memory is True


@pytest.mark.parametrize("word", ["0", "false", "No", "n"])
def test_enable_memory_false_words(word):
    assert load_settings(environ={"ENABLE_MEMORY": word}, env_file=None).enable_memory is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEMORY_MAX_TURNS", "lots"),
        ("PROVIDER", "openai-ish"),
        ("TEMPERATURE", "hot"),
        ("CTX_TOKENS", "-1"),
        ("ENABLE_MEMORY", "perhaps"),
        ("OLLAMA_HOST", "localhost:11434"),
        ("MEMORY_BACKEND", "postgres"),
        ("REDIS_URL", "localhost:6379"),
        ("MEMORY_LEASE_S", "0"),
        ("MEMORY_LEASE_S", "soon"),
    ],
)
def test_unreadable_value_names_variable_and_value_in_one_line(name, value):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={name: value}, env_file=None)
    message = str(caught.value)
    assert name in message and repr(value) in message
    assert "\n" not in message


def test_env_file_is_read_and_environment_wins(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("MAX_TOKENS=50\nCTX_TOKENS=4096\n")
    settings = load_settings(environ={"MAX_TOKENS": "75"}, env_file=env_file)
    assert settings.max_tokens == 75
    assert settings.ctx_tokens == 4096


def test_missing_env_file_is_fine(tmp_path: Path):
    assert load_settings(environ={}, env_file=tmp_path / "absent").max_tokens == 200


def test_settings_are_frozen():
    with pytest.raises(ValueError):
        Settings().max_tokens = 5  # type: ignore[misc]


def test_openai_provider_reads_its_three_variables():
    settings = load_settings(
        environ={
            "PROVIDER": "openai",
            "OPENAI_BASE_URL": "http://127.0.0.1:8080/v1",
            "OPENAI_API_KEY": "sk-local",
            "OPENAI_MODEL": "SmolLM2-135M-Instruct",
        },
        env_file=None,
    )
    assert settings.provider == "openai"
    assert settings.default_model == "SmolLM2-135M-Instruct"
    assert settings.openai_api_key.get_secret_value() == "sk-local"
    assert "sk-local" not in repr(settings)


def test_ollama_provider_uses_the_ollama_model():
    assert load_settings(environ={}, env_file=None).default_model == "qwen2.5:3b-instruct"


def test_openai_provider_without_a_model_stops_the_start_naming_the_variable():
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"PROVIDER": "openai"}, env_file=None)
    assert str(caught.value) == "OPENAI_MODEL is not set: it is required when PROVIDER=openai"


def test_openai_base_url_must_be_http():
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        load_settings(environ={"OPENAI_BASE_URL": "127.0.0.1:8080"}, env_file=None)
