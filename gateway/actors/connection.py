"""Connection actor: one per WebSocket.

Reader: the actor's own task reads the socket, feeds wsproto, assembles messages under
size and fragment limits, and executes what the sans-IO :class:`Session` decides.

Writer: :meth:`send_frame` never blocks. When nothing is queued it writes straight to
the non-blocking socket (``os.write``); what the kernel does not take goes to a bounded
outbox that a short-lived drain task empties when the socket is writable. If the outbox
passes ``outbox_max_bytes`` the client is a slow consumer: queued frames are dropped (they
are in the log) and the connection is closed with 4101, "resume from your last offset".
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import random
from typing import TYPE_CHECKING, cast

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection as WSFrames
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from gateway.actors.access import Access, Grant, channel_access
from gateway.errors import CloseCode, ErrorCode, GatewayError, ProtocolViolation
from gateway.model import Position
from gateway.protocol import build_frame, negotiate
from gateway.protocol import frames as f
from gateway.protocol import session as s
from gateway.protocol.codec import JSON, Codec

if TYPE_CHECKING:
    from gateway.actors.node import Node
    from gateway.auth import Identity

__all__ = ["Connection"]

log = logging.getLogger("gateway.connection")
CLOSE_GRACE = 2.0  # seconds to wait for the client's close frame
RECV_SIZE = 65536


class Connection:
    """A WebSocket connection actor. Run with ``await Connection(node, sock).run()``."""

    __slots__ = (
        "_draining",
        "_fd",
        "_frags",
        "_grants",
        "_parts",
        "_progress",
        "_revocations",
        "_size",
        "auth_deadline",
        "closing",
        "codec",
        "dead",
        "identity",
        "last_ping",
        "last_recv",
        "next_check",
        "node",
        "outbox",
        "outbox_bytes",
        "peer",
        "scope",
        "session",
        "sock",
        "ws",
    )

    def __init__(self, node: Node, sock: trio.socket.SocketType, peer: str) -> None:
        self.node = node
        self.sock = sock
        self._fd = sock.fileno()
        self.peer = peer
        self.ws: WSConnection | WSFrames = WSConnection(ConnectionType.SERVER)
        self.codec: Codec = JSON
        now = trio.current_time()
        self.session = s.Session(os.urandom(9).hex(), node.settings.limits, now)
        self.identity: Identity | None = None
        self.outbox: collections.deque[bytes] = collections.deque()
        self.outbox_bytes = 0
        self._draining = False
        self._progress: trio.Event | None = None  # set when the outbox shrinks or we close
        self.closing = False
        self.dead = False
        self.last_recv = now
        # the first ping at a random point of the first interval: connections opened
        # together (clients reconnecting after a deploy) do not ping in the same tick
        self.last_ping = now - random.uniform(0.0, node.settings.heartbeat_interval)
        self.auth_deadline = now + node.settings.auth_timeout
        self.next_check = 0.0  # when the node's ticker looks at this connection next
        self.scope = trio.CancelScope()
        self._parts: list[bytes | str] = []
        self._size = 0
        self._frags = 0
        self._grants: dict[str, Grant] = {}  # subscribed channel -> what the user may do
        self._revocations = 0  # bumped by every revoke: an in-flight subscribe re-checks

    # ================================================================ writer

    def send_frame(self, data: bytes) -> None:
        """Queue one complete data frame without blocking (the fan-out hot path).

        Inlined fast path: nothing queued, so write straight to the socket."""
        if self.outbox or self.closing or self.dead:
            self._send_slow(data)
            return
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            self._broken()
            return
        if n != len(data):
            self._queue_rest(data, n)

    def _send_slow(self, data: bytes) -> None:
        if self.closing or self.dead:
            return
        self.outbox.append(data)
        self.outbox_bytes += len(data)
        if self.outbox_bytes > self.node.settings.limits.outbox_max_bytes:
            self._shed()

    def send_ephemeral(self, data: bytes) -> None:
        """Typing and other droppable events: skipped when anything is queued."""
        if self.outbox or self.closing:
            self.node.metrics.drops.labels("ephemeral").inc()
            return
        self._write(data)

    @property
    def device(self) -> str:
        """This connection's presence device id, unique across nodes."""
        return f"{self.node.node_id}/{self.session.id}"

    def send(self, frame: f.ServerFrame) -> None:
        self.send_frame(build_frame(self.codec.encode(frame), self.codec.binary))

    def _write(self, data: bytes) -> None:
        """Write control bytes (handshake answer, close, ping/pong), also while closing.

        The write itself is the same as the fast path of :meth:`send_frame`, which keeps
        its own inlined copy: one Python call less per recipient on the fan-out path."""
        if self.dead:
            return
        if self.outbox:
            self.outbox.append(data)
            self.outbox_bytes += len(data)
            return
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            self._broken()
            return
        if n < len(data):
            self._queue_rest(data, n)

    def _queue_rest(self, data: bytes, n: int) -> None:
        rest = data[n:]
        self.outbox.append(rest)
        self.outbox_bytes += len(rest)
        if not self._draining:
            self._draining = True
            self.node.spawn(self._drain)

    async def _drain(self) -> None:
        try:
            while self.outbox and not self.dead:
                try:
                    await trio.lowlevel.wait_writable(self.sock)
                except (trio.ClosedResourceError, OSError):
                    self._broken()
                    return
                while self.outbox and not self.dead:
                    chunk = self.outbox[0]
                    try:
                        n = os.write(self._fd, chunk)
                    except BlockingIOError:
                        break
                    except OSError:
                        self._broken()
                        return
                    self.outbox_bytes -= n
                    if n == len(chunk):
                        self.outbox.popleft()
                    else:
                        self.outbox[0] = chunk[n:]
                    self._notify_progress()
                    if n != len(chunk):
                        break
        finally:
            self._draining = False
            self._notify_progress()

    def _notify_progress(self) -> None:
        if self._progress is not None:
            self._progress.set()
            self._progress = None

    async def _wait_progress(self) -> None:
        if self._progress is None:
            self._progress = trio.Event()
        await self._progress.wait()

    async def wait_outbox_below(self, nbytes: int) -> None:
        while True:
            if self.dead or self.closing:
                raise trio.BrokenResourceError("connection closed")
            if self.outbox_bytes < nbytes:
                return
            await self._wait_progress()

    def _shed(self) -> None:
        """Slow consumer: drop queued frames (keep a partly written one), close 4101."""
        head = self.outbox[0]
        self.outbox.clear()
        self.outbox.append(head)
        self.outbox_bytes = len(head)
        self.node.metrics.drops.labels("slow_consumer").inc()
        log.info("slow consumer shed", extra={"peer": self.peer, "session": self.session.id})
        self.close(CloseCode.SLOW_CONSUMER, "too slow: reconnect and resume")

    def _broken(self) -> None:
        self.dead = True
        self.closing = True
        self.outbox.clear()
        self.outbox_bytes = 0
        self.scope.cancel()
        self._notify_progress()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the reader waits up to CLOSE_GRACE for the echo."""
        if self.closing:
            return
        self.closing = True
        self._notify_progress()
        self.node.metrics.closes.labels(str(code)).inc()
        if self.ws.state is ConnectionState.OPEN:
            self._write(self.ws.send(CloseConnection(code=code, reason=reason)))
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + CLOSE_GRACE)

    def channel_failed(self, channel: str) -> None:
        self._grants.pop(channel, None)
        self.session.unsubscribed(channel)
        self.send(f.Unsubscribed(channel=channel, reason="restart"))

    def revoke(self, channel: str) -> None:
        """Access to ``channel`` was withdrawn: stop delivering it at once. Revoking a
        workspace's event log (``ws.<id>``) withdraws every channel of that workspace."""
        self._revocations += 1
        channels = [channel]
        if channel.startswith("ws."):
            workspace = channel[3:]
            channels += [c for c, g in self._grants.items() if g.workspace == workspace]
        else:  # its threads' logs go with it
            channels += [c for c in self._grants if c.startswith(channel + ":t")]
        for ch in channels:
            self._grants.pop(ch, None)
            actor = self.node.registry.get(ch)
            if actor is not None:
                actor.detach(self)
            if ch in self.session.subscriptions:
                self.session.unsubscribed(ch)
                self.send(f.Unsubscribed(channel=ch, reason="forbidden"))

    def regrant(self, channel: str) -> None:
        """The channel changed (archived, ...): re-check the right to post on it and its
        threads' logs before the next publish."""
        for ch, grant in list(self._grants.items()):
            if grant.access is Access.POST and (ch == channel or ch.startswith(channel + ":t")):
                self._grants[ch] = Grant(Access.READ, grant.workspace, "re-check")

    def ping(self, now: float) -> None:
        self.last_ping = now
        if self.ws.state is ConnectionState.OPEN and not self.outbox:
            self._write(self.ws.send(Ping(b"")))

    # ================================================================ reader

    async def run(self) -> None:
        node = self.node
        try:
            with self.scope:
                if await self._handshake():
                    node.connection_opened(self)
                    try:
                        await self._read_loop()
                    finally:
                        node.connection_closed(self)
        finally:
            await self._finish()

    async def _handshake(self) -> bool:
        ws = self.ws
        assert isinstance(ws, WSConnection)
        while True:
            data = await self.sock.recv(16384)
            if not data:
                return False
            try:
                ws.receive_data(data)
            except RemoteProtocolError:
                self._reject(400, b"expected a WebSocket upgrade request\n")
                return False
            for event in ws.events():
                if isinstance(event, Request):
                    if not self._accept(event):
                        return False
                    # Keep only the frame protocol: drops the h11 handshake machinery
                    # (about 3 KB per idle connection).
                    assert ws.connection is not None
                    self.ws = ws.connection
                    return True

    def _accept(self, req: Request) -> bool:
        node = self.node
        path = req.target.split("?", 1)[0]
        if path != "/ws":
            self._reject(404, b"no WebSocket endpoint here; use /ws\n")
            return False
        origin = next(
            (v.decode("latin-1") for k, v in req.extra_headers if k.lower() == b"origin"), None
        )
        if origin is not None and not node.origin_allowed(origin):
            self._reject(403, b"origin not allowed\n")
            return False
        codec = negotiate(list(req.subprotocols))
        if codec is None:
            self._reject(
                400, b"unsupported subprotocol; offer gateway.v1.json or gateway.v1.msgpack\n"
            )
            return False
        if node.draining:
            self._reject(503, b"draining; connect to another node\n")
            return False
        if node.connection_count >= node.settings.max_connections:
            node.metrics.drops.labels("max_connections").inc()
            self._reject(503, b"node is full\n")
            return False
        self.codec = codec
        sub = codec.subprotocol if req.subprotocols else None
        self._write(self.ws.send(AcceptConnection(subprotocol=sub, extensions=[])))
        self._greet()
        return True

    def _greet(self) -> None:
        """Send ``hello``, the first frame of every connection."""
        node = self.node
        st = node.settings
        lim = st.limits
        self.send(
            f.Hello(
                session=self.session.id,
                heartbeat_ms=int(st.heartbeat_interval * 1000),
                auth_timeout_ms=int(st.auth_timeout * 1000),
                limits=f.LimitsInfo(
                    max_message_bytes=lim.max_message_bytes,
                    max_body_bytes=lim.max_body_bytes,
                    max_subscriptions=lim.max_subscriptions,
                    rate_per_second=lim.rate_per_second,
                    rate_burst=lim.rate_burst,
                    max_presence_watch=lim.max_presence_watch,
                ),
                node=node.node_id,
            )
        )

    def _reject(self, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        try:
            self._write(
                self.ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
            )
            self._write(self.ws.send(RejectData(data=body, body_finished=True)))
        except Exception:  # handshake state too broken to answer
            pass

    async def _read_loop(self) -> None:
        ws = self.ws
        await self._process(ws)  # bytes that came right after the upgrade request
        while ws.state is not ConnectionState.CLOSED and not self.dead:
            try:
                data = await self.sock.recv(RECV_SIZE)
            except OSError:
                return
            if not data:
                ws.receive_data(None)
                await self._process(ws)
                return
            self.last_recv = trio.current_time()
            ws.receive_data(data)
            await self._process(ws)

    async def _process(self, ws: WSConnection | WSFrames) -> None:
        for event in ws.events():
            if self.dead:
                return
            if isinstance(event, TextMessage | BytesMessage):
                if self.closing:
                    continue
                data: bytes | str = (
                    bytes(event.data) if isinstance(event.data, bytearray) else event.data
                )
                self._size += len(data) if isinstance(data, bytes) else len(data.encode())
                if event.frame_finished:
                    self._frags += 1
                lim = self.node.settings.limits
                if self._size > lim.max_message_bytes:
                    self.close(
                        CloseCode.MESSAGE_TOO_BIG, f"message over {lim.max_message_bytes} bytes"
                    )
                    continue
                if self._frags > lim.max_fragments:
                    self.close(
                        CloseCode.POLICY_VIOLATION, f"more than {lim.max_fragments} fragments"
                    )
                    continue
                if not event.message_finished:
                    self._parts.append(data)
                    continue
                if self._parts:
                    self._parts.append(data)
                    parts, self._parts = self._parts, []
                    if isinstance(data, str):
                        data = "".join(cast("list[str]", parts))
                    else:
                        data = b"".join(cast("list[bytes]", parts))
                self._size = self._frags = 0
                await self._on_message(data)
            elif isinstance(event, Ping | Pong):
                # Control frames share the data frames' rate limit: a ping flood is
                # refused (no pong) and, past rate_strikes, closed with 4102.
                action = self.session.admit(trio.current_time())
                if isinstance(action, s.Close):
                    await self._do(action)
                elif (
                    action is None and isinstance(event, Ping) and ws.state is ConnectionState.OPEN
                ):
                    self._write(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self._write(ws.send(event.response()))
                    self.closing = True
                elif ws.state is ConnectionState.OPEN:  # parse failure inside wsproto
                    self.close(event.code, event.reason or "protocol error")
                    self.dead = True
                return

    async def _on_message(self, data: bytes | str) -> None:
        node = self.node
        node.metrics.frames_in.inc()
        now = trio.current_time()
        session = self.session
        try:
            frame = self.codec.decode_client(data)
        except ProtocolViolation as exc:
            action = session.admit(now) or session.decode_failed(exc)
        else:
            action = session.admit(now, frame) or session.receive(frame)
        if action is not None:
            await self._do(action)

    # ================================================================ actions

    async def _do(self, action: s.Action) -> None:
        if isinstance(action, s.Reply):
            if isinstance(action.frame, f.Error):
                self.node.metrics.errors.labels(action.frame.code).inc()
            self.send(action.frame)
        elif isinstance(action, s.DoPublish | s.DoChange):
            await self._publish(action.frame)
        elif isinstance(action, s.DoSubscribe):
            await self._subscribe(action.channel, action.since)
        elif isinstance(action, s.DoReceipt):
            await self._receipt(action.frame)
        elif isinstance(action, s.DoTyping):
            await self._typing(action.channel)
        elif isinstance(action, s.DoUnsubscribe):
            actor = self.node.registry.get(action.channel)
            if actor is not None:
                actor.detach(self)
            self._grants.pop(action.channel, None)
            self.session.unsubscribed(action.channel)
            self.send(f.Unsubscribed(channel=action.channel))
        elif isinstance(action, s.DoPresenceWatch):
            await self.node.presence.follow(self, action.users)
        elif isinstance(action, s.DoPresenceSet):
            await self.node.presence.set_status(self, action.status)
        elif isinstance(action, s.Authenticate):
            await self._authenticate(action)
        elif isinstance(action, s.Close):
            self.close(action.code, action.reason)

    def _error(
        self,
        code: ErrorCode,
        message: str,
        *,
        ref: str | None = None,
        channel: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.node.metrics.errors.labels(code.value).inc()
        self.send(s.error(code, message, ref=ref, channel=channel, retryable=retryable).frame)

    async def _authenticate(self, action: s.Authenticate) -> None:
        try:
            identity = await self.node.verifier.verify(action.token)
        except GatewayError as exc:
            self.node.metrics.auth_failures.inc()
            if exc.retryable:  # e.g. the JWKS endpoint is down: not the client's fault
                self.session.phase = s.Phase.CLOSED
                self.close(CloseCode.AUTH_UNAVAILABLE, "cannot verify tokens now; retry")
                return
            await self._do(self.session.auth_failed(exc.message))
            return
        self.identity = identity
        self.node.watch(self)  # its token's expiry is a new deadline
        self.send(self.session.auth_succeeded(identity.user))
        await self.node.presence.online(self, identity.user)
        if action.resume:
            for channel, position in action.resume.items():
                if self.closing:
                    return
                await self._subscribe(channel, position)

    async def _subscribe(self, channel: str, since: Position | None) -> None:
        identity = self.identity
        assert identity is not None
        revocations = self._revocations
        try:
            grant = await channel_access(self.node.domain, identity, channel)
            revoked = bool(grant.access) and await self.node.bus.revoked(identity.user, channel)
        except GatewayError as exc:
            self._error(exc.code, exc.message, channel=channel, retryable=exc.retryable)
            return
        if not grant.access:
            self._error(ErrorCode.FORBIDDEN, grant.reason, channel=channel)
            return
        if revoked:
            self._error(ErrorCode.FORBIDDEN, "access to this channel was revoked", channel=channel)
            return
        self._grants[channel] = grant
        registry = self.node.registry
        previous = registry.get(channel)
        if previous is not None:
            previous.detach(self)
        try:
            actor = await registry.acquire(channel)
            self.session.subscribed(channel)
            await actor.attach(self, since, self.node.settings.limits.replay_max)
        except trio.BrokenResourceError:
            self._grants.pop(channel, None)
            self.session.unsubscribed(channel)
            if not self.closing:
                self.send(f.Unsubscribed(channel=channel, reason="restart"))
        except GatewayError as exc:
            self._grants.pop(channel, None)
            self.session.unsubscribed(channel)
            self._error(exc.code, exc.message, channel=channel, retryable=exc.retryable)
            return
        if revocations != self._revocations and channel in self._grants:
            await self._recheck(channel)  # a revocation may have raced this subscribe

    async def _recheck(self, channel: str) -> None:
        identity = self.identity
        assert identity is not None
        try:
            grant = await channel_access(self.node.domain, identity, channel)
        except GatewayError:
            grant = Grant(Access.NONE)  # cannot tell: fail closed, the client resubscribes
        if grant.access and channel in self._grants:
            self._grants[channel] = grant
        else:
            self.revoke(channel)

    async def _may_post(self, channel: str, ref: str | None) -> bool:
        """POST access on a subscribed channel; a READ grant is re-checked (the user may
        have joined since), and refused with the grant's reason."""
        grant = self._grants.get(channel)
        if grant is not None and grant.access is Access.POST:
            return True
        identity = self.identity
        assert identity is not None
        try:
            grant = await channel_access(self.node.domain, identity, channel)
        except GatewayError as exc:
            self._error(exc.code, exc.message, ref=ref, channel=channel, retryable=exc.retryable)
            return False
        if channel in self._grants and grant.access:
            self._grants[channel] = grant
        if grant.access is Access.POST and channel in self._grants:
            return True
        self._error(ErrorCode.FORBIDDEN, grant.reason or "not allowed", ref=ref, channel=channel)
        return False

    async def _receipt(self, frame: f.Read | f.Delivered) -> None:
        user = self.session.user
        assert user is not None
        reads = self.node.reads
        try:
            if isinstance(frame, f.Read):
                receipt = await reads.mark_read(user, frame.channel, frame.offset)
            else:
                receipt = await reads.mark_delivered(user, frame.channel, frame.offset)
        except GatewayError as exc:
            self._error(exc.code, exc.message, channel=frame.channel, retryable=exc.retryable)
            return
        actor = self.node.registry.get(frame.channel)
        if receipt is not None and actor is not None:
            actor.receipt(user, receipt.delivered, receipt.read)

    async def _typing(self, channel: str) -> None:
        actor = self.node.registry.get(channel)
        user = self.session.user
        if actor is None or user is None or not await self._may_post(channel, None):
            return
        actor.typing(self, user)

    async def _publish(self, frame: f.Publish | f.Edit | f.Delete | f.React) -> None:
        """Publish, or edit/delete/react (``DoChange``): acked alike, by ``cmid``."""
        identity = self.identity
        assert identity is not None
        if not await self._may_post(frame.channel, frame.cmid):
            return
        messages = self.node.messages
        version = 0
        try:
            if isinstance(frame, f.Publish):
                appended = await messages.publish(identity.user, frame)
            else:
                grant = self._grants.get(frame.channel)
                workspace = None if grant is None else grant.workspace
                appended, version = await messages.change(identity.user, workspace, frame)
        except GatewayError as exc:
            self._error(
                exc.code,
                exc.message,
                ref=frame.cmid,
                channel=frame.channel,
                retryable=exc.retryable,
            )
            return
        metrics = self.node.metrics
        if appended.duplicate:
            metrics.duplicates.inc()
        else:
            metrics.published.inc()
        r = appended.record
        self.send(
            f.Ack(
                cmid=frame.cmid,
                channel=r.channel,
                offset=r.offset,
                epoch=r.epoch,
                id=r.id,
                duplicate=appended.duplicate,
                version=version,
            )
        )

    # ================================================================ teardown

    async def _finish(self) -> None:
        if self.identity is not None:  # presence I/O must not hold up the teardown
            self.node.spawn(functools.partial(self.node.presence.gone, self))
        registry = self.node.registry
        for channel in list(self.session.subscriptions):
            actor = registry.get(channel)
            if actor is not None:
                actor.detach(self)
        self.session.subscriptions.clear()
        if not self.dead and self.outbox:
            with trio.move_on_after(1.0):  # flush what is queued (a close frame, say)
                while self.outbox and not self.dead:
                    await self._wait_progress()
        self.dead = True
        self.sock.close()

    def statistics(self) -> dict[str, object]:
        return {
            "peer": self.peer,
            "session": self.session.id,
            "user": self.session.user,
            "subscriptions": len(self.session.subscriptions),
            "outbox_bytes": self.outbox_bytes,
            "phase": self.session.phase.value,
        }
