"""MEMORY_BACKEND=redis: conversations in one Redis server, shared by several Pis.

Each change is one Lua script, which Redis runs atomically: concurrent requests never
interleave an append with a trim or lose a turn. Idle conversations expire by Redis's
own key expiry; the recency order lives in one sorted set scored by Redis's clock, so
every Pi agrees on it. Not for Redis Cluster: scripts reach keys they compute.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import MemoryUnavailable
from ..urls import scrub_credentials, without_credentials
from . import redis_scripts as scripts
from .base import (
    TITLE_MAX_CHARS,
    ConversationSummary,
    MemoryLimits,
    Message,
    NewExchange,
    Recollection,
    StoredMessage,
    clipped,
    namespace_of,
)

KEY_PREFIX = "piagent:"
# Requests hold a connection only for one command, so a few serve a whole worker.
POOL_SIZE = 16
TIMEOUT_S = 5.0


class RedisStore:
    """Conversations in Redis: shared by every process and machine pointed at it."""

    def __init__(
        self,
        url: str,
        limits: MemoryLimits,
        *,
        prefix: str = KEY_PREFIX,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Prepare a connection pool; nothing connects until the first request needs it."""
        self._limits = limits
        self._prefix = prefix
        self._wall_clock = wall_clock
        self._where = without_credentials(url)
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=TIMEOUT_S,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            decode_responses=True,
            # Once, and only for a connection that failed (a pooled one Redis has since
            # dropped): retrying a timed-out script could append the same exchange twice.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        self._redis = redis.Redis(connection_pool=pool)
        self._begin = self._redis.register_script(scripts.BEGIN)
        self._renew = self._redis.register_script(scripts.RENEW)
        self._end = self._redis.register_script(scripts.END + scripts.INDEX_ON_END)
        self._count = self._redis.register_script(scripts.COUNT)
        self._list = self._redis.register_script(scripts.LIST)

    def begin(self, conversation_id: str, holder: str, lease_s: float) -> Recollection | None:
        """Claim the conversation and recall it; None while another holder has it."""
        with self._errors_named():
            found = self._begin(
                keys=self._keys(conversation_id),
                args=[conversation_id, holder, _milliseconds(lease_s), self._ttl_ms()],
            )
        if found is None:
            return None
        if not found:
            return Recollection([])
        encoded, ratio = found
        messages = [Message(role, content) for role, content, _ in map(json.loads, encoded)]
        return Recollection(messages, None if ratio is None else float(ratio))

    def renew(self, conversation_id: str, holder: str, lease_s: float) -> bool:
        """Extend the claim; False when it lapsed or passed to another holder."""
        with self._errors_named():
            renewed = self._renew(
                keys=[self._key("hold", conversation_id)], args=[holder, _milliseconds(lease_s)]
            )
        return renewed == 1

    def end(self, conversation_id: str, holder: str, exchange: NewExchange | None = None) -> None:
        """Keep the exchange, if any, and let go of the claim."""
        args: list[str | int] = [conversation_id, holder]
        if exchange is not None:
            user_text, reply_text = clipped(exchange, self._limits)
            ratio = exchange.token_ratio
            args += [
                self._ttl_ms(),
                self._limits.kept_messages,
                self._limits.max_conversations,
                self._prefix,
                "" if ratio is None else repr(ratio),
                json.dumps(["user", user_text, exchange.asked_at], ensure_ascii=False),
                json.dumps(["assistant", reply_text, self._wall_clock()], ensure_ascii=False),
                exchange.forgotten,
                self._limits.trimmed_to,
            ]
        with self._errors_named():
            index = self._index_key(namespace_of(conversation_id))
            self._end(keys=[*self._keys(conversation_id), index], args=args)

    def transcript(self, conversation_id: str) -> list[StoredMessage] | None:
        """Every remembered message with its time; looking does not count as use."""
        with self._errors_named():
            encoded = self._redis.lrange(self._key("messages", conversation_id), 0, -1)
        return [StoredMessage(*json.loads(item)) for item in encoded] or None

    def forget(self, conversation_id: str) -> bool:
        """Drop the conversation; False when it was unknown."""
        _, messages, ratio, recent = self._keys(conversation_id)
        with self._errors_named():
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(messages)
            pipe.delete(ratio)
            pipe.zrem(recent, conversation_id)
            deleted, _, _ = pipe.execute()
        return deleted == 1

    def conversations(self, namespace: str, limit: int) -> list[ConversationSummary]:
        """The namespace's conversations, most recently updated first; looking is not use."""
        # Four bytes a character at most, so the bytes sent hold every character kept.
        args = [self._prefix, limit, 4 * TITLE_MAX_CHARS]
        with self._errors_named():
            found = self._list(keys=[self._index_key(namespace)], args=args)
        return [
            ConversationSummary(
                conversation_id=key[len(namespace) :],
                title=title[:TITLE_MAX_CHARS],
                updated_at=float(at),
                messages=count,
            )
            for key, title, at, count in found
        ]

    def _index_key(self, namespace: str) -> str:
        """The sorted set of a namespace's conversations, for listing them."""
        return f"{self._prefix}conversations:{namespace}"

    def __len__(self) -> int:
        """How many conversations are remembered."""
        with self._errors_named():
            return int(self._count(keys=[self._prefix + "recent"], args=[self._ttl_ms()]))

    def check(self) -> None:
        """Ask Redis for a PONG."""
        with self._errors_named():
            self._redis.ping()

    def close(self) -> None:
        """Close the pooled connections."""
        self._redis.close()

    def _key(self, kind: str, conversation_id: str) -> str:
        return f"{self._prefix}{kind}:{conversation_id}"

    def _keys(self, conversation_id: str) -> list[str]:
        """The keys the scripts touch: hold, messages, token ratio, and the recency set."""
        return [
            self._key("hold", conversation_id),
            self._key("messages", conversation_id),
            self._key("ratio", conversation_id),
            self._prefix + "recent",
        ]

    def _ttl_ms(self) -> int:
        """The idle time in milliseconds; 0 (never) stays 0."""
        ttl_s = self._limits.ttl_s
        return _milliseconds(ttl_s) if ttl_s > 0 else 0

    @contextmanager
    def _errors_named(self) -> Iterator[None]:
        """Turn the client's errors into a 503 that says which Redis failed."""
        try:
            yield
        except redis.RedisError as exc:
            raise MemoryUnavailable(
                f"the conversation memory at {self._where} is not reachable: "
                f"{scrub_credentials(str(exc))}"
            ) from None


def _milliseconds(seconds: float) -> int:
    """A positive time in whole milliseconds, at least 1 (Redis refuses an expiry of 0)."""
    return max(1, round(seconds * 1000))
