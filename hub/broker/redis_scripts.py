"""The Lua scripts of the Redis backend: each runs atomically in Redis, as one round trip.

Keys (``{prefix}`` is the backend's key prefix): ``{prefix}:s:{topic}``, a hash of the topic's
``epoch`` and last ``offset``; ``{prefix}:h:{topic}``, a stream of its history, one entry
``<offset>-0`` with the fields ``t`` (ms) and ``p`` (payload) per publication;
``{prefix}:index``, a sorted set of topics scored by the time of their last publication.
See :mod:`hub.broker.redis` for how they are used.

Presence (:mod:`hub.broker.redis_presence`): ``{prefix}:pm:{topic}``, a hash of the present
clients' entries (JSON, by client id); ``{prefix}:pl:{topic}``, a hash from a user id to the
last client of that user whose leave is pending; ``{prefix}:presence``, a sorted set of
``"<topic> <client>"`` scored by when the entry expires (ms): the end of its grace period, or
of its node's last heartbeat plus the ttl. Presence events go out on the topic's channel as
``P <id> join <replaced client or -> <entry>`` and ``P <id> leave - <entry>``, where ``<id>``
is unique per event: a node that gets an event twice (through a topic's channel and a glob,
or two globs) tells the copies apart by it.
"""

from __future__ import annotations

__all__ = [
    "HISTORY",
    "POSITIONS",
    "PRESENCE_HEARTBEAT",
    "PRESENCE_JOIN",
    "PRESENCE_LEAVE",
    "PRESENCE_SWEEP",
    "PUBLISH",
]

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

#: KEYS: the topic's entries, pending leaves and the expiry set. ARGV: topic, client, user (""
#: when anonymous), entry, ttl (ms), channel, event id. A pending leave of the same user's last
#: client is dropped: the join names that client instead of a leave going out. Returns 1 if it
#: joined.
PRESENCE_JOIN = (
    NOW
    + """
local replaces = '-'
if ARGV[3] ~= '' then
    local old = redis.call('HGET', KEYS[2], ARGV[3])
    if old then
        redis.call('HDEL', KEYS[2], ARGV[3])
        if old ~= ARGV[2] then
            redis.call('HDEL', KEYS[1], old)
            redis.call('ZREM', KEYS[3], ARGV[1] .. ' ' .. old)
            replaces = old
        end
    end
end
local added = redis.call('ZADD', KEYS[3], now + ARGV[5], ARGV[1] .. ' ' .. ARGV[2])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
if added == 1 or replaces ~= '-' then
    redis.call('PUBLISH', ARGV[6], 'P ' .. ARGV[7] .. ' join ' .. replaces .. ' ' .. ARGV[4])
end
return added
"""
)

#: KEYS: as PRESENCE_JOIN. ARGV: topic, client, user ("" when anonymous), grace (ms), channel,
#: entry, event id. With a user and a grace period the entry stays until the grace period ends
#: (the sweep then sends the leave); otherwise the leave goes out now. Without an entry (Redis
#: lost it) the leave goes out now too: a leave twice is harmless, a leave never is not.
PRESENCE_LEAVE = (
    NOW
    + """
local entry = redis.call('HGET', KEYS[1], ARGV[2])
if not entry then
    redis.call('PUBLISH', ARGV[5], 'P ' .. ARGV[7] .. ' leave - ' .. ARGV[6])
    return 0
end
local member = ARGV[1] .. ' ' .. ARGV[2]
if ARGV[3] ~= '' and tonumber(ARGV[4]) > 0 then
    redis.call('ZADD', KEYS[3], now + ARGV[4], member)
    redis.call('HSET', KEYS[2], ARGV[3], ARGV[2])
    return 1
end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[3], member)
redis.call('PUBLISH', ARGV[5], 'P ' .. ARGV[7] .. ' leave - ' .. entry)
return 1
"""
)

#: KEYS: the expiry set. ARGV: key prefix, most entries to expire, event id prefix. Removes the
#: expired entries (grace periods over, nodes that stopped their heartbeat) and sends their
#: leaves; atomic, so that of the nodes that sweep, exactly one sends each leave. Returns how
#: many expired.
PRESENCE_SWEEP = (
    NOW
    + """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])
for i, member in ipairs(expired) do
    redis.call('ZREM', KEYS[1], member)
    local space = string.find(member, ' ', 1, true)
    local topic = string.sub(member, 1, space - 1)
    local client = string.sub(member, space + 1)
    local entries = ARGV[1] .. ':pm:' .. topic
    local entry = redis.call('HGET', entries, client)
    if entry then
        redis.call('HDEL', entries, client)
        local ok, fields = pcall(cjson.decode, entry)
        if ok and type(fields) == 'table' and type(fields['user']) == 'string' then
            local leaving = ARGV[1] .. ':pl:' .. topic
            if redis.call('HGET', leaving, fields['user']) == client then
                redis.call('HDEL', leaving, fields['user'])
            end
        end
        local event = 'P ' .. ARGV[3] .. '.' .. i .. ' leave - ' .. entry
        redis.call('PUBLISH', ARGV[1] .. ':t:' .. topic, event)
    end
end
return #expired
"""
)

#: KEYS: the expiry set. ARGV: key prefix, ttl (ms), event id prefix, then (topic, client,
#: entry) per entry of the node. Extends each entry's life; one that is gone (expired while the
#: node could not reach Redis, or Redis lost it) is written again and joins again. Returns how
#: many rejoined.
PRESENCE_HEARTBEAT = (
    NOW
    + """
local joined = 0
for i = 4, #ARGV, 3 do
    local topic, client, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    if redis.call('ZADD', KEYS[1], now + ARGV[2], topic .. ' ' .. client) == 1 then
        redis.call('HSET', ARGV[1] .. ':pm:' .. topic, client, entry)
        local event = 'P ' .. ARGV[3] .. '.' .. i .. ' join - ' .. entry
        redis.call('PUBLISH', ARGV[1] .. ':t:' .. topic, event)
        joined = joined + 1
    end
end
return joined
"""
)
