"""Redis Streams bus: many gateway nodes share one log per channel.

How it keeps the :class:`gateway.bus.base.Bus` guarantees (scripts in
``gateway.bus.redis_scripts``):

* **Offsets and epochs come from Redis.** One Lua script call checks the cmid index,
  takes the next offsets from the channel's meta hash, adds the stream entries
  ``0-<offset>`` and publishes them on the channel's shard channel, atomically. Every
  node sees the same offsets. A channel without meta in Redis (new, or Redis lost it)
  starts from the message store's position (``store.open_log``).
* **Group commit** (``gateway.bus._redis_chan``). While this node has an APPEND call in
  flight for a channel, its further appends to that channel queue; when the call
  returns, the queue goes out as one call (at most ``append_batch`` entries and about
  ``append_batch_bytes``), which appends them in queue order and publishes them as one
  live message. No timer: an idle channel's append is sent at once. Each append gets its
  own result (a duplicate cmid, also one earlier in the same batch, is found per entry);
  a call that fails fails each of its appends with :class:`StoreUnavailable`.
* **Durability** is Redis's (run it with ``appendonly yes``): an append is acknowledged
  once the script ran. The message store is written *behind*: per channel, the node
  holding a short lease (any node that has the channel loaded) copies entries beyond
  ``persisted`` into the store, advances ``persisted`` and only then trims the stream to
  the newest ``hot_window`` entries. A node that dies leaves its lease to expire; the
  next node that loads the channel, or audits it, takes over, and every channel a node
  appends to is marked in a registry (``gateway.bus._redis_dirty``) that every node's
  audit sweeps, so no channel is left unwritten because no live node had it loaded.
  Nothing is trimmed before it is in the store, so reads fall back to the store only
  below ``trimmed``.
* **Idempotency, within a window.** Each append records its cmid in the index of the
  current window (``idempotency_window``, 1 h by default; the index expires two windows
  later) and looks in this window's and the previous one's, so a retry within at least
  one window returns the original record, and nothing touches the store on the append
  path. (A per-append store lookup for channels past the hot window cost about 250 us of
  CPU per message here.) A retry older than that may append a second message.
* **Tails.** A node subscribes to a channel's shard channel only while it has a local
  tail on it, and unsubscribes when the last one closes. Published entries are applied
  in offset order; a gap (a lost message, a reconnect) is filled from the stream with
  ``XRANGE``, and every subscription (re)confirmation and a periodic audit re-read the
  head, so a tail never misses a record and never yields one twice.
* **Failures.** Redis unreachable: appends raise :class:`StoreUnavailable` (retryable).
  An append whose connection broke mid-flight (a whole batch, then) may or may not have
  happened; each one's retry with the same cmid returns its record if it did, so nothing
  is ever doubled.
"""

from __future__ import annotations

import functools
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio

from gateway.bus._redis_chan import (
    Chan,
    GroupCommit,
    Pending,
    decode_live,
    encode_body,
    entry,
    record,
)
from gateway.bus._redis_dirty import DirtyRegistry
from gateway.bus._tail import CursorTail
from gateway.bus.base import Appended, BusStatistics, EphemeralHandler, RevokeHandler
from gateway.bus.redis_scripts import ADVANCE, APPEND, INIT, PULL
from gateway.errors import GatewayError, StoreUnavailable
from gateway.model import Position, Record
from gateway.redis.client import RedisClient, RedisError, RedisUnavailable, Subscription
from gateway.store.base import MessageStore, WriteBehindResult

__all__ = ["RedisBus", "open_redis_bus"]

log = logging.getLogger("gateway.bus.redis")

REFUSED_RETRY = 30.0  # seconds before a channel the store refused is tried again
PERSIST_BACKOFF = 0.05  # first wait after a failed write-behind call; doubles up to 5 s


class RedisBus:
    """A :class:`gateway.bus.base.Bus` on Redis Streams, written behind to ``store``.

    Run :meth:`run` (the store writer and auditor), e.g. under :func:`open_redis_bus`.
    ``prefix`` namespaces every key (several deployments or tests can share a Redis).
    """

    def __init__(
        self,
        redis: RedisClient,
        store: MessageStore,
        *,
        prefix: str = "gw",
        hot_window: int = 1000,
        max_batch: int = 512,
        persist_interval: float = 0.2,
        audit_interval: float = 1.0,
        lease_ms: int = 5000,
        max_idle_channels: int = 1000,
        events_maxlen: int = 100_000,
        idempotency_window: float = 3600.0,
        append_batch: int = 64,
        append_batch_bytes: int = 256 * 1024,
    ) -> None:
        if hot_window < 1 or max_batch < 1:
            raise ValueError("hot_window and max_batch must be at least 1")
        if not 1 <= append_batch <= 1000 or append_batch_bytes < 1:
            raise ValueError("append_batch must be 1 to 1000, append_batch_bytes positive")
        self.append_batch = append_batch
        self.append_batch_bytes = append_batch_bytes
        self.redis = redis
        self.store = store
        self.prefix = prefix
        self.hot_window = hot_window
        self.max_batch = max_batch
        self.persist_interval = persist_interval
        self.audit_interval = audit_interval
        self.lease_ms = lease_ms
        self._registry = DirtyRegistry(redis, prefix, lease_ms)
        self.max_idle = max_idle_channels
        self.events_maxlen = events_maxlen  # 0: no integration event stream
        if idempotency_window < 1:
            raise ValueError("idempotency_window must be at least 1 second")
        self.idempotency_window = idempotency_window
        self.events_key = f"{prefix}:events"
        self.node = uuid.uuid4().hex
        self._chans: OrderedDict[str, Chan] = OrderedDict()
        self._by_live: dict[str, Chan] = {}
        self._dirty: set[str] = set()  # channels with records maybe not in the store
        self._work = trio.Event()
        self._sub = Subscription(redis, self._on_message, self._on_subscribed)
        self._closed = False
        self._stats = BusStatistics()
        self.backlog = 0  # records in Redis not yet in the store (channels loaded here)
        self._ephemeral_inflight = 0
        self._persisting = trio.Lock()
        self._failures = 0  # write-behind calls failed in a row
        self._persist_after = 0.0  # trio time before which the write-behind waits
        self._refused: dict[str, float] = {}  # channel -> trio time to try it again
        # One shard channel for control messages between nodes, every node subscribed.
        self._control = f"{prefix}:{{ctl}}:live"
        self._revoke_handler: RevokeHandler | None = None
        self._stats_dropped_ephemeral = 0
        self.append_calls = 0  # APPEND script calls that succeeded (one per batch)
        self._group = GroupCommit(
            self._append_call,
            redis.start_soon,
            max_n=append_batch,
            max_bytes=append_batch_bytes,
        )

    # -- Bus -----------------------------------------------------------------------------

    async def append(
        self,
        channel: str,
        *,
        sender: str,
        cmid: str,
        body: str,
        thread: str | None = None,
        kind: str = "",
        files: tuple[str, ...] = (),
    ) -> Appended:
        """Append to the channel's stream, or return the record already sent with cmid."""
        self._check_open()
        ch = await self._chan(channel)
        ts = time.time_ns() // 1_000_000
        fields: tuple[object, ...] = (sender, cmid, body, ts, thread)
        if kind or files:
            fields = (*fields, kind, files) if files else (*fields, kind)
        p = Pending(f"{sender}\0{cmid}", encode_body(fields))
        await self._group.submit(ch, p)
        if p.error is not None:
            raise StoreUnavailable(p.error.message) from p.error
        epoch, x = p.epoch, p.result
        if isinstance(x, int):
            self._stats.appends += 1
            rec = Record(
                channel, x, epoch, f"{epoch}-{x}", sender, cmid, body, ts, thread, kind, files
            )
            return Appended(rec)
        self._stats.duplicates += 1
        offset = x[0]
        if len(x) > 1:
            return Appended(record(channel, epoch, offset, x[1]), duplicate=True)
        found = await self.store.read(channel, offset - 1, 1)
        if found and found[0].offset == offset:
            return Appended(found[0], duplicate=True)
        raise StoreUnavailable(f"channel {channel}: offset {offset} is not readable")

    async def head(self, channel: str) -> Position:
        ch = await self._chan(channel)
        reply = await self._exec(ch, "HMGET", ch.meta, "epoch", "head")
        if reply[0] is None:
            return await self._init(ch)
        return Position(reply[0].decode(), int(reply[1]))

    async def read(self, channel: str, after: int, limit: int) -> Sequence[Record]:
        return await self._read(await self._chan(channel), after, limit)

    async def read_by_sender(
        self, channel: str, sender: str, before: int, limit: int
    ) -> Sequence[Record]:
        """From the message store: what is not yet written behind is not found."""
        return await self.store.read_by_sender(channel, sender, before, limit)

    def on_revoke(self, handler: RevokeHandler) -> None:
        self._revoke_handler = handler

    async def revoke(self, user: str, channel: str, ttl: float) -> None:
        """Record in ``<prefix>:{ctl}:rv:<user>`` (channel -> until, ms) and tell the
        other nodes on the control shard channel."""
        key = f"{self.prefix}:{{ctl}}:rv:{user}"
        data = msgspec.json.encode({"node": self.node, "user": user, "channel": channel})
        try:
            if ttl <= 0:  # a kick: tell the other nodes, record nothing
                replies = await self.redis.pipeline(
                    [("SPUBLISH", self._control, b"r" + data)], key=key
                )
            else:
                replies = await self._record_revocation(key, channel, ttl, data)
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc
        for r in replies:
            if isinstance(r, RedisError):
                raise StoreUnavailable(f"Redis refused the revocation: {r}")

    async def _record_revocation(
        self, key: str, channel: str, ttl: float, data: bytes
    ) -> list[Any]:
        now_s, now_us = await self.redis.execute("TIME", key=key)
        until = int(now_s) * 1000 + int(now_us) // 1000 + int(ttl * 1000)
        return list(
            await self.redis.pipeline(
                [
                    ("HSET", key, channel, until),
                    ("PEXPIRE", key, int(ttl * 1000), "GT"),
                    ("PEXPIRE", key, int(ttl * 1000), "NX"),
                    ("SPUBLISH", self._control, b"r" + data),
                ],
                key=key,
            )
        )

    async def revoked(self, user: str, channel: str) -> bool:
        key = f"{self.prefix}:{{ctl}}:rv:{user}"
        try:
            now, until = await self.redis.pipeline([("TIME",), ("HGET", key, channel)], key=key)
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc
        if until is None or isinstance(until, RedisError) or isinstance(now, RedisError):
            return False
        return int(until) > int(now[0]) * 1000 + int(now[1]) // 1000

    async def check(self) -> None:
        """Ready while Redis answers a PING (the seed node; in a cluster, every master)."""
        self._check_open()
        try:
            await self.redis.execute("PING")
            for addr in self.redis.masters():
                conn = await self.redis.connection(addr)
                await conn.execute("PING")
        except (RedisUnavailable, RedisError) as exc:
            raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc

    def ephemeral(self, channel: str, kind: str, user: str) -> None:
        """Publish on the channel's shard channel, in the background; dropped on error."""
        ch = self._chans.get(channel)
        if ch is None or self._closed or self._ephemeral_inflight >= 1000:
            self._stats_dropped_ephemeral += 1
            return
        self._ephemeral_inflight += 1
        data = f"~\n{self.node}\n{kind}\n{user}"
        self.redis.start_soon(self._send_ephemeral, ch, data)

    async def _send_ephemeral(self, ch: Chan, data: str) -> None:
        try:
            await self._exec(ch, "SPUBLISH", ch.live_name, data)
        except StoreUnavailable:
            self._stats_dropped_ephemeral += 1
        finally:
            self._ephemeral_inflight -= 1

    @asynccontextmanager
    async def open_tail(
        self, channel: str, after: int, on_ephemeral: EphemeralHandler | None = None
    ) -> AsyncIterator[CursorTail]:
        """Live records after ``after``; raises StoreUnavailable if the epoch changes."""
        ch = await self._chan(channel)
        tail = CursorTail(
            ch,
            after,
            max_batch=self.max_batch,
            visible=lambda: ch.known,
            read=functools.partial(self._read, ch),
            stopped=lambda: self._closed,
        )
        if on_ephemeral is not None:
            ch.handlers.append(on_ephemeral)
        ch.tails += 1
        self._stats.tails_open += 1
        if ch.tails == 1:
            self._by_live[ch.live_name] = ch
            ch.live = trio.Event()
            await self._sub.subscribe(ch.live_name)
        # Wait (a bounded time) until the subscription is confirmed, so what is published
        # from now on reaches this node live (typing included). If Redis is slow, go on:
        # the subscription and the fill complete later and nothing durable is missed.
        with trio.move_on_after(self.redis.timeout):
            await ch.live.wait()
        try:
            yield tail
        finally:
            tail.closed = True
            if on_ephemeral is not None:
                ch.handlers.remove(on_ephemeral)
            ch.tails -= 1
            self._stats.tails_open -= 1
            if ch.tails == 0:
                self._by_live.pop(ch.live_name, None)
                ch.known = None
                ch.hot.clear()
                ch.early.clear()
                with trio.CancelScope(shield=True):
                    await self._sub.unsubscribe(ch.live_name)
            self._evict_idle()

    def statistics(self) -> BusStatistics:
        s = self._stats
        return BusStatistics(
            appends=s.appends,
            duplicates=s.duplicates,
            tails_open=s.tails_open,
            channels=len(self._chans),
            commit_batches=s.commit_batches,
            persist_backlog=self.backlog,
            persist_failures=s.persist_failures,
            persist_refused=s.persist_refused,
            late_duplicates=s.late_duplicates,
        )

    async def aclose(self) -> None:
        """Refuse new appends, write what is pending to the store (best effort), end tails."""
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(self.redis.timeout) as scope:
            scope.shield = True
            await self._persist_dirty()
        for ch in self._chans.values():
            ch.lot.unpark_all()

    async def _append_call(self, ch: Chan, batch: list[Pending]) -> list[Any]:
        """The APPEND call of one group commit (``gateway.bus._redis_chan``). Nothing is
        retried after a failure: if the call was applied anyway, each client's retry with
        the same cmid finds its record in the cmid index."""
        args: list[Any] = [a for p in batch for a in (p.key, p.r)]
        args.append(int(2 * self.idempotency_window) + 60)
        ids_now, ids_prev = self._ids(ch)
        keys = [ch.meta, ch.log, ids_now, ch.live_name, ids_prev]
        await self._registry.mark(ch.name)  # before: a crash right after still leaves it
        for _ in range(8):
            reply: list[Any] = await self._script(APPEND, ch, keys, *args)
            if reply[0] == 1:
                self.append_calls += 1
                self._dirty.add(ch.name)
                self._work.set()
                return reply
            await self._init(ch)  # status 0: Redis has no meta for this channel
        raise StoreUnavailable(f"channel {ch.name}: the log keeps changing; retry")

    # -- the writer and auditor -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write records behind to the store and audit tails until :meth:`aclose`.

        Two loops: the audit never waits for a write-behind call, which a slow or failing
        store can hold for a minute (the retries), so the backlog gauge stays current and
        tails keep being checked meanwhile."""
        await self._sub.subscribe(self._control)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._audit_loop)
            task_status.started()
            while not self._closed:
                with trio.move_on_after(1.0):
                    await self._work.wait()
                self._work = trio.Event()
                if self._dirty and trio.current_time() >= self._persist_after:
                    behind = await self._persist_dirty()
                    if not behind:
                        await trio.sleep(self.persist_interval)  # let a batch gather
            nursery.cancel_scope.cancel()

    async def _audit_loop(self) -> None:
        while not self._closed:
            await trio.sleep(self.audit_interval)
            await self._audit()

    async def _persist_dirty(self) -> bool:
        """One write-behind round; True if a channel is still more than a batch behind
        (the next round then starts at once instead of waiting ``persist_interval``)."""
        async with self._persisting:  # one batch at a time: events stay in log order
            return await self._persist_batch()

    def _persist_failed(self, exc: Exception) -> None:
        """Back off before the next write-behind: jittered, doubling up to 5 s."""
        self._stats.persist_failures += 1
        self._failures += 1
        delay = min(5.0, PERSIST_BACKOFF * 2 ** min(self._failures, 10))
        self._persist_after = trio.current_time() + delay * random.uniform(0.5, 1.0)
        if self._failures == 1 or self._failures % 20 == 0:
            level = logging.WARNING if isinstance(exc, StoreUnavailable) else logging.ERROR
            log.log(
                level,
                "write-behind to the store failed; retrying",
                extra={"error": str(exc), "failures": self._failures},
            )

    async def _persist_batch(self) -> bool:
        now = trio.current_time()
        behind = False
        names = [n for n in self._dirty if self._refused.get(n, 0.0) <= now]
        self._dirty.difference_update(names)
        pulled: list[tuple[Chan, str, int, list[Record]]] = []
        for name in names:
            ch = self._chans.get(name)
            if ch is None:
                continue
            try:
                reply = await self._script(
                    PULL, ch, [ch.meta, ch.log, ch.lease], self.node, self.lease_ms, self.max_batch
                )
            except StoreUnavailable:
                self._dirty.add(name)
                continue
            if reply[0] == -1:
                continue  # another node writes it; the audit notices if it stops
            epoch = reply[0].decode()
            records = [entry(name, epoch, e) for e in reply[3]]
            if records:
                pulled.append((ch, epoch, records[-1].offset, records))
            if reply[2] > (records[-1].offset if records else reply[1]):
                self._dirty.add(name)  # more than one batch behind
                behind = behind or bool(records)  # a full batch: go on without a pause
        if not pulled:
            return False
        try:
            result = await self.store.write_behind([r for _, _, _, recs in pulled for r in recs])
        except GatewayError as exc:  # unavailable, or refused (say, AWS access denied)
            self._persist_failed(exc)
            self._dirty.update(ch.name for ch, _, _, _ in pulled)
            return False
        self._failures = 0
        self._persist_after = 0.0
        pulled = self._left_out(pulled, result)
        if not await self._emit_events([r for _, _, _, recs in pulled for r in recs]):
            self._dirty.update(ch.name for ch, _, _, _ in pulled)
            return False
        self._stats.commit_batches += 1
        for ch, epoch, upto, _ in pulled:
            try:
                await self._script(
                    ADVANCE,
                    ch,
                    [ch.meta, ch.log, ch.lease],
                    self.node,
                    epoch,
                    upto,
                    self.hot_window,
                    self.lease_ms,
                )
            except StoreUnavailable:
                self._dirty.add(ch.name)
        return behind

    def _left_out(
        self, pulled: list[tuple[Chan, str, int, list[Record]]], result: WriteBehindResult
    ) -> list[tuple[Chan, str, int, list[Record]]]:
        """Account for what the store left out: a refused channel waits
        :data:`REFUSED_RETRY` (its records stay in Redis, in the backlog); a late duplicate
        gets no ``message.created`` event."""
        for name, why in result.refused.items():
            self._stats.persist_refused += 1
            self._refused[name] = trio.current_time() + REFUSED_RETRY
            self._dirty.add(name)
            log.error("the store refused a channel", extra={"channel": name, "error": why})
        for r in result.duplicates:
            self._stats.late_duplicates += 1
            log.warning(
                "late duplicate left out of the store",
                extra={"channel": r.channel, "offset": r.offset, "cmid": r.cmid},
            )
        late = {(r.channel, r.offset) for r in result.duplicates}
        return [
            (ch, epoch, upto, [r for r in recs if (r.channel, r.offset) not in late])
            for ch, epoch, upto, recs in pulled
            if ch.name not in result.refused
        ]

    async def _emit_events(self, records: list[Record]) -> bool:
        """``message.created`` on the integration stream, once a record is in the store.

        At least once: a writer that dies before advancing ``persisted`` leaves the batch
        to be written and emitted again, so consumers de-duplicate by ``id``.
        """
        if not self.events_maxlen or not records:
            return True
        commands = [
            (
                "XADD", self.events_key, "MAXLEN", "~", self.events_maxlen, "*",
                "type", "message.created", "channel", r.channel, "id", r.id,
                "offset", r.offset, "epoch", r.epoch, "sender", r.sender, "ts", r.ts,
                "thread", r.thread or "", "body", r.body,
            )
            for r in records
        ]  # fmt: skip
        return await self._emit(commands)

    async def _emit(self, commands: list[tuple[Any, ...]]) -> bool:
        try:
            replies = await self.redis.pipeline(commands, key=self.events_key)
        except RedisUnavailable:
            return False
        return not any(isinstance(r, RedisError) for r in replies)

    async def _audit(self) -> None:
        """Notice records nobody wrote to the store, and records a tail may have missed."""
        backlog = 0
        for ch in list(self._chans.values()):
            try:
                m = await self._exec(ch, "HMGET", ch.meta, "epoch", "head", "persisted")
            except StoreUnavailable:
                return
            if m[0] is None:
                continue
            head, persisted = int(m[1]), int(m[2])
            backlog += head - persisted
            if head > persisted:
                self._dirty.add(ch.name)
            if ch.tails and ch.known is not None and head > ch.known:
                self._start_fill(ch)
        self.backlog = backlog
        await self._sweep()
        if self._dirty:
            self._work.set()

    async def _sweep(self) -> None:
        """Take over channels other nodes marked and left unwritten (``_redis_dirty``)."""
        try:
            for name, score in await self._registry.stale():
                ch = await self._chan(name)  # loads it: unwritten records become dirty here
                m = await self._exec(ch, "HMGET", ch.meta, "head", "persisted")
                if m[0] is None or int(m[0]) <= int(m[1]):
                    await self._registry.unmark(name, score)
                else:
                    self._dirty.add(name)
        except StoreUnavailable:
            return

    # -- live delivery ---------------------------------------------------------------------

    def _on_message(self, live: str, data: bytes) -> None:
        if live == self._control:
            self._on_control(data)
            return
        ch = self._by_live.get(live)
        if ch is None:
            return
        if data.startswith(b"~\n"):  # ephemeral: ~ LF node LF kind LF user
            _, node, kind, user = data.decode(errors="replace").split("\n", 3)
            if node != self.node:
                for handler in list(ch.handlers):
                    handler(kind, user)
            return
        try:  # one APPEND call's records: # epoch LF msgpack [[offset, r], ...]
            epoch, recs = decode_live(ch.name, data)
        except ValueError:
            log.warning("malformed live message ignored", extra={"channel": ch.name})
            self._start_fill(ch)  # read from the stream whatever it carried
            return
        if ch.receive(epoch, recs):
            self._start_fill(ch)

    def _on_control(self, data: bytes) -> None:
        if data[:1] == b"r" and self._revoke_handler is not None:
            try:
                msg = msgspec.json.decode(data[1:], type=dict[str, str])
            except msgspec.DecodeError:
                log.warning("malformed control message ignored")
                return
            if msg.get("node") != self.node:
                self._revoke_handler(msg.get("user", ""), msg.get("channel", ""))

    def _on_subscribed(self, live: str) -> None:
        ch = self._by_live.get(live)
        if ch is not None:
            self._start_fill(ch)

    def _start_fill(self, ch: Chan) -> None:
        if ch.filling:
            ch.refill = True
            return
        ch.filling = True
        self.redis.start_soon(self._fill, ch)

    async def _fill(self, ch: Chan) -> None:
        """Bring ``ch.known`` up to the log's head from the stream, then apply early ones."""
        try:
            while ch.tails:
                ch.refill = False
                if ch.known is None:
                    pos = await self.head(ch.name)
                    if pos.epoch != ch.epoch:
                        ch.epoch = pos.epoch
                        ch.lot.unpark_all()
                        return
                    ch.known = pos.offset
                else:
                    page = await self._stream(ch, ch.known, self.max_batch)
                    for rec in page:
                        if not ch.push(rec):  # trimmed past us: the rest comes from the store
                            ch.hot.clear()
                            ch.hot.append(rec)
                            ch.known = rec.offset
                    if len(page) == self.max_batch:
                        ch.refill = True
                early, ch.early = sorted(ch.early, key=lambda r: r.offset), []
                for rec in early:
                    if not ch.push(rec):
                        ch.refill = True
                ch.lot.unpark_all()
                if not ch.refill:
                    ch.live.set()
                    return
        except StoreUnavailable:
            pass  # the next (re)subscription or audit fills again
        finally:
            ch.filling = False

    # -- helpers -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the bus is closed")

    async def _chan(self, name: str) -> Chan:
        self._check_open()
        ch = self._chans.get(name)
        if ch is not None:
            self._chans.move_to_end(name)
            return ch
        ch = Chan(self.prefix, name, "", self.hot_window)
        reply = await self._exec(ch, "HMGET", ch.meta, "epoch", "head", "persisted")
        existing = self._chans.get(name)  # another task loaded it meanwhile
        if existing is not None:
            return existing
        self._chans[name] = ch
        if reply[0] is None:
            await self._init(ch)
        else:
            ch.epoch = reply[0].decode()
            if int(reply[1]) > int(reply[2]):
                self._dirty.add(name)  # someone left records unwritten: take over
                self._work.set()
        self._evict_idle()
        return ch

    async def _init(self, ch: Chan) -> Position:
        pos = await self.store.open_log(ch.name)
        ids_now, ids_prev = self._ids(ch)
        reply = await self._script(
            INIT, ch, [ch.meta, ch.log, ids_now, ids_prev], pos.epoch, pos.offset
        )
        if len(reply) > 2 and pos.offset == 0 and self.events_maxlen:  # this call created it
            event = ("type", "channel.created", "channel", ch.name, "epoch", pos.epoch)
            key = self.events_key
            await self._emit([("XADD", key, "MAXLEN", "~", self.events_maxlen, "*", *event)])
        epoch = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if ch.epoch and epoch != ch.epoch:
            ch.known = None
            ch.hot.clear()
            ch.lot.unpark_all()
        ch.epoch = epoch
        return Position(epoch, int(reply[1]))

    def _ids(self, ch: Chan) -> tuple[str, str]:
        """The cmid index keys of this idempotency window and of the one before."""
        n = int(time.time() // self.idempotency_window)
        return f"{ch.ids}{n}", f"{ch.ids}{n - 1}"

    def _evict_idle(self) -> None:
        excess = len(self._chans) - self.max_idle
        for name in list(self._chans):
            if excess <= 0:
                break
            ch = self._chans[name]
            if ch.tails or ch.busy or name in self._dirty:
                continue
            del self._chans[name]
            excess -= 1

    async def _read(self, ch: Chan, after: int, limit: int) -> list[Record]:
        """Contiguous records after ``after``: from memory, the stream, or (below what the
        stream still holds) the store; the persister may trim meanwhile, so each piece is
        checked to start where the previous one ended."""
        if limit <= 0:
            return []
        hot = ch.read_hot(after, limit)
        if hot is not None:
            return hot
        out: list[Record] = []
        cursor = after
        for _ in range(16):
            want = limit - len(out)
            m, entries = await self._pipeline(
                ch,
                ("HMGET", ch.meta, "epoch", "head"),
                ("XRANGE", ch.log, f"0-{cursor + 1}", "+", "COUNT", want),
            )
            if m[0] is None:
                await self._init(ch)
                continue
            epoch, head = m[0].decode(), int(m[1])
            if entries and int(entries[0][0][2:]) == cursor + 1:
                return out + [entry(ch.name, epoch, e) for e in entries]
            if cursor >= head:
                return out
            older = await self.store.read(ch.name, cursor, want)  # trimmed from the stream
            if not older or older[0].offset != cursor + 1:
                raise StoreUnavailable(f"channel {ch.name}: the store is missing history")
            out += older
            cursor = out[-1].offset
            if len(out) >= limit:
                return out
        raise StoreUnavailable(f"channel {ch.name}: history is being trimmed; retry")

    async def _stream(self, ch: Chan, after: int, limit: int) -> list[Record]:
        entries = await self._exec(ch, "XRANGE", ch.log, f"0-{after + 1}", "+", "COUNT", limit)
        return [entry(ch.name, ch.epoch, e) for e in entries]

    async def _exec(self, ch: Chan, *args: Any) -> Any:
        try:
            return await self.redis.execute(*args, key=ch.meta)
        except (RedisUnavailable, RedisError) as exc:
            raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc

    async def _pipeline(self, ch: Chan, *commands: tuple[Any, ...]) -> list[Any]:
        try:
            replies = await self.redis.pipeline(commands, key=ch.meta)
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc
        for r in replies:
            if isinstance(r, RedisError):
                raise StoreUnavailable(f"Redis refused a read: {r}")
        return replies

    async def _script(self, script: Any, ch: Chan, keys: list[str], *args: Any) -> Any:
        try:
            return await self.redis.run_script(script, keys, args)
        except (RedisUnavailable, RedisError) as exc:
            raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc


@asynccontextmanager
async def open_redis_bus(
    redis: RedisClient, store: MessageStore, **options: Any
) -> AsyncIterator[RedisBus]:
    """Run a :class:`RedisBus` (its writer in a nursery owned here); close it on exit."""
    bus = RedisBus(redis, store, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        try:
            yield bus
        finally:
            await bus.aclose()
            nursery.cancel_scope.cancel()
