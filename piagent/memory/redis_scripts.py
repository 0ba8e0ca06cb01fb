"""The Lua scripts of the Redis store: each change to a conversation, run atomically.

KEYS and ARGV are listed above each script; redis_store.py passes them in that order.
"""

# Shared by the scripts below. Scores are Redis's clock in microseconds, nudged so that
# each use scores above every earlier one: the LRU order is exact. string.format keeps
# every digit, which Lua's own number-to-string conversion (14 digits) would round off.
_COMMON = """
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
BEGIN = (
    _COMMON
    + """
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[3]) then return false end
if redis.call('EXISTS', KEYS[2]) == 0 then return {} end
touch(KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[4]))
return {redis.call('LRANGE', KEYS[2], 0, -1), redis.call('GET', KEYS[3])}
"""
)

# KEYS: hold. ARGV: holder, lease_ms. Returns 1 when renewed, 0 when the claim lapsed
# (Redis expired the key) or another holder has it.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS: hold, messages, ratio, recent. ARGV: id, holder, and, with an exchange to keep,
# ttl_ms, kept messages, max conversations, key prefix, token ratio ('' keeps the old
# one), user message, reply, messages forgotten, messages left by a trim. The trim is
# MemoryLimits.dropped: the forgotten oldest go, and a list longer than `kept` is cut to
# its newest `left`. Pairs are pushed and an even number kept, so the list always starts
# with a user message.
END = (
    _COMMON
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

# Run at the end of END. KEYS[#KEYS]: the index of the conversation's namespace, a
# sorted set of its conversation keys scored by the time of their newest message. It is
# capped at the store's own cap; what expired, was forgotten or was pushed out is pruned
# when the namespace is listed.
INDEX_ON_END = """
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
LIST = """
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
COUNT = (
    _COMMON
    + """
prune(KEYS[1], now_us(KEYS[1]), tonumber(ARGV[1]))
return redis.call('ZCARD', KEYS[1])
"""
)
