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

# Shared by the scripts below. Scores are Redis's clock in microseconds, nudged so that
# each use scores above every earlier one: the LRU order is exact. string.format keeps
# every digit, which Lua's own number-to-string conversion (14 digits) would round off.
_LUA_COMMON = """
local function now_us(recent)
    local time = redis.call('TIME')
    local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
    local newest = redis.call('ZRANGE', recent, -1, -1, 'WITHSCORES')[2]
    if newest and tonumber(newest) >= now then now = tonumber(newest) + 1 end
    return now
end
local function prune(recent, now, ttl_ms)
    if ttl_ms > 0 then
        redis.call('ZREMRANGEBYSCORE', recent, '-inf', string.format('(%.0f', now - ttl_ms * 1000))
    end
end
local function touch(messages, ratio, recent, id, ttl_ms)
    for _, key in ipairs({messages, ratio}) do
        if ttl_ms > 0 then redis.call('PEXPIRE', key, ttl_ms) else redis.call('PERSIST', key) end
    end
    local now = now_us(recent)
    prune(recent, now, ttl_ms)
    redis.call('ZADD', recent, string.format('%.0f', now), id)
end
"""

# KEYS: hold, messages, ratio, recent. ARGV: id, holder, hold_ms, ttl_ms.
# Returns nil while another holder has the conversation, else [messages, ratio] or [].
_BEGIN = (
    _LUA_COMMON
    + """
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then return false end
if redis.call('EXISTS', KEYS[2]) == 0 then return {} end
touch(KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[4]))
return {redis.call('LRANGE', KEYS[2], 0, -1), redis.call('GET', KEYS[3])}
"""
)

# KEYS: hold. ARGV: holder, lease_ms. Returns 1 when renewed, 0 when the claim lapsed
# (Redis expired the key) or another holder has it.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS: hold, messages, ratio, recent. ARGV: id, holder, and, with an exchange to keep,
# ttl_ms, kept messages, max conversations, key prefix, token ratio ('' keeps the old
# one), user message, reply, messages forgotten, messages left by a trim. The trim is
# MemoryLimits.dropped: the forgotten oldest go, and a list longer than `kept` is cut to
# its newest `left`. Pairs are pushed and an even number kept, so the list always starts
# with a user message.
_END = (
    _LUA_COMMON
    + """
if #ARGV > 2 then
    local kept = tonumber(ARGV[4])
    if kept == 0 then
        redis.call('DEL', KEYS[2], KEYS[3])
        redis.call('ZREM', KEYS[4], ARGV[1])
    else
        local forgotten = tonumber(ARGV[10])
        if forgotten > 0 then redis.call('LTRIM', KEYS[2], forgotten, -1) end
        if redis.call('RPUSH', KEYS[2], ARGV[8], ARGV[9]) > kept then
            redis.call('LTRIM', KEYS[2], -tonumber(ARGV[11]), -1)
        end
        if ARGV[7] ~= '' then redis.call('SET', KEYS[3], ARGV[7]) end
        touch(KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[3]))
        local excess = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[5])
        if excess > 0 then
            for _, old in ipairs(redis.call('ZRANGE', KEYS[4], 0, excess - 1)) do
                redis.call('DEL', ARGV[6] .. 'messages:' .. old, ARGV[6] .. 'ratio:' .. old)
            end
            redis.call('ZREMRANGEBYRANK', KEYS[4], 0, excess - 1)
        end
    end
end
if redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('DEL', KEYS[1]) end
"""
)

# Run at the end of _END. KEYS[#KEYS]: the index of the conversation's namespace, a
# sorted set of its conversation keys scored by the time of their newest message. It is
# capped at the store's own cap; what expired, was forgotten or was pushed out is pruned
# when the namespace is listed.
_INDEX_ON_END = """
if #ARGV > 2 then
    local index = KEYS[#KEYS]
    local newest = redis.call('LINDEX', KEYS[2], -1)
    if newest then
        redis.call('ZADD', index, string.format('%.17g', cjson.decode(newest)[3]), ARGV[1])
        redis.call('ZREMRANGEBYRANK', index, 0, -tonumber(ARGV[5]) - 1)
    else
        redis.call('ZREM', index, ARGV[1])
    end
end
"""

# KEYS: a namespace's index. ARGV: key prefix, limit, title bytes. Returns
# [key, title, updated_at, messages] for the newest `limit` conversations still alive,
# and drops the others from the index. A title is cut to a whole UTF-8 character.
_LIST = """
local function head(text, bytes)
    if #text <= bytes then return text end
    while bytes > 0 and text:byte(bytes + 1) >= 128 and text:byte(bytes + 1) < 192 do
        bytes = bytes - 1
    end
    return text:sub(1, bytes)
end
local found, limit = {}, tonumber(ARGV[2])
for _, key in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
    local messages = ARGV[1] .. 'messages:' .. key
    local count = redis.call('LLEN', messages)
    if count == 0 then
        redis.call('ZREM', KEYS[1], key)
    elseif #found < limit then
        local first = cjson.decode(redis.call('LINDEX', messages, 0))
        local newest = cjson.decode(redis.call('LINDEX', messages, -1))
        local title = head(first[2], tonumber(ARGV[3]))
        found[#found + 1] = {key, title, string.format('%.17g', newest[3]), count}
    end
end
return found
"""

# KEYS: recent. ARGV: ttl_ms.
_COUNT = (
    _LUA_COMMON
    + """
prune(KEYS[1], now_us(KEYS[1]), tonumber(ARGV[1]))
return redis.call('ZCARD', KEYS[1])
"""
)


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
        self._begin = self._redis.register_script(_BEGIN)
        self._renew = self._redis.register_script(_RENEW)
        self._end = self._redis.register_script(_END + _INDEX_ON_END)
        self._count = self._redis.register_script(_COUNT)
        self._list = self._redis.register_script(_LIST)

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
