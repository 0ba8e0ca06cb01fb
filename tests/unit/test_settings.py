import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from piagent.settings import ConfigError, Settings, _config_error, load_settings

REPO = Path(__file__).resolve().parents[2]


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
    assert settings.memory_trim == "block"


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


def test_under_systemd_the_memory_file_defaults_to_the_units_state_directory():
    environ = {"STATE_DIRECTORY": "/var/lib/piagent:/var/lib/other"}
    settings = load_settings(environ=environ, env_file=None)
    assert settings.memory_path == Path("/var/lib/piagent/memory.sqlite3")
    # Without systemd, the project's own var/ folder.
    assert load_settings(environ={}, env_file=None).memory_path == REPO / "var/memory.sqlite3"


def test_a_memory_path_given_anywhere_wins_over_the_state_directory(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("MEMORY_PATH=/srv/from-env-file.sqlite3\n")
    environ = {"STATE_DIRECTORY": "/var/lib/piagent"}
    from_file = load_settings(environ=environ, env_file=env_file)
    assert from_file.memory_path == Path("/srv/from-env-file.sqlite3")
    given = load_settings(environ={**environ, "MEMORY_PATH": "/srv/m.sqlite3"}, env_file=env_file)
    assert given.memory_path == Path("/srv/m.sqlite3")


def test_a_relative_memory_path_is_taken_from_the_project_folder(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # wherever piagent is started from
    settings = load_settings(environ={"MEMORY_PATH": "data/m.sqlite3"}, env_file=None)
    assert settings.memory_path == REPO / "data" / "m.sqlite3"
    assert Settings(memory_path=Path("m.sqlite3")).memory_path == REPO / "m.sqlite3"


def test_an_in_memory_sqlite_database_is_refused_in_one_line():
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={"MEMORY_PATH": ":memory:"}, env_file=None)
    message = str(refused.value)
    assert message.startswith("MEMORY_PATH=':memory:' is invalid: it would give each worker")
    assert "\n" not in message


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
        ("MEMORY_TRIM", "fifo"),
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


# What the float settings are, found from the class so that a new one is covered too.
FLOAT_VARIABLES = [
    name.upper() for name, field in Settings.model_fields.items() if field.annotation is float
]


def test_float_variables_are_found():
    assert {"TEMPERATURE", "REPLY_TIMEOUT_S", "MEMORY_TTL_MIN", "READY_CACHE_S"} <= set(
        FLOAT_VARIABLES
    )


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "nan", "NaN"])
@pytest.mark.parametrize("name", FLOAT_VARIABLES)
def test_float_settings_refuse_infinity_and_nan(name, value):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={name: value}, env_file=None)
    assert str(caught.value).startswith(f"{name}={value!r} is invalid: ")
    assert "finite" in str(caught.value)


def test_settings_built_directly_read_neither_the_environment_nor_dot_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / ".env").write_text("CTX_TOKENS=4096\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAX_TOKENS", "77")
    assert (Settings().ctx_tokens, Settings().max_tokens) == (2048, 200)
    assert Settings(max_tokens=50).max_tokens == 50


def test_without_arguments_the_process_environment_and_dot_env_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / ".env").write_text("CTX_TOKENS=4096\nMAX_TOKENS=50\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAX_TOKENS", "77")
    settings = load_settings()
    assert (settings.ctx_tokens, settings.max_tokens) == (4096, 77)


def test_variable_names_are_read_in_any_case_as_pydantic_settings_does(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("ctx_tokens=4096\n")
    settings = load_settings(environ={"Max_Tokens": "5"}, env_file=env_file)
    assert (settings.ctx_tokens, settings.max_tokens) == (4096, 5)


def test_env_file_may_hold_gunicorns_variables_too(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("BIND=127.0.0.1:8001\nWEB_CONCURRENCY=2\nMAX_TOKENS=60\n")
    assert load_settings(environ={}, env_file=env_file).max_tokens == 60


def test_a_bad_value_in_env_file_is_named_like_one_in_the_environment(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("QUEUE_MAX=several\n")
    with pytest.raises(ConfigError, match=r"^QUEUE_MAX='several' is invalid: "):
        load_settings(environ={}, env_file=env_file)


@pytest.mark.parametrize(
    "environ",
    [{"MAX_TOKENS": "2048"}, {"MAX_TOKENS": "4096"}, {"CTX_TOKENS": "200"}],
    ids=["equal", "above", "context-lowered"],
)
def test_max_tokens_must_be_below_ctx_tokens_saying_what_to_change(environ):
    values = {"MAX_TOKENS": "200", "CTX_TOKENS": "2048", **environ}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ, env_file=None)
    message = str(caught.value)
    assert message.startswith(
        f"MAX_TOKENS={values['MAX_TOKENS']} must be below CTX_TOKENS={values['CTX_TOKENS']}"
    )
    assert "lower MAX_TOKENS or raise CTX_TOKENS" in message
    assert "\n" not in message


def test_settings_built_directly_check_max_tokens_against_ctx_tokens_too():
    with pytest.raises(ValidationError, match="MAX_TOKENS=300 must be below CTX_TOKENS=300"):
        Settings(ctx_tokens=300, max_tokens=300)
    assert Settings(ctx_tokens=300, max_tokens=299).max_tokens == 299


@pytest.mark.parametrize("name", ["api_keys", "openai_api_key"])
def test_secrets_are_secret_strings_kept_out_of_repr(name):
    settings = Settings(**{name: "sk-0123456789abcdef"})
    assert isinstance(getattr(settings, name), SecretStr)
    assert "sk-0123456789abcdef" not in repr(settings)


@pytest.mark.parametrize("name", ["api_keys", "openai_api_key"])
def test_a_secret_that_cannot_be_read_is_not_echoed(name):
    # A string is always a valid secret, so only a value handed in from code fails here.
    with pytest.raises(ValidationError) as caught:
        Settings(**{name: 12345678901234567890})
    message = str(_config_error(caught.value))
    assert message.startswith(f"{name.upper()}=<hidden> is invalid: ")
    assert "12345678901234567890" not in message


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("OLLAMA_HOST", "ftp://pi:s3cret@10.0.0.2:11434", "'ftp://10.0.0.2:11434'"),
        ("OPENAI_BASE_URL", "api.example/v1 http://pi:s3cret@[::1]:8080", None),
        ("REDIS_URL", "http://:s3cret@10.0.0.3:6379/0?password=s3cret", "'http://10.0.0.3:6379/0'"),
    ],
)
def test_an_unreadable_url_is_echoed_without_its_credentials(name, value, shown):
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value}, env_file=None)
    message = str(caught.value)
    assert message.startswith(f"{name}=") and "s3cret" not in message
    assert shown is None or message.startswith(f"{name}={shown} is invalid: ")


def test_importing_settings_loads_no_web_stack():
    # gunicorn.conf.py imports piagent.settings in the master, before gevent patches the
    # workers: nothing of Flask, requests, gevent or prometheus may come with it.
    code = (
        "import json, sys; import piagent.settings; "
        "print(json.dumps(sorted(m.partition('.')[0] for m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "pydantic_settings" in loaded  # the import did happen
    heavy = {"flask", "werkzeug", "requests", "urllib3", "gevent", "prometheus_client", "redis"}
    assert loaded & heavy == set()
    assert [m for m in loaded if m == "piagent"] == ["piagent"]


@pytest.mark.parametrize(
    ("environ", "per_key"),
    [
        ({}, 2),
        ({"QUEUE_MAX": "9"}, 4),
        ({"QUEUE_MAX": "1"}, 1),
        ({"QUEUE_MAX": "0"}, 1),
        ({"QUEUE_MAX_PER_KEY": ""}, 2),
        ({"QUEUE_MAX_PER_KEY": "3"}, 3),
    ],
)
def test_one_keys_share_of_the_queue_is_half_of_it_unless_set(environ, per_key):
    assert load_settings(environ, env_file=None).key_queue_max == per_key


def test_a_key_must_be_allowed_at_least_one_waiting_request():
    with pytest.raises(ConfigError, match="QUEUE_MAX_PER_KEY='0'"):
        load_settings({"QUEUE_MAX_PER_KEY": "0"}, env_file=None)
