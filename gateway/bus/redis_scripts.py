"""Lua scripts of the Redis Streams bus. Each touches the keys of one channel only, which
all share the ``{channel}`` hash tag, so every script runs on one Redis Cluster slot.

Keys of channel ``c`` under prefix ``p``:

* ``p:{c}:m``     hash: ``epoch``, ``head`` (last offset), ``persisted`` (every offset up
                  to it is in the message store), ``trimmed`` (the stream holds no offset
                  up to it)
* ``p:{c}:log``   stream: entry id ``0-<offset>``, fields ``k`` (sender NUL cmid) and
                  ``r`` (msgpack of sender, cmid, body, ts, thread)
* ``p:{c}:ids:<n>`` hash: ``sender NUL cmid`` -> offset of the appends of idempotency
                  window ``n`` (unix time // window); expires two windows later
* ``p:{c}:live``  shard channel: ``epoch LF offset LF r`` for every append
* ``p:{c}:lease`` string: the node that currently writes this channel to the store
"""

from __future__ import annotations

from gateway.redis.client import Script

__all__ = ["ADVANCE", "APPEND", "INIT", "PULL"]

# KEYS: meta, log, ids (this window), ids (previous window)   ARGV: epoch, head
# Creates the channel's meta from the store's position unless it exists (dropping any
# stream and cmid index left from a lost meta); returns {epoch, head} as they are now,
# and a third element 1 if this call created it.
INIT = Script("""
if redis.call('EXISTS', KEYS[1]) == 1 then
  local m = redis.call('HMGET', KEYS[1], 'epoch', 'head')
  return {m[1], tonumber(m[2])}
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'head', ARGV[2], 'persisted', ARGV[2],
           'trimmed', ARGV[2])
return {ARGV[1], tonumber(ARGV[2]), 1}
""")

# KEYS: meta, log, ids (this window), live, ids (previous window)
# ARGV: sender NUL cmid, r, seconds to keep this window's cmid index
# Returns {0} if the channel has no meta (init it first); {1, epoch, offset} for a new
# record; {2, epoch, offset[, r]} for a duplicate (r is absent if the stream no longer
# holds it: read it from the store).
APPEND = Script("""
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {0} end
local prev = redis.call('HGET', KEYS[3], ARGV[1]) or redis.call('HGET', KEYS[5], ARGV[1])
if prev then
  local e = redis.call('XRANGE', KEYS[2], '0-' .. prev, '0-' .. prev)
  if e[1] then return {2, epoch, tonumber(prev), e[1][2][4]} end
  return {2, epoch, tonumber(prev)}
end
local off = redis.call('HINCRBY', KEYS[1], 'head', 1)
redis.call('XADD', KEYS[2], '0-' .. off, 'k', ARGV[1], 'r', ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], off)
if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
redis.call('SPUBLISH', KEYS[4], epoch .. '\\n' .. off .. '\\n' .. ARGV[2])
return {1, epoch, off}
""")

# KEYS: meta, log, lease   ARGV: node, lease ms, count
# Takes or renews the write lease; returns {-1} if another node holds it, else
# {epoch, persisted, head, entries after persisted (at most count)}.
PULL = Script("""
local cur = redis.call('GET', KEYS[3])
if cur and cur ~= ARGV[1] then return {-1} end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
local m = redis.call('HMGET', KEYS[1], 'epoch', 'persisted', 'head')
if not m[1] then return {-1} end
local p = tonumber(m[2])
local entries = {}
if tonumber(m[3]) > p then
  entries = redis.call('XRANGE', KEYS[2], '0-' .. (p + 1), '+', 'COUNT', ARGV[3])
end
return {m[1], p, tonumber(m[3]), entries}
""")

# KEYS: meta, log, lease   ARGV: node, epoch, persisted, window
# Records that the store holds everything up to ``persisted`` (if this node still holds
# the lease and the epoch is unchanged), then trims the stream to the newest ``window``
# records, never below ``persisted``. Returns the persisted offset, or -1 if the lease
# or the epoch was lost.
ADVANCE = Script("""
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local m = redis.call('HMGET', KEYS[1], 'epoch', 'persisted', 'head', 'trimmed')
if m[1] ~= ARGV[2] then return -1 end
local p = math.max(tonumber(m[2]), tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'persisted', p)
local upto = math.min(p, tonumber(m[3]) - tonumber(ARGV[4]))
if upto > tonumber(m[4]) then
  redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. (upto + 1))
  redis.call('HSET', KEYS[1], 'trimmed', upto)
end
return p
""")
