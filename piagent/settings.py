"""Settings: read once from the environment (with `.env` beneath it), validated, frozen."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self, get_args

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from .urls import without_credentials

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_KEEP_ALIVE = r"^(-?\d+(\.\d+)?|-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$"


class ConfigError(ValueError):
    """A configuration value that cannot be read; the message is one line."""


class Settings(BaseSettings):
    """Every knob of the server; field `x_y` is read from variable `X_Y`."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        # An infinite or NaN timeout passes `gt=0` and then breaks the first request.
        allow_inf_nan=False,
        # `.env` also holds gunicorn's variables (BIND, ...); they are not ours to refuse.
        dotenv_filtering="only_existing",
    )

    provider: Literal["ollama", "openai"] = "ollama"
    ollama_host: str = Field("http://127.0.0.1:11434", pattern=r"^https?://\S+$")
    ollama_model_general: str = Field("qwen2.5:3b-instruct", min_length=1)
    # Any OpenAI-compatible server (llama.cpp, LM Studio, vLLM, a hosted API); the base
    # URL is the one its clients are given, usually ending in /v1.
    openai_base_url: str = Field("http://127.0.0.1:8080/v1", pattern=r"^https?://\S+$")
    openai_api_key: SecretStr | None = None
    openai_model: str = Field("", validate_default=True)
    ctx_tokens: int = Field(2048, gt=0)
    max_tokens: int = Field(200, gt=0)
    temperature: float = Field(0.7, ge=0, le=2)

    enable_memory: bool = True
    memory_max_turns: int = Field(8, ge=0)
    # How a conversation too long to send whole is cut: by half at once (block), so that
    # the model server can reuse its cache of the previous prompt for the next turns, or
    # by the oldest exchange every turn (sliding), which has the whole history read again.
    memory_trim: Literal["block", "sliding"] = "block"
    memory_ttl_min: float = Field(60, ge=0)
    memory_max_conversations: int = Field(500, ge=1)
    # Where conversations live: this process's RAM, a SQLite file shared by the workers
    # of one machine, or a Redis server shared by several machines.
    memory_backend: Literal["memory", "sqlite", "redis"] = "memory"
    # Under systemd, load_settings() puts the file in the unit's state directory instead,
    # one of the few places a hardened unit may write. A relative path is the project's.
    memory_path: Path = PROJECT_ROOT / "var" / "memory.sqlite3"
    redis_url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^(rediss?|unix)://\S+$")
    # A request's claim on its conversation: renewed while the request runs, it lapses
    # this long after the process holding it died.
    memory_lease_s: float = Field(10, gt=0)

    # Upstream timeouts: connecting, a whole non-stream reply, a stream's first token
    # (a cold model load plus prompt evaluation on a Pi), silence within a stream, and
    # a whole stream.
    connect_timeout_s: float = Field(10, gt=0)
    reply_timeout_s: float = Field(60, gt=0)
    first_token_timeout_s: float = Field(120, gt=0)
    stream_idle_timeout_s: float = Field(120, gt=0)
    stream_total_timeout_s: float = Field(600, gt=0)
    # SSE comments this often while the first token is awaited, so proxies keep the line.
    sse_heartbeat_s: float = Field(15, gt=0)

    # 4000 characters outside the BMP, each escaped as \\uXXXX\\uXXXX (12 bytes), plus
    # the other fields, fit in 64 KiB with room to spare.
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    prompts_dir: Path = PROJECT_ROOT / "prompts"

    # Running on a Pi: admission control per worker, readiness, model residency, logs,
    # API keys.
    max_concurrent_generations: int = Field(1, ge=1)
    queue_max: int = Field(4, ge=0)
    # With API keys, how many of the waiting requests one key may hold (see key_queue_max).
    queue_max_per_key: int | None = Field(None, ge=1)
    queue_timeout_s: float = Field(30, gt=0)
    ready_timeout_s: float = Field(2, gt=0)
    ready_cache_s: float = Field(5, ge=0)
    # Go duration ("5m", "1h30m") or seconds; a negative value keeps the model loaded.
    ollama_keep_alive: str = Field("5m", pattern=_KEEP_ALIVE)
    warmup: bool = False
    log_format: Literal["text", "json"] = "text"
    log_content: bool = False
    api_keys: SecretStr = SecretStr("")  # comma-separated; a secret, so never printed
    api_keys_file: Path | None = None
    web_ui: bool = True  # the chat page at /
    docs: bool = True  # the API document at /openapi.json and its page at /docs

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `Settings(...)` is its arguments and the defaults, nothing else: a test never
        # sees the developer's environment. load_settings() hands the variables in.
        return (init_settings,)

    @field_validator("api_keys_file", "queue_max_per_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("memory_path")
    @classmethod
    def _a_file_from_the_project(cls, value: Path) -> Path:
        if str(value) == ":memory:":
            raise PydanticCustomError(
                "private_database",
                "it would give each worker a database of its own, lost at every restart; "
                "give it a file, or set MEMORY_BACKEND=memory",
            )
        # The same file whatever folder piagent is started from.
        return value if value.is_absolute() else PROJECT_ROOT / value

    @field_validator("openai_model")
    @classmethod
    def _openai_needs_a_model(cls, value: str, info: ValidationInfo) -> str:
        if not value and info.data.get("provider") == "openai":
            raise PydanticCustomError("missing", "it is required when PROVIDER=openai")
        return value

    @model_validator(mode="after")
    def _reply_fits_the_context(self) -> Self:
        # The context holds the prompt as well as the reply. Whether each agent's own
        # prompt still fits is checked where the agents are loaded.
        if self.max_tokens >= self.ctx_tokens:
            raise PydanticCustomError(
                "reply_too_long",
                "MAX_TOKENS={max_tokens} must be below CTX_TOKENS={ctx_tokens}, which holds "
                "the prompt as well as the reply: lower MAX_TOKENS or raise CTX_TOKENS",
                {"max_tokens": self.max_tokens, "ctx_tokens": self.ctx_tokens},
            )
        return self

    @property
    def key_queue_max(self) -> int:
        """QUEUE_MAX_PER_KEY, by default half of QUEUE_MAX (at least 1)."""
        if self.queue_max_per_key is not None:
            return self.queue_max_per_key
        return max(1, self.queue_max // 2)

    @property
    def default_model(self) -> str:
        """The model an agent uses unless it names its own."""
        return self.openai_model if self.provider == "openai" else self.ollama_model_general


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # read by the parent's __init__, through _load_env_vars
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")
) -> Settings:
    """Build Settings from `env_file` (when present) overlaid by `environ` (os.environ)."""
    environ = os.environ if environ is None else environ
    sources: list[PydanticBaseSettingsSource] = [_MappingSource(Settings, environ)]
    if env_file is not None:  # the first source that has a variable wins
        sources.append(DotEnvSettingsSource(Settings, env_file=env_file))
    sources.append(_MappingSource(Settings, _service_defaults(environ)))
    try:
        return Settings(_build_sources=(tuple(sources), {}))
    except ValidationError as exc:
        raise _config_error(exc) from None


def _service_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """Defaults that depend on how the service manager runs piagent."""
    # systemd names the unit's StateDirectory= in STATE_DIRECTORY (several are joined by
    # ":"): a place the service may write even under ProtectSystem=strict.
    state_directory = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if not state_directory:
        return {}
    return {"MEMORY_PATH": str(Path(state_directory) / "memory.sqlite3")}


def _config_error(exc: ValidationError) -> ConfigError:
    """The first problem, in one line naming the variable and the value it was given."""
    error = exc.errors(include_url=False)[0]
    if not error["loc"]:  # a check across variables, whose message names them
        return ConfigError(error["msg"])
    name = str(error["loc"][0]).upper()
    if error["type"] == "missing":
        return ConfigError(f"{name} is not set: {error['msg']}")
    # repr() keeps even a value with a newline on one line.
    value = "<hidden>" if _is_secret(name) else repr(_shown(error["input"]))
    return ConfigError(f"{name}={value} is invalid: {error['msg']}")


def _shown(value: object) -> object:
    """A value as the error may show it: a URL without its user name and password."""
    return without_credentials(value) if isinstance(value, str) and "://" in value else value


def _is_secret(name: str) -> bool:
    field = Settings.model_fields[name.lower()]
    return SecretStr in (get_args(field.annotation) or (field.annotation,))
