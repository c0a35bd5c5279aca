"""Per-channel state of the Redis bus: the live view of the log, and group commit.

**Group commit.** While this node has an APPEND call in flight for a channel, its
further appends to that channel wait in the channel's queue; when the call returns, the
queue goes out as the next call (in a task of its own), in batches of at most ``max_n``
entries and about ``max_bytes`` of records. Nothing waits for a batch to fill: an idle
channel's append is sent at once, alone, by the appending task. Each entry gets its own
result from the script (its new offset, or a duplicate's offset and record) or, if the
call failed, the call's :class:`StoreUnavailable`. As in the in-process bus, batching is
what accumulates behind the write in flight; unlike it, offsets are taken in Redis.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from gateway.bus.base import EphemeralHandler
from gateway.errors import StoreUnavailable
from gateway.model import Record

__all__ = [
    "Body",
    "Chan",
    "GroupCommit",
    "Pending",
    "decode_live",
    "encode_body",
    "entry",
    "record",
]

log = logging.getLogger("gateway.bus.redis")


class Body(msgspec.Struct, array_like=True, frozen=True):
    """A record as stored in the stream (``r``): written as the msgpack array
    ``[sender, cmid, body, ts, thread]``, with ``kind`` (and ``files``) appended only if
    not empty."""

    sender: str
    cmid: str
    body: str
    ts: int
    thread: str | None = None
    kind: str = ""
    files: tuple[str, ...] = ()


encode_body = msgspec.msgpack.Encoder().encode  # of the tuple: no Struct built to write
_decode_body = msgspec.msgpack.Decoder(Body).decode
_decode_batch = msgspec.msgpack.Decoder(list[tuple[int, Body]]).decode


class Pending:
    """One append: queued, then in a call (``taken``), then resolved (``done``)."""

    __slots__ = ("done", "epoch", "error", "key", "r", "result", "taken")

    def __init__(self, key: str, r: bytes) -> None:
        self.key = key  # sender NUL cmid
        self.r = r  # the record: msgpack of Body
        self.taken = False
        self.done = trio.Event()
        self.epoch = ""
        self.result: Any = None  # the script's x_i: an offset, or [offset, r?] if duplicate
        self.error: StoreUnavailable | None = None


class Chan:
    """What this node knows of one channel (keys under ``prefix``)."""

    def __init__(self, prefix: str, name: str, epoch: str, hot_window: int) -> None:
        p = f"{prefix}:{{{name}}}"
        self.name = name
        self.meta, self.log, self.ids = f"{p}:m", f"{p}:log", f"{p}:ids:"
        self.live_name, self.lease = f"{p}:live", f"{p}:lease"
        self.epoch = epoch
        self.known: int | None = None  # highest offset known to exist, while subscribed
        self.hot: deque[Record] = deque(maxlen=hot_window)  # contiguous, newest last
        self.lot = trio.lowlevel.ParkingLot()
        self.tails = 0
        self.filling = False
        self.refill = False
        self.early: list[Record] = []  # published before the first fill finished
        self.handlers: list[EphemeralHandler] = []  # of the open tails
        self.live = trio.Event()  # set once subscribed and filled up to the head
        self.busy = False  # an APPEND call of this node is in flight
        self.waiting: deque[Pending] = deque()  # appends for the next call, while busy

    def push(self, rec: Record) -> bool:
        """Apply a record in offset order; False if it leaves a gap (fill needed)."""
        known = self.known
        if known is None or rec.offset <= known:
            return True
        if rec.offset != known + 1:
            return False
        self.hot.append(rec)
        self.known = rec.offset
        return True

    def receive(self, epoch: str, recs: list[Record]) -> bool:
        """Apply one live message's records (contiguous, in order); True if a fill from
        the stream is needed (a gap before them)."""
        if epoch != self.epoch:
            self.epoch = epoch  # the log was recreated: tails end, actors restart
            self.known = None
            self.hot.clear()
            self.lot.unpark_all()
            return False
        if self.filling or self.known is None:
            self.early += recs
            return False
        known, gap = self.known, False
        for i, rec in enumerate(recs):
            if not self.push(rec):
                self.early += recs[i:]
                gap = True
                break
        if self.known != known:
            self.lot.unpark_all()
        return gap

    def read_hot(self, after: int, limit: int) -> list[Record] | None:
        hot = self.hot
        if not hot or hot[0].offset > after + 1 or after >= hot[-1].offset:
            return None
        start = after + 1 - hot[0].offset
        return [hot[i] for i in range(start, min(len(hot), start + limit))]


Call = Callable[[Chan, list[Pending]], Awaitable[list[Any]]]


class GroupCommit:
    """Runs ``call(chan, batch)`` (the APPEND script; it returns ``{1, epoch, x_1, ...}``
    or raises StoreUnavailable) for each channel's appends, one call at a time per
    channel; ``spawn`` starts a background task (it raises RuntimeError once closed)."""

    def __init__(
        self, call: Call, spawn: Callable[..., None], *, max_n: int, max_bytes: int
    ) -> None:
        self.call = call
        self.spawn = spawn
        self.max_n = max_n
        self.max_bytes = max_bytes

    async def submit(self, ch: Chan, p: Pending) -> None:
        """Return once ``p`` has its result or its error (cancelled: see the comments)."""
        if ch.busy:  # a call is in flight: go with the next one
            ch.waiting.append(p)
            try:
                await p.done.wait()
            except BaseException:
                if not p.taken:  # never sent: nothing was appended
                    ch.waiting.remove(p)
                raise  # else its call goes on for the others; it may have appended
            return
        ch.busy = True  # idle: send it now, alone; what queues meanwhile goes next
        try:
            await self._commit(ch, [p])
        finally:
            self._next(ch)

    def _next(self, ch: Chan) -> None:
        if not ch.waiting:
            ch.busy = False
            return
        try:
            self.spawn(self._drain, ch)
        except RuntimeError:  # the client's nursery is closed
            self._fail_waiting(ch)

    async def _drain(self, ch: Chan) -> None:
        try:
            while ch.waiting:
                await self._commit(ch, self._take(ch.waiting))
        finally:  # empty, or cancelled (the client closes): what waits was never sent
            self._fail_waiting(ch)

    def _take(self, waiting: deque[Pending]) -> list[Pending]:
        batch: list[Pending] = []
        size = 0
        while waiting and len(batch) < self.max_n and size < self.max_bytes:
            p = waiting.popleft()
            p.taken = True
            size += len(p.r) + len(p.key)
            batch.append(p)
        return batch

    async def _commit(self, ch: Chan, batch: list[Pending]) -> None:
        try:
            reply = await self.call(ch, batch)
            if len(reply) != len(batch) + 2:
                raise ValueError(f"{len(reply) - 2} results for {len(batch)} appends")
            epoch = reply[1].decode()
        except StoreUnavailable as exc:
            _fail(batch, exc)
            return
        except Exception as exc:  # a bug, or a reply not understood: ack nothing
            log.exception("append call failed", extra={"channel": ch.name})
            _fail(batch, StoreUnavailable(f"the append failed: {exc!r}"))
            return
        except BaseException:
            _fail(batch, StoreUnavailable("the append was interrupted; retry"))
            raise
        for p, x in zip(batch, reply[2:], strict=True):
            p.epoch = epoch
            p.result = x
            p.done.set()

    def _fail_waiting(self, ch: Chan) -> None:
        _fail(list(ch.waiting), StoreUnavailable("the Redis client is closed"))
        ch.waiting.clear()
        ch.busy = False


def _fail(batch: list[Pending], exc: StoreUnavailable) -> None:
    for p in batch:
        p.taken = True
        if not p.done.is_set():
            p.error = exc
            p.done.set()


def record(channel: str, epoch: str, offset: int, r: bytes) -> Record:
    b = _decode_body(r)
    eid = f"{epoch}-{offset}"
    return Record(
        channel, offset, epoch, eid, b.sender, b.cmid, b.body, b.ts, b.thread, b.kind, b.files
    )


def entry(channel: str, epoch: str, e: list[Any]) -> Record:
    """A stream entry ``[b"0-<offset>", [b"k", key, b"r", r]]`` as a Record."""
    return record(channel, epoch, int(e[0][2:]), e[1][3])


def decode_live(channel: str, data: bytes) -> tuple[str, list[Record]]:
    """A live message ``# epoch LF msgpack [[offset, r], ...]``: its epoch and records.

    Raises ValueError (msgspec.DecodeError included) if it is malformed."""
    if data[:1] != b"#":
        raise ValueError("not a live batch")
    nl = data.index(b"\n")
    epoch = data[1:nl].decode()
    pairs = _decode_batch(memoryview(data)[nl + 1 :])
    return epoch, [
        Record(
            channel,
            o,
            epoch,
            f"{epoch}-{o}",
            b.sender,
            b.cmid,
            b.body,
            b.ts,
            b.thread,
            b.kind,
            b.files,
        )
        for o, b in pairs
    ]
