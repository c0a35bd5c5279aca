"""In-process bus: the embedded default, durable through a :class:`MessageStore`.

How it keeps the :class:`gateway.bus.base.Bus` guarantees:

* **Offsets.** Each channel's head is loaded lazily from ``store.open_log`` (one load per
  channel, however many tasks ask at once). ``append`` takes the next offset and queues the
  record in the same synchronous step, so queue order is log order.
* **Group commit.** One writer task takes everything queued (all channels, at most
  ``max_batch``), writes it with one ``store.write`` call (one transaction), then resolves
  every append of the batch and wakes the tails. An append returns only after its batch
  is durable, and nobody sees a record before that.
* **Failures.** If a batch write raises :class:`StoreUnavailable`, its appends and every
  append queued behind them on the same channels raise it too; those channels are marked
  stale and reload their head from the store before the next offset is handed out, so no
  gap or hole is left (also when the store committed and still reported an error).
* **Idempotency.** ``(channel, sender, cmid)`` is looked up in a bounded map of recently
  committed records, then among in-flight appends (a concurrent twin waits for the first
  and returns its record with ``duplicate=True``), then, only for channels whose history
  is not all in that map, with ``store.find_cmid``. The twin is registered as in flight
  before that await, so two identical appends always make one record.
* **Tails** never hold a queue: each keeps its own cursor, parks on the channel's
  :class:`trio.lowlevel.ParkingLot`, and reads from the hot window (or the store when it
  has fallen behind it). A slow tail costs nothing to appenders or to other tails.

One bus per store: a second process writing the same store would assign clashing offsets
(the store refuses them, and appends fail instead of forking the log).
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from gateway.bus._tail import CursorTail
from gateway.bus.base import Appended, BusStatistics, EphemeralHandler, RevokeHandler
from gateway.errors import StoreUnavailable
from gateway.model import Position, Record
from gateway.store.base import MessageStore

__all__ = ["MemoryBus", "open_memory_bus"]

_Key = tuple[str, str]  # (sender, cmid)


class _Pending:
    """One append between taking its cmid and being resolved by the writer."""

    __slots__ = ("ch", "done", "error", "key", "record", "retry")

    def __init__(self, ch: _Channel, key: _Key) -> None:
        self.ch = ch
        self.key = key
        self.record: Record | None = None
        self.error: StoreUnavailable | None = None
        self.retry = False  # gave up before being queued: a waiting twin tries itself
        self.done = trio.Event()


class _Channel:
    """In-memory state of one channel log."""

    def __init__(self, name: str, pos: Position, window: int) -> None:
        self.name = name
        self.window = window
        self.epoch = pos.epoch
        self.head = pos.offset  # last offset handed out
        self.committed = pos.offset  # last offset durable in the store
        self.hot: deque[Record] = deque(maxlen=window)  # committed, contiguous, newest last
        self.cmids: OrderedDict[_Key, Record] = OrderedDict()
        self.cmid_floor = pos.offset  # a cmid of an offset <= this may be only in the store
        self.inflight: dict[_Key, _Pending] = {}
        self.stale = False  # a write failed: reload the head before the next offset
        self.lot = trio.lowlevel.ParkingLot()  # tails wait here for commits
        self.tails = 0  # open tails: a channel with tails or in-flight appends is never evicted

    def remember(self, record: Record) -> None:
        self.cmids[(record.sender, record.cmid)] = record
        if len(self.cmids) > self.window:
            _, old = self.cmids.popitem(last=False)
            self.cmid_floor = max(self.cmid_floor, old.offset)

    def reload(self, pos: Position) -> None:
        if pos.epoch != self.epoch or pos.offset != self.committed:
            self.epoch = pos.epoch  # a changed epoch ends every tail (see _Tail)
            self.hot.clear()
            self.cmids.clear()
            self.cmid_floor = pos.offset
        self.head = self.committed = pos.offset
        self.stale = False
        self.lot.unpark_all()

    def read_hot(self, after: int, limit: int) -> list[Record] | None:
        """Committed records after ``after`` from memory, or None if not all in memory."""
        hot = self.hot
        if after >= self.committed:
            return []
        if not hot or hot[0].offset > after + 1:
            return None
        start = after + 1 - hot[0].offset
        return [hot[i] for i in range(start, min(len(hot), start + limit))]


class MemoryBus:
    """A :class:`gateway.bus.base.Bus` in this process, durable through ``store``.

    ``hot_window`` records per channel stay in memory (for reads, tails and cmid
    lookups); ``max_batch`` bounds one group commit. :meth:`run` (the writer) must be
    running, e.g. under :func:`open_memory_bus`. The bus does not close ``store``.
    """

    def __init__(
        self,
        store: MessageStore,
        *,
        hot_window: int = 1000,
        max_batch: int = 512,
        max_idle_channels: int = 1000,
    ):
        if hot_window < 1 or max_batch < 1:
            raise ValueError("hot_window and max_batch must be at least 1")
        self._store = store
        self._window = hot_window
        self._max_batch = max_batch
        self._max_pending = 8 * max_batch  # appends queued or being written, at most
        # Least recently used first. Idle channels (no tail, nothing in flight) beyond
        # max_idle_channels are forgotten; their state reloads from the store on next use.
        self._channels: OrderedDict[str, _Channel] = OrderedDict()
        self._max_idle = max_idle_channels
        self._loading: dict[str, trio.Event] = {}
        self._queue: deque[_Pending] = deque()
        self._writing: list[_Pending] = []
        self._pending = 0
        self._work = trio.lowlevel.ParkingLot()  # the writer waits here for appends
        self._space = trio.lowlevel.ParkingLot()  # appends wait here when _pending is full
        self._running = False
        self._closed = False
        self._stopped = trio.Event()
        self._stats = BusStatistics()
        self._revoked: dict[tuple[str, str], float] = {}  # (user, channel) -> until

    # -- Bus -------------------------------------------------------------------------

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
        """Append durably, or return the record already sent with this cmid."""
        key = (sender, cmid)
        while True:
            ch = await self._channel(channel)
            found = ch.cmids.get(key)
            if found is not None:
                self._stats.duplicates += 1
                return Appended(found, duplicate=True)
            twin = ch.inflight.get(key)
            if twin is None:
                break
            await twin.done.wait()
            if twin.retry:
                continue
            if twin.error is not None:
                raise StoreUnavailable(twin.error.message) from twin.error
            assert twin.record is not None
            self._stats.duplicates += 1
            return Appended(twin.record, duplicate=True)

        pending = _Pending(ch, key)
        ch.inflight[key] = pending
        try:
            checked = 0  # the store was searched for this cmid below this offset
            while True:
                if ch.stale:
                    await self._channel(channel)
                elif ch.cmid_floor > checked:
                    checked = ch.cmid_floor
                    found = await self._store.find_cmid(channel, sender, cmid)
                    if found is not None:
                        ch.remember(found)
                        pending.record = found
                        break
                elif self._pending >= self._max_pending:
                    await self._space.park()
                    self._check_open()
                else:
                    self._check_open()  # the writer must still be there to take it
                    break
        except BaseException:
            del ch.inflight[key]
            pending.retry = True
            pending.done.set()
            raise
        if pending.record is not None:  # found in the store: a duplicate
            del ch.inflight[key]
            pending.done.set()
            self._stats.duplicates += 1
            return Appended(pending.record, duplicate=True)

        # No await from here to the queue: offsets are taken in log order.
        ch.head += 1
        offset = ch.head
        now_ms = time.time_ns() // 1_000_000
        record = Record(
            channel,
            offset,
            ch.epoch,
            f"{ch.epoch}-{offset}",
            sender,
            cmid,
            body,
            now_ms,
            thread,
            kind,
            files,
        )
        pending.record = record
        self._queue.append(pending)
        self._pending += 1
        self._work.unpark()
        await pending.done.wait()
        if pending.error is not None:
            raise StoreUnavailable(pending.error.message) from pending.error
        return Appended(record)

    async def head(self, channel: str) -> Position:
        """Epoch and last committed offset (0 for an empty log); creates the log if needed."""
        ch = await self._channel(channel)
        return Position(ch.epoch, ch.committed)

    async def read(self, channel: str, after: int, limit: int) -> Sequence[Record]:
        """Committed records with ``offset > after``, in order, at most ``limit``."""
        return await self._read(await self._channel(channel), after, limit)

    async def read_by_sender(
        self, channel: str, sender: str, before: int, limit: int
    ) -> Sequence[Record]:
        """From the store (every acked record is there: appends commit before the ack)."""
        return await self._store.read_by_sender(channel, sender, before, limit)

    def on_revoke(self, handler: RevokeHandler) -> None:
        """One process, no other nodes: nothing to call."""

    async def revoke(self, user: str, channel: str, ttl: float) -> None:
        await trio.lowlevel.checkpoint()
        if ttl <= 0:
            return
        now = time.monotonic()
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._revoked[(user, channel)] = now + ttl

    async def revoked(self, user: str, channel: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._revoked.get((user, channel), 0.0) > time.monotonic()

    async def check(self) -> None:
        """Ready while the writer runs."""
        self._check_open()

    def ephemeral(self, channel: str, kind: str, user: str) -> None:
        """One process, no other nodes: nothing to do."""

    @asynccontextmanager
    async def open_tail(
        self, channel: str, after: int, on_ephemeral: EphemeralHandler | None = None
    ) -> AsyncIterator[CursorTail]:
        """Live records with ``offset > after``, in order, in batches of <= ``max_batch``.

        Iteration stops when the bus closes; it raises :class:`StoreUnavailable` if the
        log's epoch changes (the log was lost) or a catch-up read from the store fails.
        """
        ch = await self._channel(channel)
        tail = CursorTail(
            ch,
            after,
            max_batch=self._max_batch,
            visible=lambda: ch.committed,
            read=functools.partial(self._read, ch),
            stopped=lambda: self._closed,
        )
        ch.tails += 1
        self._stats.tails_open += 1
        try:
            yield tail
        finally:
            tail.closed = True
            ch.tails -= 1
            self._stats.tails_open -= 1
            self._evict_idle()

    def statistics(self) -> BusStatistics:
        """A snapshot of the counters."""
        s = self._stats
        return BusStatistics(
            appends=s.appends,
            duplicates=s.duplicates,
            tails_open=s.tails_open,
            channels=len(self._channels),
            commit_batches=s.commit_batches,
        )

    async def aclose(self) -> None:
        """Refuse new appends, commit those already queued, stop the writer, end tails."""
        if not self._closed:
            self._closed = True
            self._work.unpark_all()
            self._space.unpark_all()
            for ch in self._channels.values():
                ch.lot.unpark_all()
        if self._running:
            await self._stopped.wait()

    # -- the writer --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the group-commit writer until :meth:`aclose` (use with ``nursery.start``)."""
        if self._running:
            raise RuntimeError("MemoryBus.run was already started")
        self._running = True
        try:
            task_status.started()
            while True:
                while not self._queue:
                    if self._closed:
                        return
                    await self._work.park()
                n = min(len(self._queue), self._max_batch)
                self._writing = [self._queue.popleft() for _ in range(n)]
                await self._commit(self._writing)
                self._writing = []
        finally:
            self._closed = True
            left = [p for p in self._writing if not p.done.is_set()] + list(self._queue)
            self._queue.clear()
            self._fail(left, StoreUnavailable("the bus stopped before the write completed"))
            for ch in self._channels.values():
                ch.stale = True
                ch.lot.unpark_all()
            self._stopped.set()

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            await self._store.write([p.record for p in batch if p.record is not None])
        except StoreUnavailable as exc:
            failed = {p.ch for p in batch}
            behind = [p for p in self._queue if p.ch in failed]
            self._queue = deque(p for p in self._queue if p.ch not in failed)
            for ch in failed:
                ch.stale = True
            self._fail(batch + behind, exc)
            return
        touched: set[_Channel] = set()
        for p in batch:
            ch, record = p.ch, p.record
            assert record is not None
            ch.committed = record.offset
            ch.hot.append(record)
            ch.remember(record)
            del ch.inflight[p.key]
            p.done.set()
            touched.add(ch)
        self._stats.appends += len(batch)
        self._stats.commit_batches += 1
        self._pending -= len(batch)
        self._space.unpark_all()
        for ch in touched:
            ch.lot.unpark_all()

    def _fail(self, victims: list[_Pending], exc: StoreUnavailable) -> None:
        for p in victims:
            p.error = exc
            if p.ch.inflight.get(p.key) is p:
                del p.ch.inflight[p.key]
            p.done.set()
        self._pending -= len(victims)
        self._space.unpark_all()

    # -- helpers -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the bus is closed")
        if not self._running:
            raise RuntimeError("MemoryBus.run is not running (use open_memory_bus)")

    async def _channel(self, name: str) -> _Channel:
        """The channel's state, loading (or reloading, if stale) its head from the store."""
        while True:
            self._check_open()
            ch = self._channels.get(name)
            if ch is not None and not ch.stale:
                self._channels.move_to_end(name)
                return ch
            loading = self._loading.get(name)
            if loading is not None:
                await loading.wait()
                continue
            loading = self._loading[name] = trio.Event()
            try:
                pos = await self._store.open_log(name)
            finally:
                del self._loading[name]
                loading.set()
            if ch is None:
                self._channels[name] = _Channel(name, pos, self._window)
                self._evict_idle()
            elif not self._closed:
                ch.reload(pos)

    def _evict_idle(self) -> None:
        """Forget the least recently used idle channels beyond ``max_idle_channels``."""
        excess = len(self._channels) - self._max_idle
        if excess <= 0:
            return
        for name in list(self._channels):
            if excess <= 0:
                break
            ch = self._channels[name]
            if ch.tails or ch.inflight or name in self._loading:
                continue
            del self._channels[name]
            excess -= 1

    async def _read(self, ch: _Channel, after: int, limit: int) -> Sequence[Record]:
        if limit <= 0:
            return []
        records = ch.read_hot(after, limit)
        if records is not None:
            return records
        committed = ch.committed
        return [r for r in await self._store.read(ch.name, after, limit) if r.offset <= committed]


@asynccontextmanager
async def open_memory_bus(
    store: MessageStore,
    *,
    hot_window: int = 1000,
    max_batch: int = 512,
    max_idle_channels: int = 1000,
) -> AsyncIterator[MemoryBus]:
    """Run a :class:`MemoryBus` (its writer in a nursery owned here); close it on exit.

    A normal exit commits what is queued first; an exit by exception does not wait.
    """
    bus = MemoryBus(
        store, hot_window=hot_window, max_batch=max_batch, max_idle_channels=max_idle_channels
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        try:
            yield bus
        except BaseException:
            nursery.cancel_scope.cancel()  # no drain: queued appends fail, nothing waits
            raise
        await bus.aclose()
