"""Presence on Redis: every node of a deployment sees every node's devices.

How it keeps the :class:`gateway.presence.base.Presence` guarantees:

* **Keys.** User ``u`` under prefix ``p`` has one hash ``p:{p:u}``, on the same Cluster
  slot as its shard channel ``p:{p:u}:ch``: ``d:<device>`` = ``status|expires_ms`` per
  device, ``seen`` (when the last device left or lapsed), ``agg`` (the aggregate last
  published) and ``ver``. The hash expires ``seen_retention`` (30 days) after its last
  lease ends: abandoned users do not pile up, ``last_seen`` stays answerable.
* **Scripts.** Setting, removing, renewing and reading are each one Lua script (one
  round trip, atomic) that purges lapsed devices, by the *server's* clock (``TIME``, so
  nodes with skewed clocks agree), and returns the aggregate. When it differs from
  ``agg`` the script bumps ``ver`` to ``max(ver + 1, server µs)`` (it grows even across
  a re-made key) and ``SPUBLISH``es ``ver|status|last_seen`` on the user's channel.
* **Leases.** Every ``ttl / 3`` seconds this node renews its devices (pipelined per
  slot). A renewal extends only devices still in the hash; one that was purged (this
  node stalled, Redis lost it) is set again with its current status; one removed
  meanwhile is never brought back.
* **Watching.** ``watch`` reads each new user's aggregate as its baseline (not
  reported), then ``SSUBSCRIBE``s; every (re)subscription re-reads the aggregate, so
  nothing published while unsubscribed is lost. A state is reported only if its
  ``ver`` is newer than the last one seen and its value differs from the last report:
  per-user order holds, an unchanged aggregate is never reported. Every ``ttl / 3``
  seconds the watched users that are not offline are re-read (pipelined): the script
  purges a dead node's lapsed devices and publishes, so a lapse is reported within about
  ``4/3 ttl``. ``unwatch`` stops reports at once; its channel is unsubscribed at the
  next tick unless the user is watched again by then.
* **Failures.** Redis unreachable or refusing: calls raise :class:`StoreUnavailable`.
  A device whose ``set_device`` raised stays this node's (renewed, so set once Redis is
  back) until ``remove_device``; a failed ``remove_device`` leaves it to lapse.
  Background failures are logged and retried at the next tick.
* **Closing.** A normal exit of :func:`open_redis_presence` (or :meth:`aclose`) removes
  this node's devices, so watchers see them leave at once; a cancelled or failed one
  leaves them to lapse within ``ttl``, as a killed node would.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from redis.crc import key_slot

from gateway.errors import StoreUnavailable
from gateway.presence.base import DeviceStatus, PresenceState, Status, WatchHandler
from gateway.presence.memory import SEEN_RETENTION, check_device, check_users
from gateway.redis.client import RedisClient, RedisError, RedisUnavailable, Script, Subscription
from gateway.redis.connection import Arg

__all__ = ["AGGREGATE", "REMOVE", "RENEW", "SET", "RedisPresence", "open_redis_presence"]

log = logging.getLogger("gateway.presence.redis")

# KEYS: the user's hash, its shard channel; ARGV[1]: seen_retention ms. settle(wrote)
# purges lapsed devices, publishes a changed aggregate, returns {status, last_seen, ver}.
_PRELUDE = """
local key, chan, keep = KEYS[1], KEYS[2], tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fmt(n) return string.format('%.0f', n) end
local function settle(wrote)
  local h = redis.call('HGETALL', key)
  local best, last, lapsed, seen, ver, agg, dead = 0, now, 0, 0, 0, 'offline|0', {}
  for i = 1, #h, 2 do
    local f, v = h[i], h[i + 1]
    if string.sub(f, 1, 2) == 'd:' then
      local st, exp = string.match(v, '^(%a+)|(%d+)')
      exp = tonumber(exp)
      if exp <= now then
        dead[#dead + 1] = f
        if exp > lapsed then lapsed = exp end
      else
        if st == 'online' then best = 2 elseif best == 0 then best = 1 end
        if exp > last then last = exp end
      end
    elseif f == 'seen' then seen = tonumber(v)
    elseif f == 'ver' then ver = tonumber(v)
    elseif f == 'agg' then agg = v end
  end
  if #dead > 0 then
    redis.call('HDEL', key, unpack(dead))
    if lapsed > seen then seen = lapsed; redis.call('HSET', key, 'seen', fmt(seen)) end
    wrote = true
  end
  local status, shown, cur = 'online', now, 'online'
  if best == 1 then status, cur = 'away', 'away' end
  if best == 0 then status, shown, cur = 'offline', seen, 'offline|' .. fmt(seen) end
  if cur ~= agg then
    ver = math.max(ver + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
    redis.call('HSET', key, 'ver', fmt(ver), 'agg', cur)
    redis.call('SPUBLISH', chan, fmt(ver) .. '|' .. status .. '|' .. fmt(shown))
    wrote = true
  end
  if wrote then redis.call('PEXPIRE', key, last - now + keep) end
  return {status, fmt(shown), fmt(ver)}
end
"""


def _script(body: str) -> Script:
    return Script(_PRELUDE + body)


# ARGV: retention, device, status, ttl ms
SET = _script("""
redis.call('HSET', key, 'd:' .. ARGV[2], ARGV[3] .. '|' .. fmt(now + tonumber(ARGV[4])))
return settle(true)
""")

# ARGV: retention, device. A device that still counted leaves ``seen`` = now.
REMOVE = _script("""
local f = 'd:' .. ARGV[2]
local v = redis.call('HGET', key, f)
if not v then return settle(false) end
redis.call('HDEL', key, f)
local left = math.min(tonumber(string.match(v, '|(%d+)')), now)
if left > tonumber(redis.call('HGET', key, 'seen') or '0') then
  redis.call('HSET', key, 'seen', fmt(left))
end
return settle(true)
""")

# ARGV: retention, ttl ms, devices... Extends the devices still in the hash; returns the
# aggregate and, as a fourth element, the devices that were not there.
RENEW = _script("""
local missing, exp = {}, fmt(now + tonumber(ARGV[2]))
for i = 3, #ARGV do
  local f = 'd:' .. ARGV[i]
  local v = redis.call('HGET', key, f)
  if v then redis.call('HSET', key, f, string.match(v, '^%a+') .. '|' .. exp)
  else missing[#missing + 1] = ARGV[i] end
end
local r = settle(true)
r[4] = missing
return r
""")

# ARGV: retention
AGGREGATE = _script("return settle(false)\n")

_STATUS: dict[bytes, Status] = {b"online": "online", b"away": "away", b"offline": "offline"}


class _Watch:
    """What this node last knew and reported of one watched user."""

    __slots__ = ("reported", "ver")

    def __init__(self, ver: int, reported: tuple[Status, int]) -> None:
        self.ver = ver
        self.reported = reported  # (status, last_seen if offline else 0)


class RedisPresence:
    """A :class:`gateway.presence.base.Presence` on Redis; run :meth:`run` beside it.

    ``prefix`` namespaces the keys (several deployments or tests can share a Redis).
    """

    def __init__(
        self,
        redis: RedisClient,
        prefix: str = "gw",
        ttl: float = 30.0,
        *,
        seen_retention: float = SEEN_RETENTION,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if "{" in prefix or "}" in prefix:
            raise ValueError("the presence prefix must not contain braces (hash tags)")
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self._ttl_ms = int(ttl * 1000)
        self._keep_ms = int(seen_retention * 1000)
        self._devices: dict[str, dict[str, DeviceStatus]] = {}  # this node's, to renew
        self._watched: dict[str, _Watch] = {}
        self._pending: dict[str, object] = {}  # user -> token of the watch reading it
        self._channels: dict[str, str] = {}  # subscribed shard channel -> user
        self._dropped: set[str] = set()  # unwatched, still subscribed until the next tick
        self._stale: set[str] = set()  # watched users whose re-read failed
        self._handler: WatchHandler | None = None
        self._sub = Subscription(redis, self._on_message, self._on_subscribed)
        self._limiter = trio.CapacityLimiter(32)  # slot pipelines in flight at once
        self._closed = False

    def keys(self, user: str) -> tuple[str, str]:
        """The user's hash and shard channel."""
        base = f"{self.prefix}:{{p:{user}}}"
        return base, f"{base}:ch"

    # -- Presence ----------------------------------------------------------------------

    async def set_device(self, user: str, device: str, status: DeviceStatus) -> PresenceState:
        check_device(user, device, status)
        self._check_open()
        self._devices.setdefault(user, {})[device] = status  # renewed until removed
        return self._reply(user, await self._one(SET, user, device, status, self._ttl_ms))

    async def remove_device(self, user: str, device: str) -> PresenceState:
        check_device(user, device)
        self._check_open()
        mine = self._devices.get(user)
        if mine is not None:
            mine.pop(device, None)
            if not mine:
                del self._devices[user]
        return self._reply(user, await self._one(REMOVE, user, device))

    async def get(self, users: Sequence[str]) -> list[PresenceState]:
        check_users(users)
        self._check_open()
        replies = _all(await self._many(AGGREGATE, [(u, ()) for u in users]))
        return [self._reply(u, r) for u, r in zip(users, replies, strict=True)]

    def on_change(self, handler: WatchHandler) -> None:
        self._handler = handler

    async def watch(self, users: Sequence[str]) -> None:
        check_users(users)
        self._check_open()
        new = [u for u in dict.fromkeys(users) if u not in self._watched]
        if not new:
            return
        token = object()
        for u in new:
            self._pending[u] = token
        try:
            replies = _all(await self._many(AGGREGATE, [(u, ()) for u in new]))
        finally:
            mine = {u for u in new if self._pending.get(u) is token}  # others: unwatched
            for u in mine:  # meanwhile, or taken over by a later watch
                del self._pending[u]
        subscribe: list[str] = []
        for user, reply in zip(new, replies, strict=True):
            if user not in mine or user in self._watched:
                continue
            status, shown, ver = _parse(reply)
            self._watched[user] = _Watch(ver, (status, shown if status == "offline" else 0))
            self._dropped.discard(user)
            chan = self.keys(user)[1]
            if chan in self._channels:  # still subscribed: re-read what was dropped meanwhile
                self._on_subscribed(chan)
            else:
                self._channels[chan] = user
                subscribe.append(chan)
        for chan in subscribe:
            await self._sub.subscribe(chan)  # confirmed later: _on_subscribed re-reads

    async def unwatch(self, users: Sequence[str]) -> None:
        check_users(users)
        for user in users:
            self._pending.pop(user, None)
            if self._watched.pop(user, None) is not None:
                self._dropped.add(user)
                self._stale.discard(user)

    async def aclose(self) -> None:
        """Remove this node's devices (watchers see them leave), stop watching."""
        if self._closed:
            return
        self._closed = True
        devices, self._devices = self._devices, {}
        calls = [(u, (d,)) for u, ds in devices.items() for d in ds]
        with trio.move_on_after(self.redis.timeout) as scope:
            scope.shield = True
            failed = sum(isinstance(r, StoreUnavailable) for r in await self._many(REMOVE, calls))
            if failed:
                log.warning("presence: %d devices not removed; they lapse within ttl", failed)
        if scope.cancelled_caught:
            log.warning("presence: removing this node's devices timed out; they will lapse")
        await self._abandon()

    async def _abandon(self) -> None:
        """Stop reporting and watching; leave this node's devices in Redis to lapse."""
        self._closed = True
        with trio.CancelScope(shield=True):
            for chan in list(self._channels):
                await self._sub.unsubscribe(chan)
        self._channels.clear()
        self._watched.clear()

    # -- the background tasks ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew this node's leases and re-read watched users, every ``ttl / 3`` seconds."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._every, self._renew)
            nursery.start_soon(self._every, self._poll)
            task_status.started()

    async def _every(self, job: Callable[[], Awaitable[None]]) -> None:
        period = self.ttl / 3
        deadline = trio.current_time()
        while True:
            deadline = max(deadline + period, trio.current_time())
            await trio.sleep_until(deadline)
            if self._closed:
                return
            try:
                await job()
            except StoreUnavailable as exc:
                log.warning("presence: %s", exc)

    async def _renew(self) -> None:
        mine = [(user, tuple(ds)) for user, ds in self._devices.items() if ds]
        replies = await self._many(RENEW, [(u, (self._ttl_ms, *ds)) for u, ds in mine])
        lost: list[tuple[str, str]] = []
        failed = 0
        for (user, _), reply in zip(mine, replies, strict=True):
            if isinstance(reply, StoreUnavailable):
                failed += 1
                continue
            self._reply(user, reply)
            lost += [
                (user, d) for raw in reply[3] if (d := raw.decode()) in self._devices.get(user, ())
            ]
        if lost:  # purged while this node still has them (it stalled, or Redis lost them)
            log.info("presence: setting %d lapsed devices of this node again", len(lost))
            view = await self._resync(lost)
            changed = [k for k, st in view.items() if self._devices.get(k[0], {}).get(k[1]) != st]
            await self._resync(changed)  # set or removed meanwhile: write that again after us
        if failed:
            raise StoreUnavailable(f"could not renew the leases of {failed} users")

    async def _resync(
        self, devices: list[tuple[str, str]]
    ) -> dict[tuple[str, str], DeviceStatus | None]:
        """Write this node's current view of ``devices`` (set, or removed); return it."""
        view = {(u, d): self._devices.get(u, {}).get(d) for u, d in devices}
        sets = [(u, (d, st, self._ttl_ms)) for (u, d), st in view.items() if st is not None]
        removes = [(u, (d,)) for (u, d), st in view.items() if st is None]
        for script, calls in ((SET, sets), (REMOVE, removes)):
            for (user, _), reply in zip(calls, await self._many(script, calls), strict=True):
                if not isinstance(reply, StoreUnavailable):
                    self._reply(user, reply)
        return view

    async def _poll(self) -> None:
        for user in list(self._dropped):
            if user not in self._watched and user not in self._pending:
                self._dropped.discard(user)
                chan = self.keys(user)[1]
                self._channels.pop(chan, None)
                await self._sub.unsubscribe(chan)
        users = [
            u for u, w in self._watched.items() if w.reported[0] != "offline" or u in self._stale
        ]
        await self._reread(users)

    async def _reread(self, users: Sequence[str]) -> None:
        replies = await self._many(AGGREGATE, [(u, ()) for u in users])
        for user, reply in zip(users, replies, strict=True):
            if isinstance(reply, StoreUnavailable):
                if user in self._watched:
                    self._stale.add(user)  # the next tick tries again
            else:
                self._stale.discard(user)
                self._reply(user, reply)

    # -- pub/sub ---------------------------------------------------------------------------

    def _on_message(self, chan: str, data: bytes) -> None:
        user = self._channels.get(chan)
        if user is None:
            return
        try:
            ver, status, shown = data.split(b"|")
            self._offer(user, int(ver), _STATUS[status], int(shown))
        except (ValueError, KeyError):
            log.warning("presence: unreadable message on %s: %r", chan, data[:100])

    def _on_subscribed(self, chan: str) -> None:
        user = self._channels.get(chan)
        if user is not None and user in self._watched and not self._closed:
            self._stale.add(user)
            self.redis.start_soon(self._reread, [user])

    # -- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("presence is closed")

    def _reply(self, user: str, reply: Any) -> PresenceState:
        status, shown, ver = _parse(reply)
        self._offer(user, ver, status, shown)
        return PresenceState(user, status, shown)

    def _offer(self, user: str, ver: int, status: Status, shown: int) -> None:
        """Report ``user``'s aggregate if it is watched, newer and different."""
        w = self._watched.get(user)
        if w is None or ver <= w.ver or self._closed:
            return
        w.ver = ver
        reported = (status, shown if status == "offline" else 0)
        if reported == w.reported:
            return
        w.reported = reported
        if self._handler is not None:
            try:
                self._handler(PresenceState(user, status, shown))
            except Exception:
                log.exception("the presence change handler failed")

    async def _one(self, script: Script, user: str, *args: Arg) -> Any:
        reply = (await self._many(script, [(user, args)]))[0]
        if isinstance(reply, StoreUnavailable):
            raise reply
        return reply

    async def _many(self, script: Script, calls: Sequence[tuple[str, Sequence[Arg]]]) -> list[Any]:
        """Run ``script`` once per ``(user, args)``, pipelined per slot (concurrently).

        Each result is the script's reply, or a :class:`StoreUnavailable`.
        """
        out: list[Any] = [None] * len(calls)
        if not calls:
            return out
        try:
            await self.redis.address_of(None)  # learns the topology on the first call
        except (RedisUnavailable, RedisError) as exc:
            return [_unavailable(exc)] * len(calls)
        groups: dict[int, list[int]] = {}
        for i, (user, _) in enumerate(calls):
            slot = key_slot(self.keys(user)[0].encode()) if self.redis.cluster else 0
            groups.setdefault(slot, []).append(i)

        async def run(idx: list[int]) -> None:
            key = self.keys(calls[idx[0]][0])[0]
            args = [(2, *self.keys(calls[i][0]), self._keep_ms, *calls[i][1]) for i in idx]
            replies: list[Any]
            try:
                async with self._limiter:
                    cmds = [("EVALSHA", script.sha, *a) for a in args]
                    replies = await self.redis.pipeline(cmds, key=key)
                    again = [j for j, r in enumerate(replies) if _noscript(r)]
                    evals = [("EVAL", script.source, *args[j]) for j in again]
                    for j, r in zip(again, await self.redis.pipeline(evals, key=key), strict=True):
                        replies[j] = r
            except RedisUnavailable as exc:
                replies = [exc] * len(idx)
            for i, r in zip(idx, replies, strict=True):
                out[i] = _unavailable(r) if isinstance(r, RedisError | RedisUnavailable) else r

        if len(groups) == 1:
            await run(next(iter(groups.values())))
        else:
            async with trio.open_nursery() as nursery:
                for idx in groups.values():
                    nursery.start_soon(run, idx)
        return out


def _parse(reply: Any) -> tuple[Status, int, int]:
    return _STATUS[reply[0]], int(reply[1]), int(reply[2])


def _noscript(reply: Any) -> bool:
    return isinstance(reply, RedisError) and str(reply).startswith("NOSCRIPT")


def _unavailable(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"Redis is unavailable: {exc}")


def _all(replies: list[Any]) -> list[Any]:
    for r in replies:
        if isinstance(r, StoreUnavailable):
            raise r
    return replies


@asynccontextmanager
async def open_redis_presence(
    redis: RedisClient,
    *,
    prefix: str = "gw",
    ttl: float = 30.0,
    seen_retention: float = SEEN_RETENTION,
) -> AsyncIterator[RedisPresence]:
    """Run a :class:`RedisPresence`; a normal exit removes this node's devices, any other
    exit (cancelled, or an exception) leaves them to lapse."""
    presence = RedisPresence(redis, prefix, ttl, seen_retention=seen_retention)
    async with trio.open_nursery() as nursery:
        await nursery.start(presence.run)
        try:
            yield presence
        except BaseException:
            await presence._abandon()
            raise
        else:
            await presence.aclose()
        finally:
            nursery.cancel_scope.cancel()
