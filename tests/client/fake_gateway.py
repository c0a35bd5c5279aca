"""A small in-memory stand-in for the gateway, speaking protocol v1 over trio-websocket.

It is the SDK's test double: one process, no store, one log per channel holding messages
and change events (edits, deletes, reactions, thread summaries; thread replies in the
thread's log ``<channel>:t<offset>``). Tokens are ``tok:<user>``; anything else is
refused with close 4001. Knobs let a test drop, delay or
break things the way the real server (or the network) can.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import msgspec
import trio
import trio_websocket

from gateway.client import LogEvent
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
        self.logs: dict[str, list[LogEvent]] = {}
        self.versions: dict[tuple[str, str], int] = {}  # (channel, message id) -> version
        self.reactions: dict[tuple[str, str, str], set[str]] = {}  # (channel, id, emoji)
        self.changes: dict[tuple[str, str, str], tuple[LogEvent, int]] = {}  # (user, ch, cmid)
        self.epochs: dict[str, str] = {}
        self.conns: list[FakeConn] = []
        self.received: list[tuple[FakeConn, f.ClientFrame]] = []
        self.forbidden: set[str] = set()
        self.url = ""
        # knobs
        self.reject_next = 0  # refuse this many handshakes with HTTP 503
        self.ignore_pings = False  # never answer application pings
        self.drop_publishes = 0  # swallow this many publishes/changes (no store, no answer)
        self.store_without_ack = 0  # store this many publishes/changes but send no ack
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

    async def append_entry(self, event: LogEvent) -> LogEvent:
        """Store any log event at the next offset of its channel, and fan it out."""
        log = self.logs.setdefault(event.channel, [])
        epoch = self.epochs.setdefault(event.channel, "e1")
        entry = msgspec.structs.replace(event, offset=len(log) + 1, epoch=epoch)
        log.append(entry)
        for other in self.live():
            if event.channel in other.subs:
                await other.send(entry)
        self._notify()
        return entry

    def messages(self, channel: str) -> list[f.MessageEvent]:
        return [m for m in self.logs.get(channel, []) if isinstance(m, f.MessageEvent)]

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
        elif isinstance(frame, f.Publish | f.Edit | f.Delete | f.React):
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
            replay: list[LogEvent] = []
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

    async def _publish(
        self, conn: FakeConn, frame: f.Publish | f.Edit | f.Delete | f.React
    ) -> None:
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
        if not isinstance(frame, f.Publish):
            await self._change(conn, frame)
            return
        channel = frame.channel
        parent: f.MessageEvent | None = None
        if frame.thread is not None:
            parent = self._message(channel, frame.thread)
            if parent is None:
                await self._refuse(conn, frame, ErrorCode.NOT_FOUND)
                return
            channel = f"{channel}:t{parent.offset}"
        for message in self.messages(channel):
            if message.cmid == frame.cmid and message.sender == conn.user:
                await conn.send(_ack(message, duplicate=True))
                return
        message = await self._store(
            channel, conn.user or "", frame.cmid, frame.body, frame.thread, notify=False
        )
        if parent is not None:
            replies = self.messages(channel)
            await self.append_entry(
                f.ThreadEvent(
                    channel=frame.channel,
                    offset=0,
                    epoch="",
                    id=parent.id,
                    user=message.sender,
                    replies=len(replies),
                    last_reply_ms=message.ts,
                    participants=list(dict.fromkeys(m.sender for m in replies)),
                    ts=message.ts,
                )
            )
        if self.store_without_ack > 0:
            self.store_without_ack -= 1
        else:
            await conn.send(_ack(message, duplicate=False))
        self._notify()

    def _message(self, channel: str, message_id: str) -> f.MessageEvent | None:
        for message in self.messages(channel):
            if message.id == message_id:
                return message
        return None

    async def _refuse(
        self, conn: FakeConn, frame: f.Publish | f.Edit | f.Delete | f.React, code: str
    ) -> None:
        await conn.send(f.Error(code=code, message=code, ref=frame.cmid, channel=frame.channel))

    async def _change(self, conn: FakeConn, frame: f.Edit | f.Delete | f.React) -> None:
        """Edits, deletes and reactions, idempotent by (user, channel, cmid)."""
        user = conn.user or ""
        key = (user, frame.channel, frame.cmid)
        if key in self.changes:
            entry, version = self.changes[key]
            await conn.send(_ack(entry, duplicate=True, version=version, cmid=frame.cmid))
            return
        target = self._message(frame.channel, frame.id)
        if target is None:
            await self._refuse(conn, frame, ErrorCode.NOT_FOUND)
            return
        vkey = (frame.channel, frame.id)
        version = self.versions.get(vkey, 1)
        event: LogEvent
        ch = frame.channel  # offset and epoch are set by append_entry
        if isinstance(frame, f.Edit):
            if frame.version != version:
                await self._refuse(conn, frame, ErrorCode.STALE_VERSION)
                return
            version += 1
            event = f.MessageUpdated(
                channel=ch,
                offset=0,
                epoch="",
                id=frame.id,
                version=version,
                body=frame.body,
                by=user,
                ts=1,
            )
        elif isinstance(frame, f.Delete):
            version += 1
            event = f.MessageDeleted(
                channel=ch, offset=0, epoch="", id=frame.id, version=version, by=user, ts=1
            )
        else:
            users = self.reactions.setdefault((frame.channel, frame.id, frame.emoji), set())
            if frame.add:
                users.add(user)
            else:
                users.discard(user)
            event = f.ReactionEvent(
                channel=ch,
                offset=0,
                epoch="",
                id=frame.id,
                emoji=frame.emoji,
                user=user,
                added=frame.add,
                count=len(users),
                ts=1,
            )
        self.versions[vkey] = version
        entry = await self.append_entry(event)
        self.changes[key] = (entry, version)
        if self.store_without_ack > 0:
            self.store_without_ack -= 1
        else:
            await conn.send(_ack(entry, duplicate=False, version=version, cmid=frame.cmid))

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


def _ack(entry: LogEvent, *, duplicate: bool, version: int = 0, cmid: str = "") -> f.Ack:
    eid = f"{entry.epoch}-{entry.offset}"
    return f.Ack(
        cmid=entry.cmid if isinstance(entry, f.MessageEvent) else cmid,
        channel=entry.channel,
        offset=entry.offset,
        epoch=entry.epoch,
        id=eid,
        duplicate=duplicate,
        version=version,
    )
