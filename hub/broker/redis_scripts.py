"""The Lua scripts of the Redis backend: each runs atomically in Redis, as one round trip.

Keys (``{prefix}`` is the backend's key prefix): ``{prefix}:s:{topic}``, a hash of the topic's
``epoch`` and last ``offset``; ``{prefix}:h:{topic}``, a stream of its history, one entry
``<offset>-0`` with the fields ``t`` (ms) and ``p`` (payload) per publication;
``{prefix}:index``, a sorted set of topics scored by the time of their last publication.
See :mod:`hub.broker.redis` for how they are used.
"""

from __future__ import annotations

__all__ = ["HISTORY", "POSITIONS", "PUBLISH"]

#: The time of Redis, in ms, for the scripts below.
NOW = """
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
"""

#: KEYS: the topic's hash, stream, and the topic index. ARGV: channel, candidate epoch,
#: payload, history size, history ttl (ms), epoch ttl (ms), index reach (ms), topic.
#: Returns {epoch, offset, time}. A new epoch starts with an empty stream.
PUBLISH = (
    NOW
    + """
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2]) == 1 then
    redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if tonumber(ARGV[4]) > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0', 't', now, 'p', ARGV[3])
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('ZADD', KEYS[3], now, ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - tonumber(ARGV[7])))
redis.call('PUBLISH', ARGV[1], string.format('%d %s %d ', offset, epoch, now) .. ARGV[3])
return {epoch, offset, now}
"""
)

#: KEYS: topics' hashes; ARGV[1]: epoch ttl (ms), ARGV[i + 1]: a candidate epoch for KEYS[i].
#: Returns {epoch1, offset1, ...}.
POSITIONS = """
local result = {}
for i, key in ipairs(KEYS) do
    if redis.call('HSETNX', key, 'epoch', ARGV[i + 1]) == 1 then
        redis.call('PEXPIRE', key, ARGV[1])
    end
    local position = redis.call('HMGET', key, 'epoch', 'offset')
    result[2 * i - 1] = position[1]
    result[2 * i] = position[2] or 0
end
return result
"""

#: KEYS: the topic's hash and stream. ARGV: candidate epoch, epoch ttl (ms), history ttl (ms),
#: first offset wanted, limit, "1" for the newest first. Entries past the ttl are trimmed
#: first (a stream is in time order). Returns {epoch, offset, oldest offset or false, entries}.
HISTORY = (
    NOW
    + """
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
    redis.call('DEL', KEYS[2])
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local position = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
local horizon = now - tonumber(ARGV[3])
local oldest = false
while true do
    local batch = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 100)
    local expired = false
    for _, entry in ipairs(batch) do
        if tonumber(entry[2][2]) >= horizon then
            oldest = entry[1]
            break
        end
        expired = entry[1]
    end
    if expired then
        local next_offset = tonumber(string.match(expired, '^%d+')) + 1
        redis.call('XTRIM', KEYS[2], 'MINID', next_offset .. '-0')
    end
    if oldest or #batch < 100 then
        break
    end
end
local entries = {}
if oldest then
    local first = math.max(tonumber(ARGV[4]), tonumber(string.match(oldest, '^%d+')))
    if ARGV[6] == '1' then
        entries = redis.call('XREVRANGE', KEYS[2], '+', first .. '-0', 'COUNT', ARGV[5])
    else
        entries = redis.call('XRANGE', KEYS[2], first .. '-0', '+', 'COUNT', ARGV[5])
    end
end
return {position[1], position[2] or 0, oldest, entries}
"""
)
