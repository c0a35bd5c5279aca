"""One live connection: its outgoing queues, its single writer task and its heartbeat.

Everything that must survive a reconnect (subscriptions, positions, unacked publishes,
edits, deletes and reactions) lives in :class:`~gateway.client._state.State`; a
:class:`Conn` only holds what is sent on one socket, and is thrown away with it.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, NamedTuple

import trio
import trio_websocket

from gateway.protocol import frames as f
from gateway.protocol.session import TokenBucket

if TYPE_CHECKING:
    from gateway.client._state import Pending, State

__all__ = ["CloseInfo", "Conn"]

log = logging.getLogger("gateway.client")

RESEND_DELAY = 1.0  # after a frame was dropped by the server's rate limit
MAX_QUEUED_TYPING = 64
RATE_MARGIN = 0.95  # pace at a little under the server's announced rate


class CloseInfo(NamedTuple):
    code: int
    reason: str


class Conn:
    """Outgoing side of one authenticated WebSocket connection.

    There is one writer path: API calls and the reader only append to :attr:`control` or
    :attr:`pub_queue` and wake the writer task, which is the only task that writes to the
    socket. Frames are paced by a token bucket mirroring the limits announced in
    ``hello``, so the server's rate limit is not hit in normal operation. A publish (edit,
    delete, react) whose channel is being (re)subscribed is held until the ``subscribed``
    frame arrives.
    """

    __slots__ = (
        "_resend_scheduled",
        "_typing_queued",
        "_wakeup",
        "abort_info",
        "bucket",
        "control",
        "gen",
        "held",
        "hello",
        "last_received",
        "nursery",
        "pub_queue",
        "reader_blocked",
        "ready_at",
        "resumed",
        "scope",
        "state",
        "ws",
    )

    def __init__(
        self,
        gen: int,
        ws: trio_websocket.WebSocketConnection,
        hello: f.Hello,
        *,
        scope: trio.CancelScope,
        state: State,
        resumed: frozenset[str],
    ) -> None:
        self.gen = gen
        self.ws = ws
        self.hello = hello
        self.scope = scope
        self.state = state
        self.resumed = resumed
        self.nursery: trio.Nursery | None = None
        self.control: collections.deque[tuple[bytes | str, bool]] = collections.deque()
        self.pub_queue: collections.deque[Pending] = collections.deque()
        self.held: dict[str, list[Pending]] = {}
        now = trio.current_time()
        self.ready_at = now
        self.last_received = now
        self.reader_blocked = False
        self.abort_info: CloseInfo | None = None
        rate = hello.limits.rate_per_second
        self.bucket: TokenBucket | None = None
        if rate > 0 and hello.limits.rate_burst > 0:
            self.bucket = TokenBucket(rate * RATE_MARGIN, hello.limits.rate_burst, now)
            self.bucket.take(now)  # the auth/resume frame spent one token
        self._wakeup = trio.Event()
        self._resend_scheduled = False
        self._typing_queued = 0

    # ------------------------------------------------------------------ queueing

    def send(self, frame: f.ClientFrame) -> None:
        """Queue a control frame (subscribe, unsubscribe, ping) ahead of publishes."""
        self.control.append((self.state.encode(frame), False))
        self._wakeup.set()

    def send_typing(self, channel: str) -> bool:
        """Queue an ephemeral typing frame unless too many are queued already."""
        if self._typing_queued >= MAX_QUEUED_TYPING:
            return False
        self._typing_queued += 1
        self.control.append((self.state.encode(f.Typing(channel=channel)), True))
        self._wakeup.set()
        return True

    def send_receipt(self, frame: f.Read | f.Delivered) -> bool:
        """Queue a read/delivered receipt (best effort, like typing)."""
        if self._typing_queued >= MAX_QUEUED_TYPING:
            return False
        self._typing_queued += 1
        self.control.append((self.state.encode(frame), True))
        self._wakeup.set()
        return True

    def kick(self) -> None:
        """Wake the writer."""
        self._wakeup.set()

    def queue_publish(self, pending: Pending) -> None:
        self.pub_queue.append(pending)
        self._wakeup.set()

    def release(self, channel: str) -> None:
        """The channel became live (or is no longer subscribed): send what was held."""
        held = self.held.pop(channel, None)
        if held:
            self.pub_queue.extendleft(reversed(held))
            self._wakeup.set()

    def abort(self, info: CloseInfo) -> None:
        """Drop the connection without a closing handshake (dead peer)."""
        if self.abort_info is None:
            self.abort_info = info
        self.scope.cancel()

    # ------------------------------------------------------------------ writer

    async def run_writer(self) -> None:
        """The only task that writes to the socket; ends when the socket is closed."""
        counters = self.state.counters
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                while (data := self._next_frame()) is not None:
                    await self._pace()
                    await self.ws.send_message(data)
                    counters.frames_sent += 1
                    counters.bytes_sent += len(data)
        except trio_websocket.ConnectionClosed:
            return  # the reader sees the close and reports it

    def _next_frame(self) -> bytes | str | None:
        if self.control:
            data, is_typing = self.control.popleft()
            if is_typing:
                self._typing_queued -= 1
            return data
        subs = self.state.subs
        while self.pub_queue:
            p = self.pub_queue.popleft()
            if p.done or p.sent_gen == self.gen:
                continue
            sub = subs.get(p.channel)
            if sub is not None and sub.live_gen != self.gen:
                self.held.setdefault(p.channel, []).append(p)
                continue
            if p.sent_gen != -1:
                self.state.counters.publishes_resent += 1
            p.sent_gen = self.gen
            self.state.counters.publishes_sent += 1
            return p.data
        return None

    async def _pace(self) -> None:
        bucket = self.bucket
        if bucket is None:
            return
        while True:
            if bucket.take(trio.current_time()):
                return
            await trio.sleep(max(0.001, (1.0 - bucket.tokens) / bucket.rate))

    # ------------------------------------------------------------------ timers

    async def run_heartbeat(self, interval: float) -> None:
        """Ping every ``interval``; abort if nothing arrived for two intervals.

        Suspended while the reader is blocked on a full event buffer: then nothing is
        read on purpose, and silence says nothing about the peer.
        """
        ping = f.Ping(nonce=0)
        while True:
            await trio.sleep(interval)
            if self.reader_blocked:
                continue
            if trio.current_time() - self.last_received >= 2 * interval:
                log.info("no frame from the server for %.1fs: reconnecting", 2 * interval)
                self.abort(CloseInfo(1006, "heartbeat timeout"))
                return
            self.send(ping)

    def schedule_resend(self) -> None:
        """A frame was dropped without a reference (rate limit): re-send what is unanswered
        on this connection after a short delay. Publishes are idempotent by ``cmid``."""
        if self._resend_scheduled or self.nursery is None:
            return
        self._resend_scheduled = True
        self.nursery.start_soon(self._resend_later)

    async def _resend_later(self) -> None:
        await trio.sleep(RESEND_DELAY)
        self._resend_scheduled = False
        st = self.state
        for p in st.pending.values():
            if not p.done and p.sent_gen == self.gen:
                p.sent_gen = -2  # sent before, so counted as a re-send
                self.pub_queue.append(p)
        for sub in st.subs.values():
            if sub.live_gen != self.gen:
                self.send(f.Subscribe(channel=sub.channel, since=st.positions.get(sub.channel)))
        for channel in st.unsub_waiters:
            self.send(f.Unsubscribe(channel=channel))
        for nonce in st.pings:
            self.send(f.Ping(nonce=nonce))
        self._wakeup.set()
