"""A small in-memory stand-in for the gateway, speaking protocol v1 over trio-websocket.

It is the SDK's test double: one process, no store, one log per channel. Tokens are
``tok:<user>``; anything else is refused with close 4001. Knobs let a test drop, delay or
break things the way the real server (or the network) can.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import trio
import trio_websocket

from gateway.errors import CloseCode, ErrorCode
from gateway.model import Position
from gateway.protocol import frames as f
from gateway.protocol.codec import CODECS, JSON, Codec

LIMITS = f.LimitsInfo(
    max_message_bytes=65536,
    max_body_bytes=16384,
    max_subscriptions=500,
    rate_per_second=1000.0,
    rate_burst=1000,
)


class FakeConn:
    def __init__(self, ws: trio_websocket.WebSocketConnection, codec: Codec, session: str):
        self.ws = ws
        self.codec = codec
        self.session = session
        self.user: str | None = None
        self.subs: set[str] = set()
        self.closed = False
        self.close_code: int | None = None
        self.lock = trio.Lock()  # held while a subscribe replays: live frames wait

    async def send(self, frame: f.ServerFrame) -> None:
        async with self.lock:
            await self.send_unlocked(frame)

    async def send_unlocked(self, frame: f.ServerFrame) -> None:
        data = self.codec.encode(frame)
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await self.ws.send_message(data if self.codec.binary else data.decode())

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.aclose(code, reason)

    async def abort(self) -> None:
        """Drop the TCP connection without a WebSocket close (the client sees 1006)."""
        await self.ws._stream.aclose()


class FakeGateway:
    def __init__(self, *, heartbeat_ms: int = 25_000, limits: f.LimitsInfo = LIMITS) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.limits = limits
        self.logs: dict[str, list[f.MessageEvent]] = {}
        self.epochs: dict[str, str] = {}
        self.conns: list[FakeConn] = []
        self.received: list[tuple[FakeConn, f.ClientFrame]] = []
        self.forbidden: set[str] = set()
        self.url = ""
        # knobs
        self.reject_next = 0  # refuse this many handshakes with HTTP 503
        self.ignore_pings = False  # never answer application pings
        self.drop_publishes = 0  # swallow this many publishes (no store, no answer)
        self.store_without_ack = 0  # store this many publishes but send no ack
        self.rate_drop_publishes = 0  # drop this many with a ref-less rate_limited error
        self.rate_nack_publishes = 0  # refuse this many with rate_limited naming the cmid
        self.reject_status = 503
        self.replay_overlap = 0  # replay this many already-seen messages too (dup test)
        self.rejected = 0
        self._sessions = itertools.count(1)
        self._changed = trio.Event()

    # ---------------------------------------------------------------- test helpers

    async def start(self, nursery: trio.Nursery) -> None:
        server = await nursery.start(
            trio_websocket.serve_websocket, self._handler, "127.0.0.1", 0, None
        )
        self.url = f"ws://127.0.0.1:{server.port}/ws"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def live(self) -> list[FakeConn]:
        return [c for c in self.conns if not c.closed and c.user is not None]

    def frames(self, kind: type[f.ClientFrame]) -> list[f.ClientFrame]:
        return [fr for _, fr in self.received if isinstance(fr, kind)]

    async def close_all(self, code: int, reason: str = "") -> None:
        for conn in self.live():
            await conn.close(code, reason)

    async def append(self, channel: str, body: str, sender: str = "server") -> f.MessageEvent:
        """Store a message as if someone published it, and fan it out."""
        cmid = f"srv-{len(self.logs.get(channel, []))}"
        return await self._store(channel, sender, cmid, body, None)

    def new_epoch(self, channel: str, epoch: str) -> None:
        self.epochs[channel] = epoch
        self.logs[channel] = []

    # ---------------------------------------------------------------- protocol

    async def _handler(self, request: trio_websocket.WebSocketRequest) -> None:
        if self.reject_next > 0:
            self.reject_next -= 1
            self.rejected += 1
            await request.reject(self.reject_status, body=b"not now")
            self._notify()
            return
        offered = list(request.proposed_subprotocols)
        codec = CODECS.get(offered[0], JSON) if offered else JSON
        ws = await request.accept(subprotocol=codec.subprotocol if offered else None)
        conn = FakeConn(ws, codec, f"s{next(self._sessions)}")
        self.conns.append(conn)
        self._notify()
        try:
            await conn.send(
                f.Hello(
                    session=conn.session,
                    heartbeat_ms=self.heartbeat_ms,
                    auth_timeout_ms=10_000,
                    limits=self.limits,
                    node="fake",
                )
            )
            while True:
                data = await ws.get_message()
                frame = codec.decode_client(data)
                self.received.append((conn, frame))
                self._notify()
                await self._handle(conn, frame)
        except trio_websocket.ConnectionClosed as exc:
            conn.close_code = exc.reason.code if exc.reason else None
        finally:
            conn.closed = True
            self._notify()

    async def _handle(self, conn: FakeConn, frame: f.ClientFrame) -> None:
        if isinstance(frame, f.Ping):
            if not self.ignore_pings:
                await conn.send(f.Pong(nonce=frame.nonce))
        elif isinstance(frame, f.Auth | f.Resume):
            if not frame.token.startswith("tok:"):
                await conn.close(CloseCode.AUTH_FAILED, "bad token")
                return
            conn.user = frame.token[4:]
            await conn.send(f.Ready(user=conn.user, session=conn.session))
            self._notify()
            if isinstance(frame, f.Resume):
                for channel, position in frame.positions.items():
                    await self._subscribe(conn, channel, position)
        elif isinstance(frame, f.Subscribe):
            await self._subscribe(conn, frame.channel, frame.since)
        elif isinstance(frame, f.Unsubscribe):
            conn.subs.discard(frame.channel)
            await conn.send(f.Unsubscribed(channel=frame.channel))
        elif isinstance(frame, f.Publish):
            await self._publish(conn, frame)
        elif isinstance(frame, f.Typing):
            for other in self.live():
                if other is not conn and frame.channel in other.subs:
                    await other.send(f.TypingEvent(channel=frame.channel, user=conn.user or ""))

    async def _subscribe(self, conn: FakeConn, channel: str, since: Position | None) -> None:
        if channel in self.forbidden:
            await conn.send(
                f.Error(code=ErrorCode.FORBIDDEN, message="not allowed", channel=channel)
            )
            return
        async with conn.lock:
            log = self.logs.setdefault(channel, [])
            epoch = self.epochs.setdefault(channel, "e1")
            reset = since is not None and since.epoch != epoch
            replay: list[f.MessageEvent] = []
            if since is not None and not reset:
                replay = log[max(0, since.offset - self.replay_overlap) :]
            head = len(log)
            conn.subs.add(channel)  # live messages from now on wait for the lock
            for message in replay:
                await conn.send_unlocked(message)
            await conn.send_unlocked(
                f.Subscribed(
                    channel=channel, epoch=epoch, offset=head, replayed=len(replay), reset=reset
                )
            )
        self._notify()

    async def _publish(self, conn: FakeConn, frame: f.Publish) -> None:
        if frame.channel not in conn.subs:
            await conn.send(
                f.Error(
                    code=ErrorCode.NOT_SUBSCRIBED,
                    message="subscribe first",
                    ref=frame.cmid,
                    channel=frame.channel,
                )
            )
            return
        if self.drop_publishes > 0:
            self.drop_publishes -= 1
            return
        if self.rate_drop_publishes > 0:
            self.rate_drop_publishes -= 1
            await conn.send(
                f.Error(code=ErrorCode.RATE_LIMITED, message="slow down", retryable=True)
            )
            return
        if self.rate_nack_publishes > 0:
            self.rate_nack_publishes -= 1
            await conn.send(
                f.Error(
                    code=ErrorCode.RATE_LIMITED,
                    message="slow down",
                    ref=frame.cmid,
                    channel=frame.channel,
                    retryable=True,
                )
            )
            return
        log = self.logs.setdefault(frame.channel, [])
        for message in log:
            if message.cmid == frame.cmid and message.sender == conn.user:
                await conn.send(_ack(message, duplicate=True))
                return
        message = await self._store(
            frame.channel, conn.user or "", frame.cmid, frame.body, frame.thread, notify=False
        )
        if self.store_without_ack > 0:
            self.store_without_ack -= 1
        else:
            await conn.send(_ack(message, duplicate=False))
        self._notify()

    async def _store(
        self,
        channel: str,
        sender: str,
        cmid: str,
        body: str,
        thread: str | None,
        *,
        notify: bool = True,
    ) -> f.MessageEvent:
        log = self.logs.setdefault(channel, [])
        epoch = self.epochs.setdefault(channel, "e1")
        offset = len(log) + 1
        message = f.MessageEvent(
            channel=channel,
            offset=offset,
            epoch=epoch,
            id=f"{epoch}-{offset}",
            sender=sender,
            cmid=cmid,
            body=body,
            ts=1_700_000_000_000 + offset,
            thread=thread,
        )
        log.append(message)
        for other in self.live():
            if channel in other.subs:
                await other.send(message)
        if notify:
            self._notify()
        return message


def _ack(message: f.MessageEvent, *, duplicate: bool) -> f.Ack:
    return f.Ack(
        cmid=message.cmid,
        channel=message.channel,
        offset=message.offset,
        epoch=message.epoch,
        id=message.id,
        duplicate=duplicate,
    )
