"""Optional API keys: Bearer tokens checked in constant time, one conversation space per key."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, g, request

from ..errors import Unauthorized
from ..settings import ConfigError, Settings

# Liveness and readiness stay open for load balancers and systemd checks; the chat page
# and its static files hold no secret, and ask for the key themselves; nor does the API
# document, whose page asks for the key to try the routes.
PUBLIC_ENDPOINTS = frozenset(
    {"health.health", "ready.ready", "web.page", "web.asset"}
    | {"docs.openapi", "docs.page", "docs.asset"}
)
_EXTENSION = "piagent.api_keys"
MIN_KEY_LENGTH = 16
_NEEDS_KEY = "this server needs an API key: send the header Authorization: Bearer <key>"


@dataclass(frozen=True)
class _Key:
    key_id: str  # a short hash: safe to log, and the key's conversation namespace
    digest: bytes


class ApiKeys:
    """The accepted keys, kept only as SHA-256 digests."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = tuple(_Key(_key_id(key.encode()), _digest(key.encode())) for key in keys)

    def identify(self, authorization: str | None) -> str:
        """The id of the key in an Authorization header; raise Unauthorized otherwise."""
        if not authorization:
            raise Unauthorized(_NEEDS_KEY)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                f"the Authorization header is not a Bearer key; {_NEEDS_KEY}",
                challenge='Bearer error="invalid_request"',
            )
        # Digests have one length, so comparing them reveals nothing about a key's length;
        # every key is compared, so the time does not tell which one came close.
        presented = _digest(_header_bytes(token.strip()))
        match = None
        for key in self._keys:
            if hmac.compare_digest(presented, key.digest):
                match = key.key_id
        if match is None:
            raise Unauthorized("the API key is not valid", challenge='Bearer error="invalid_token"')
        return match


def load_api_keys(settings: Settings) -> ApiKeys | None:
    """The keys from API_KEYS and API_KEYS_FILE, or None when neither is set."""
    keys = [key.strip() for key in settings.api_keys.get_secret_value().split(",")]
    keys = [key for key in keys if key]
    path = settings.api_keys_file
    if path is not None:
        from_file = _read_key_file(path)
        if not from_file:
            raise ConfigError(f"API_KEYS_FILE={str(path)!r} holds no key")
        keys += from_file
    if not keys:
        return None
    for number, key in enumerate(keys, start=1):
        # Never echo the key itself: start-up errors end up in the journal.
        if not all("\x21" <= char <= "\x7e" for char in key):
            raise ConfigError(
                f"API key #{number} has a space or a character outside printable ASCII"
            )
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"API key #{number} is shorter than {MIN_KEY_LENGTH} characters; "
                "make one with: openssl rand -hex 32"
            )
    return ApiKeys(keys)


def install_api_keys(app: Flask, keys: ApiKeys) -> None:
    """Require a key on every route but the public ones."""
    app.extensions[_EXTENSION] = keys

    @app.before_request
    def require_api_key() -> None:
        if request.endpoint in PUBLIC_ENDPOINTS:
            return
        g.api_key_id = keys.identify(request.headers.get("Authorization"))


def api_keys_on(app: Flask) -> bool:
    """Whether `app` requires API keys."""
    return _EXTENSION in app.extensions


def api_key_id() -> str | None:
    """The id of the key the current request was made with; None when keys are off."""
    return g.get("api_key_id")


def conversation_key(conversation_id: str) -> str:
    """Where a conversation is stored: inside the caller's key's namespace, if keys are on."""
    return conversation_namespace() + conversation_id


def conversation_namespace() -> str:
    """The start of every conversation key of the caller: "" when keys are off."""
    key_id = api_key_id()
    # "/" cannot occur in a conversation id, so namespaces never collide with plain ids.
    return "" if key_id is None else f"{key_id}/"


def _read_key_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"API_KEYS_FILE={str(path)!r} cannot be read: {exc}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _header_bytes(value: str) -> bytes:
    # WSGI servers decode header bytes as latin-1, so this gives back the bytes that were
    # sent; a server that decoded them otherwise may hand over wider characters.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"piagent-key-id:" + key).hexdigest()[:16]
