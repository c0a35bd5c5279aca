"""Client state that survives reconnects, and what each server frame does to it.

The reader task feeds every decoded frame to :meth:`State.dispatch`. Only log events
(messages, and the changes that are entries of a log too) may wait for room in the event
buffer; everything else is handled without blocking.
"""

from __future__ import annotations

import dataclasses
import logging

import trio

from gateway.client._conn import CloseInfo, Conn
from gateway.client._errors import ConnectionClosed, PublishError, SubscribeError
from gateway.client._events import (
    LOG_EVENT_TYPES,
    ChannelReset,
    Disconnected,
    Event,
    EventQueue,
    LogEvent,
    Reconnected,
)
from gateway.client._util import Waiter
from gateway.errors import ErrorCode
from gateway.model import Position
from gateway.protocol import frames as f
from gateway.protocol.codec import Codec

__all__ = ["Lost", "Pending", "State", "Sub"]

log = logging.getLogger("gateway.client")

MAX_RESUME_POSITIONS = 500  # the protocol's cap on `resume.positions`


class Lost(Exception):
    """Internal: the connection a call was waiting on went away; try on the next one."""


class Sub:
    """One channel the user wants to receive. ``live_gen`` is the connection generation on
    which the server last confirmed it with ``subscribed`` (-1: not confirmed yet)."""

    __slots__ = ("channel", "live_gen", "waiters")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.live_gen = -1
        self.waiters: list[Waiter[f.Subscribed]] = []


class Pending:
    """One publish, edit, delete or react not yet acked or refused; re-sent with the same
    ``cmid`` after a reconnect. ``channel`` is the frame's (the subscription it needs);
    ``ack_channel`` the log its ack names (a thread reply's is the thread's log).
    ``sent_gen``: generation it was last written on (-1: never written)."""

    __slots__ = ("ack_channel", "channel", "cmid", "data", "done", "sent_gen", "waiter")

    def __init__(
        self, cmid: str, channel: str, data: bytes | str, ack_channel: str | None = None
    ) -> None:
        self.cmid = cmid
        self.channel = channel
        self.ack_channel = channel if ack_channel is None else ack_channel
        self.data = data
        self.waiter: Waiter[f.Ack] = Waiter()
        self.sent_gen = -1
        self.done = False


@dataclasses.dataclass(slots=True)
class Counters:
    connects: int = 0
    connect_failures: int = 0
    messages_delivered: int = 0
    changes_delivered: int = 0
    duplicates_dropped: int = 0
    ephemeral_dropped: int = 0
    notices_dropped: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    publishes_sent: int = 0
    publishes_resent: int = 0
    decode_errors: int = 0


class State:
    """Everything the client knows, independent of any one connection."""

    def __init__(self, codec: Codec, max_events: int) -> None:
        self.codec = codec
        self.user: str | None = None
        self.session: str | None = None
        self.subs: dict[str, Sub] = {}
        self.positions: dict[str, Position] = {}
        self.pending: dict[str, Pending] = {}  # by cmid, in call order
        self.pings: dict[int, Waiter[None]] = {}
        self.unsub_waiters: dict[str, list[Waiter[None]]] = {}
        self.events = EventQueue(max_events)
        self.conn: Conn | None = None
        self.ready = trio.Event()
        self.closed: CloseInfo | None = None
        self.closing = False
        self.limits: f.LimitsInfo | None = None
        self.counters = Counters()
        self.last_close: CloseInfo | None = None
        self.presence_watch: tuple[str, ...] = ()  # re-sent on every new connection
        self.presence_status = "online"

    # ------------------------------------------------------------------ helpers

    def encode(self, frame: f.ClientFrame) -> bytes | str:
        data = self.codec.encode(frame)
        return data if self.codec.binary else data.decode()

    def closed_error(self) -> ConnectionClosed:
        info = self.closed or CloseInfo(1000, "client closed")
        return ConnectionClosed(info.code, info.reason)

    def check_open(self) -> None:
        if self.closed is not None:
            raise self.closed_error()

    async def wait_ready(self) -> Conn:
        """Return the current connection, waiting for one; raise once closed for good."""
        await trio.lowlevel.checkpoint()
        while True:
            self.check_open()
            if self.conn is not None:
                return self.conn
            await self.ready.wait()

    def notice(self, event: Event) -> None:
        if not self.events.put_notice(event):
            self.counters.notices_dropped += 1

    def resume_positions(self, limit: int) -> dict[str, Position]:
        """Positions to send in ``resume``: subscribed channels with a known position, at
        most ``limit`` (more would leave the connection unauthenticated); the others are
        subscribed one by one after ``ready``."""
        positions: dict[str, Position] = {}
        limit = min(limit, MAX_RESUME_POSITIONS)
        for channel in self.subs:
            if len(positions) >= limit:
                break
            pos = self.positions.get(channel)
            if pos is not None:
                positions[channel] = pos
        return positions

    # ------------------------------------------------------------------ lifecycle

    def attach(self, conn: Conn, ready: f.Ready, attempts: int | None) -> None:
        """A connection is authenticated: queue what it must send and wake waiters.

        ``attempts`` is None for the first connection, else the attempts it took.
        """
        self.conn = conn
        self.user = ready.user
        self.session = ready.session
        self.limits = conn.hello.limits
        self.counters.connects += 1
        for sub in self.subs.values():
            if sub.channel not in conn.resumed:
                conn.send(f.Subscribe(channel=sub.channel, since=self.positions.get(sub.channel)))
        if self.presence_watch:
            conn.send(f.PresenceWatch(users=list(self.presence_watch)))
        if self.presence_status != "online":
            conn.send(f.PresenceSet(status="away"))
        conn.pub_queue.extend(p for p in self.pending.values() if not p.done)
        conn.kick()
        self.ready.set()
        if attempts is not None:
            self.notice(Reconnected(ready.session, attempts, tuple(sorted(conn.resumed))))

    def detach(self, conn: Conn) -> None:
        """The connection is gone: fail what only it could answer."""
        if self.conn is conn:
            self.conn = None
        if self.ready.is_set() and self.closed is None:
            self.ready = trio.Event()
        for waiter in self.pings.values():
            waiter.fail(Lost())
        for waiters in self.unsub_waiters.values():
            for w in waiters:
                w.set(None)  # not resubscribed on the next connection: done
        self.unsub_waiters.clear()

    def terminate(self, info: CloseInfo, *, notice: bool) -> None:
        """Stop for good: fail every waiting call and end :meth:`Client.events`."""
        if self.closed is not None:
            return
        self.closed = info
        self.ready.set()
        for p in self.pending.values():
            p.waiter.fail(self.closed_error())
        for sub in self.subs.values():
            for sw in sub.waiters:
                sw.fail(self.closed_error())
            sub.waiters.clear()
        for waiter in self.pings.values():
            waiter.fail(self.closed_error())
        for waiters in self.unsub_waiters.values():
            for uw in waiters:
                uw.set(None)
        self.unsub_waiters.clear()
        if notice:
            self.notice(Disconnected(info.code, info.reason, will_reconnect=False))
        self.events.close()

    def drop_subscription(self, channel: str, error: SubscribeError | None) -> Sub | None:
        """Forget a channel; fail its pending subscribe calls with ``error``."""
        sub = self.subs.pop(channel, None)
        self.positions.pop(channel, None)
        if sub is not None:
            for w in sub.waiters:
                w.fail(
                    error or SubscribeError("unsubscribed", "subscription ended", channel=channel)
                )
            sub.waiters.clear()
        if self.conn is not None:
            self.conn.release(channel)  # held publishes go out and get a clear refusal
        return sub

    # ------------------------------------------------------------------ dispatch

    async def dispatch(self, conn: Conn, frame: f.ServerFrame) -> None:
        if isinstance(frame, LOG_EVENT_TYPES):
            await self._on_entry(conn, frame)
        elif isinstance(frame, f.Ack):
            self._on_ack(frame)
        elif isinstance(frame, f.Subscribed):
            self._on_subscribed(conn, frame)
        elif isinstance(frame, f.TypingEvent | f.ReceiptEvent):
            if frame.channel in self.subs and not self.events.put_nowait(frame):
                self.counters.ephemeral_dropped += 1
        elif isinstance(frame, f.PresenceEvent):
            if frame.user in self.presence_watch:
                self.notice(frame)
        elif isinstance(frame, f.Pong):
            waiter = self.pings.get(frame.nonce)
            if waiter is not None:
                waiter.set(None)
        elif isinstance(frame, f.Unsubscribed):
            self._on_unsubscribed(conn, frame)
        elif isinstance(frame, f.Error):
            self._on_error(conn, frame)
        # hello / ready after the handshake carry nothing new: ignored

    async def _on_entry(self, conn: Conn, ev: LogEvent) -> None:
        """A log entry (message or change): deliver it once, in order, and advance the
        channel's position past it, so a resume continues after it."""
        sub = self.subs.get(ev.channel)
        if sub is None:
            return  # unsubscribed meanwhile
        pos = self.positions.get(ev.channel)
        if pos is not None and pos.epoch == ev.epoch and ev.offset <= pos.offset:
            self.counters.duplicates_dropped += 1
            return
        new = Position(ev.epoch, ev.offset)
        if pos is not None and pos.epoch != ev.epoch:  # the log was recreated
            self.notice(ChannelReset(ev.channel, pos, new, reset=True, truncated=False))
        if self.events.full():
            conn.reader_blocked = True
            try:
                await self.events.put(ev)
            finally:
                conn.reader_blocked = False
                conn.last_received = trio.current_time()
        else:
            await self.events.put(ev)
        if self.subs.get(ev.channel) is sub:
            self.positions[ev.channel] = new
        if isinstance(ev, f.MessageEvent):
            self.counters.messages_delivered += 1
        else:
            self.counters.changes_delivered += 1

    def _on_ack(self, ack: f.Ack) -> None:
        p = self.pending.get(ack.cmid)
        if p is not None and p.ack_channel == ack.channel:
            p.done = True
            p.waiter.set(ack)

    def _on_subscribed(self, conn: Conn, ev: f.Subscribed) -> None:
        sub = self.subs.get(ev.channel)
        if sub is None:
            return
        old = self.positions.get(ev.channel)
        new = Position(ev.epoch, ev.offset)
        if old is not None and old.epoch == ev.epoch and old.offset > ev.offset:
            new = old
        self.positions[ev.channel] = new
        sub.live_gen = conn.gen
        if ev.truncated or (ev.reset and (old is None or old.epoch != ev.epoch)):
            # (a reset already noticed through a message of the new epoch is not repeated)
            self.notice(ChannelReset(ev.channel, old, new, ev.reset, ev.truncated))
        waiters, sub.waiters = sub.waiters, []
        for w in waiters:
            w.set(ev)
        conn.release(ev.channel)

    def _on_unsubscribed(self, conn: Conn, ev: f.Unsubscribed) -> None:
        channel = ev.channel
        for w in self.unsub_waiters.pop(channel, ()):
            w.set(None)
        if ev.reason == "client":
            return
        sub = self.subs.get(channel)
        if sub is None:
            return
        if ev.reason == "restart":
            sub.live_gen = -1
            conn.send(f.Subscribe(channel=channel, since=self.positions.get(channel)))
        else:
            self.drop_subscription(
                channel,
                SubscribeError(ev.reason, "the server ended the subscription", channel=channel),
            )
        self.notice(ev)

    def _on_error(self, conn: Conn, err: f.Error) -> None:
        if err.ref is not None:
            p = self.pending.get(err.ref)
            if p is not None and not p.done and err.channel in (None, p.channel):
                if err.code == ErrorCode.RATE_LIMITED:
                    conn.schedule_resend()  # the SDK paces its frames: rare, and safe to redo
                    return
                sub = self.subs.get(p.channel)
                if (
                    err.code == ErrorCode.NOT_SUBSCRIBED
                    and sub is not None
                    and sub.live_gen != conn.gen
                ):
                    # Raced with a resubscribe (restart): send again once it is live.
                    p.sent_gen = -2
                    conn.queue_publish(p)
                    return
                p.done = True
                p.waiter.fail(
                    PublishError(
                        err.code, err.message, err.retryable, channel=p.channel, cmid=p.cmid
                    )
                )
                return
        if err.channel is not None and err.ref is None:
            sub = self.subs.get(err.channel)
            if sub is not None and sub.live_gen != conn.gen:
                if err.retryable:
                    conn.schedule_resend()
                    return
                error = SubscribeError(err.code, err.message, channel=err.channel)
                had_waiters = bool(sub.waiters)
                self.drop_subscription(err.channel, error)
                if not had_waiters:  # an automatic resubscribe was refused
                    self.notice(f.Unsubscribed(channel=err.channel, reason=err.code))
                return
        if err.code == ErrorCode.RATE_LIMITED:
            conn.schedule_resend()
        log.debug("server error frame: %s: %s", err.code, err.message)
