"""Channel actor: one per active channel on this node.

It tails the channel's log on the bus and fans every committed record out to the local
subscribers. Each outgoing WebSocket frame is encoded and framed once per message and per
codec in use, then the same ``bytes`` are handed to every subscriber's non-blocking
writer: fan-out never awaits a subscriber, so a slow one cannot stall the channel.

It keeps the last ``hot_window`` records (with their frames) for catch-up; older
positions are replayed from the bus in pages, paced by the subscriber's own outbox.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import trio

from gateway.bus import Bus
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.model import Position, Record
from gateway.protocol import JSON, MSGPACK, build_frame
from gateway.protocol import frames as f
from gateway.protocol.events import record_frame

if TYPE_CHECKING:
    from gateway.protocol.codec import Codec

__all__ = ["ChannelActor", "ChannelStatistics", "Subscriber"]

log = logging.getLogger("gateway.channel")

_CODECS = (JSON, MSGPACK)
TYPING_THROTTLE = 1.0  # seconds between typing events per user per channel
TYPING_TTL_MS = 5000  # a typing signal lapses this long after it was sent
REPLAY_PAGE = 500
REPLAY_PACE_BYTES = 256 * 1024  # replay pauses while a subscriber has this much queued
CATCH_UP_WAIT = 5.0  # how long a subscribe may wait for this node to reach its position


class Subscriber(Protocol):
    """What a channel actor needs from a connection."""

    codec: Codec
    outbox_bytes: int

    def send_frame(self, data: bytes) -> None:
        """Queue one complete frame; never blocks; may shed the connection."""

    def send_ephemeral(self, data: bytes) -> None:
        """Like send_frame, but dropped when the connection is under pressure."""

    async def wait_outbox_below(self, nbytes: int) -> None:
        """Wait until fewer than ``nbytes`` are queued; raise if the connection ends."""

    def channel_failed(self, channel: str) -> None:
        """The channel actor died: tell the client to resubscribe."""


class _Entry:
    """A committed record and its lazily built frames (one per codec)."""

    __slots__ = ("frames", "record")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.frames: list[bytes | None] = [None, None]

    def frame(self, index: int) -> bytes:
        data = self.frames[index]
        if data is None:
            ev = record_frame(self.record)
            codec = _CODECS[index]
            data = self.frames[index] = build_frame(codec.encode(ev), codec.binary)
        return data


class ChannelStatistics:
    __slots__ = ("epoch", "name", "offset", "subscribers", "window")

    def __init__(self, name: str, epoch: str, offset: int, subscribers: int, window: int):
        self.name, self.epoch, self.offset = name, epoch, offset
        self.subscribers, self.window = subscribers, window


class ChannelActor:
    """Owns the local fan-out of one channel. Start with ``nursery.start(actor.run)``."""

    def __init__(self, name: str, bus: Bus, metrics: Metrics, *, hot_window: int) -> None:
        self.name = name
        self._bus = bus
        self._metrics = metrics
        self.epoch = ""
        self.offset = 0  # last offset fanned out on this node
        self._window: collections.deque[_Entry] = collections.deque(maxlen=hot_window)
        # One ordered set of subscribers per codec, so fan-out needs no per-recipient branch.
        self._subs: tuple[dict[Subscriber, None], dict[Subscriber, None]] = ({}, {})
        self._typing_last: dict[str, float] = {}
        self.attaching = 0
        self.empty_since = time.monotonic()
        self.stopping = False
        self.cancel_scope = trio.CancelScope()
        self._advanced: trio.Event | None = None  # set when self.offset moves

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[ChannelActor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with self.cancel_scope:
            head = await self._bus.head(self.name)
            self.epoch, self.offset = head.epoch, head.offset
            if head.offset:
                for rec in await self._bus.read(
                    self.name, max(0, head.offset - (self._window.maxlen or 0)), 1 << 30
                ):
                    if rec.offset <= head.offset:
                        self._window.append(_Entry(rec))
            async with self._bus.open_tail(self.name, self.offset, self._remote) as tail:
                task_status.started(self)
                async for batch in tail:
                    self._fanout(batch)

    def stop(self) -> None:
        self.stopping = True
        self.cancel_scope.cancel()

    def fail_subscribers(self) -> None:
        """After a crash: every subscriber is told to resubscribe from its position."""
        self.stopping = True
        for subs in self._subs:
            for sub in list(subs):
                sub.channel_failed(self.name)
            subs.clear()

    @property
    def subscriber_count(self) -> int:
        return len(self._subs[0]) + len(self._subs[1])

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            self.name, self.epoch, self.offset, self.subscriber_count, len(self._window)
        )

    # ------------------------------------------------------------------ hot path

    def _fanout(self, batch: Sequence[Record]) -> None:
        j_subs, m_subs = self._subs
        window = self._window
        delivered = 0
        for rec in batch:
            if rec.offset <= self.offset:
                continue  # already delivered (tail overlap)
            entry = _Entry(rec)
            window.append(entry)
            self.offset = rec.offset
            if j_subs:
                data = entry.frame(0)
                for sub in j_subs:
                    sub.send_frame(data)
            if m_subs:
                data = entry.frame(1)
                for sub in m_subs:
                    sub.send_frame(data)
            delivered += len(j_subs) + len(m_subs)
        if self._advanced is not None:
            self._advanced.set()
            self._advanced = None
        if delivered:
            self._metrics.frames_out.inc(delivered)
            self._metrics.fanout_latency.observe(max(0.0, time.time() - batch[-1].ts / 1000))

    # ------------------------------------------------------------------ subscribers

    async def attach(self, sub: Subscriber, since: Position | None, replay_max: int) -> None:
        """Subscribe ``sub``: replay what came after ``since``, send ``subscribed``, then
        go live. Exactly once and in order: the switch to live happens with no await
        between the last replayed frame and joining the fan-out set. Replay is paced by
        the subscriber's outbox, so a long catch-up never sheds the subscriber."""
        self.attaching += 1
        try:
            since, reset = await self._check_position(since)
            cursor = self.offset if since is None else since.offset
            index = sub.codec.index
            replayed = 0
            truncated = False
            while True:
                window = self._window
                oldest = window[0].record.offset if window else self.offset + 1
                if cursor + 1 >= oldest:
                    # From the hot window, synchronously, until the outbox needs a pause.
                    i, n = cursor + 1 - oldest, len(window)
                    while i < n and sub.outbox_bytes < REPLAY_PACE_BYTES:
                        sub.send_frame(window[i].frame(index))
                        cursor = window[i].record.offset
                        replayed += 1
                        i += 1
                    if i >= n:
                        break  # caught up: join live below, with no await in between
                elif replayed >= replay_max:
                    truncated = True
                    break
                else:
                    page = await self._bus.read(self.name, cursor, min(REPLAY_PAGE, replay_max))
                    self._check_running()
                    for rec in page:
                        if rec.offset > self.offset:
                            break  # not fanned out here yet: the window will have it
                        sub.send_frame(_Entry(rec).frame(index))
                        cursor = rec.offset
                        replayed += 1
                    if not page:
                        break
                await sub.wait_outbox_below(REPLAY_PACE_BYTES // 4)
                self._check_running()
            frame = f.Subscribed(
                channel=self.name,
                epoch=self.epoch,
                offset=self.offset,
                replayed=replayed,
                reset=reset,
                truncated=truncated,
            )
            sub.send_frame(build_frame(sub.codec.encode(frame), sub.codec.binary))
            self._subs[index][sub] = None
        finally:
            self.attaching -= 1

    async def _check_position(self, since: Position | None) -> tuple[Position | None, bool]:
        """Validate a resume position: another epoch, or an offset the log never had, is
        a reset; an offset this node has not fanned out yet (an ack can overtake the
        tail) is waited for, briefly."""
        if since is None:
            return None, False
        if since.epoch != self.epoch:
            return None, True
        if since.offset <= self.offset:
            return since, False
        head = await self._bus.head(self.name)
        if head.epoch != self.epoch or since.offset > head.offset:
            return None, True
        with trio.move_on_after(CATCH_UP_WAIT):
            while self.offset < since.offset:
                if self._advanced is None:
                    self._advanced = trio.Event()
                await self._advanced.wait()
        self._check_running()
        if self.offset < since.offset:
            raise StoreUnavailable(f"channel {self.name} is behind its log; retry")
        return since, False

    def _check_running(self) -> None:
        if self.stopping:
            raise trio.BrokenResourceError(f"channel {self.name} is restarting")

    def detach(self, sub: Subscriber) -> None:
        self._subs[sub.codec.index].pop(sub, None)
        if not self.subscriber_count:
            self.empty_since = time.monotonic()

    def typing(self, sender: Subscriber | None, user: str) -> bool:
        """Fan out an ephemeral typing event here and on the other nodes; throttled per
        user. Never stored."""
        if not self._typing_here(sender, user):
            return False
        self._bus.ephemeral(self.name, "typing", user)
        return True

    def receipt(self, user: str, delivered: int, read: int) -> None:
        """Fan out an ephemeral DM receipt here and on the other nodes. Never stored here
        (the read-state store has it)."""
        self._receipt_here(user, delivered, read)
        self._bus.ephemeral(self.name, f"receipt:{delivered}:{read}", user)

    def _remote(self, kind: str, user: str) -> None:
        """An ephemeral event from another node's subscriber."""
        if kind == "typing":
            self._typing_here(None, user)
        elif kind.startswith("receipt:"):
            _, delivered, read = kind.split(":")
            if delivered.isdigit() and read.isdigit():
                self._receipt_here(user, int(delivered), int(read))

    def _receipt_here(self, user: str, delivered: int, read: int) -> None:
        self._ephemeral(
            f.ReceiptEvent(channel=self.name, user=user, delivered=delivered, read=read)
        )

    def _ephemeral(self, ev: f.ServerFrame, sender: Subscriber | None = None) -> None:
        for index, subs in enumerate(self._subs):
            if not subs:
                continue
            codec = _CODECS[index]
            data = build_frame(codec.encode(ev), codec.binary)
            for sub in subs:
                if sub is not sender:
                    sub.send_ephemeral(data)

    def _typing_here(self, sender: Subscriber | None, user: str) -> bool:
        now = time.monotonic()
        last = self._typing_last.get(user)
        if last is not None and now - last < TYPING_THROTTLE:
            return False
        if len(self._typing_last) > 10_000:
            self._typing_last.clear()
        self._typing_last[user] = now
        expires = time.time_ns() // 1_000_000 + TYPING_TTL_MS
        self._ephemeral(f.TypingEvent(channel=self.name, user=user, expires_ms=expires), sender)
        return True
