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
* ``p:{c}:live``  shard channel: ``# epoch LF batch`` for every APPEND call that added
                  records, ``batch`` being a msgpack array of ``[offset, r]`` pairs (``r``
                  embedded as the msgpack value it is), in offset order; and ephemeral
                  events ``~ LF node LF kind LF user``
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
# ARGV: k_1, r_1, ..., k_n, r_n, seconds to keep this window's cmid index
# A batch of appends (group commit: what one node queued for the channel while its
# previous call was in flight), each k being sender NUL cmid and r its record. Returns
# {0} if the channel has no meta (init it first), else {1, epoch, x_1, ..., x_n}: x_i is
# the offset entry i was appended at, or {offset[, r]} if its cmid is in the index (an
# earlier entry of this batch included); r is absent if the stream no longer holds it
# (read it from the store). New entries take consecutive offsets in argument order and
# go out together in one message on the live shard channel. One entry (n = 1) is the
# same call and the same reply for a new record as before batching. n stays small (the
# bus caps it): unpack() takes every key at once.
APPEND = Script("""
local m = redis.call('HMGET', KEYS[1], 'epoch', 'head')
local epoch = m[1]
if not epoch then return {0} end
local head = tonumber(m[2])
local n = (#ARGV - 1) / 2
local ks = {}
for i = 1, n do ks[i] = ARGV[2 * i - 1] end
local now = redis.call('HMGET', KEYS[3], unpack(ks))
local before = {}
if KEYS[5] then before = redis.call('HMGET', KEYS[5], unpack(ks)) end
local out, seen, index, pub = {1, epoch}, {}, {}, {}
for i = 1, n do
  local k, r = ks[i], ARGV[2 * i]
  local prev = seen[k] or now[i] or before[i]
  if prev then
    local e = redis.call('XRANGE', KEYS[2], '0-' .. prev, '0-' .. prev)
    if e[1] then out[i + 2] = {tonumber(prev), e[1][2][4]} else out[i + 2] = {tonumber(prev)} end
  else
    head = head + 1
    redis.call('XADD', KEYS[2], '0-' .. head, 'k', k, 'r', r)
    seen[k] = head
    index[#index + 1] = k
    index[#index + 1] = head
    pub[#pub + 1] = '\\146' .. cmsgpack.pack(head) .. r
    out[i + 2] = head
  end
end
local c = #pub
if c > 0 then
  redis.call('HSET', KEYS[1], 'head', head)
  redis.call('HSET', KEYS[3], unpack(index))
  if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIRE', KEYS[3], ARGV[#ARGV]) end
  local hdr
  if c < 16 then hdr = string.char(144 + c)
  else hdr = string.char(220, math.floor(c / 256), c % 256) end
  redis.call('SPUBLISH', KEYS[4], '#' .. epoch .. '\\n' .. hdr .. table.concat(pub))
end
return out
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

# KEYS: meta, log, lease   ARGV: node, epoch, persisted, window, lease ms
# Records that the store holds everything up to ``persisted`` (if no other node holds the
# lease, and the epoch is unchanged), then trims the stream to the newest ``window``
# records, never below ``persisted``. Returns the persisted offset, or -1 if another node
# holds the lease or the epoch changed. A lease that lapsed while this node's write ran
# long (a slow store) is taken again: what it wrote is in the store all the same, and
# ``persisted`` only ever grows, so a write another node did meanwhile is not undone.
ADVANCE = Script("""
local cur = redis.call('GET', KEYS[3])
if cur and cur ~= ARGV[1] then return -1 end
if not cur then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[5]) end
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
