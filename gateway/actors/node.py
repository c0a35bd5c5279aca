"""A gateway node: the context every connection and channel actor shares.

It accepts WebSocket connections (``serve_websocket``), runs the ticker that sends
heartbeats and enforces the auth, idle and token-expiry deadlines, and drains on shutdown.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import trio

from gateway.actors.connection import Connection
from gateway.actors.domain import DomainService
from gateway.actors.files import FileService
from gateway.actors.messages import MessageService
from gateway.actors.presence import PresenceHub
from gateway.actors.reads import ReadService
from gateway.actors.registry import ChannelRegistry
from gateway.bus import Bus
from gateway.config import Settings
from gateway.errors import CloseCode
from gateway.metrics import Metrics
from gateway.presence.base import Presence
from gateway.protocol.session import Phase
from gateway.store.domain import DomainStore
from gateway.store.message_state import MessageStateStore
from gateway.store.read_state import ReadStateStore

if TYPE_CHECKING:
    from gateway.auth import Identity

__all__ = ["Node", "Verifier"]

log = logging.getLogger("gateway.node")
TICK = 1.0


class Verifier(Protocol):
    async def verify(self, token: str) -> Identity: ...


class Node:
    def __init__(
        self,
        settings: Settings,
        nursery: trio.Nursery,
        bus: Bus,
        verifier: Verifier,
        metrics: Metrics,
        *,
        presence: Presence,
        domain: DomainStore,
        states: MessageStateStore,
        read_state: ReadStateStore,
        files: FileService,
    ) -> None:
        self.settings = settings
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
        self._nursery = nursery
        self.bus = bus
        bus.on_revoke(self.revoke)  # revocations made on other nodes
        self.presence = PresenceHub(presence)
        self.domain: DomainStore = DomainService(domain, self)
        self.messages = MessageService(bus, states, self.domain, files)
        self.reads = ReadService(read_state, self.domain, states, bus, self.spawn)
        self.files = files  # uploaded files (gateway.actors.files)
        self.verifier = verifier
        self.metrics = metrics
        self.registry = ChannelRegistry(
            nursery,
            bus,
            metrics,
            hot_window=settings.hot_window,
            idle_timeout=settings.channel_idle_timeout,
        )
        self.connection_class: type[Connection] = Connection  # tests plug in variants
        self.connections: set[Connection] = set()
        self._handshaking: set[Connection] = set()
        # (when, tie-breaker, connection): each open connection's next deadline check, so
        # a tick looks at the connections that are due, not at all of them (a full scan
        # of 10,000 took 16 ms of every second on the bench VM, blocking the event loop)
        self._due: list[tuple[float, int, Connection]] = []
        self._due_seq = itertools.count()
        self.draining = False
        self._all_closed: trio.Event | None = None  # set by the last close while draining
        self.started_at = time.time()
        self._listeners: list[trio.SocketListener] = []
        self._origins = tuple(o.lower() for o in settings.allowed_origins)

    # ------------------------------------------------------------------ helpers

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._nursery.start_soon(fn)

    def origin_allowed(self, origin: str) -> bool:
        o = origin.lower()
        return any(p == "*" or fnmatch.fnmatchcase(o, p) for p in self._origins)

    @property
    def connection_count(self) -> int:
        return len(self.connections) + len(self._handshaking)

    def connection_opened(self, conn: Connection) -> None:
        self._handshaking.discard(conn)
        self.connections.add(conn)
        self.metrics.connections.set(len(self.connections))
        self.watch(conn)

    def watch(self, conn: Connection) -> None:
        """Schedule ``conn``'s next deadline check; call again when a deadline may have
        moved earlier (a new identity). Deadlines that only move later (the last receive,
        the last ping) need no call: a check that finds nothing due schedules the next."""
        self._schedule(conn, trio.current_time(), time.time())

    def _schedule(self, conn: Connection, now: float, wall: float) -> None:
        # a deadline reached exactly is not yet passed (the checks are strict): the next
        # tick takes it; never requeue at ``now``, which this tick would pop again
        due = max(min(self._deadlines(conn, now, wall)), now + 1e-6)
        conn.next_check = due
        heapq.heappush(self._due, (due, next(self._due_seq), conn))

    def _deadlines(
        self, conn: Connection, now: float, wall: float
    ) -> tuple[float, float, float, float]:
        """When ``conn``'s auth, idle, token-expiry and ping deadlines fall, on the trio
        clock (``inf``: none). The one definition both the checks and the heap use."""
        st = self.settings
        auth = conn.auth_deadline if conn.session.phase is not Phase.READY else math.inf
        ident = conn.identity
        expiry = math.inf
        if ident is not None and ident.expires_at is not None:
            expiry = now + (ident.expires_at + st.jwt_leeway - wall)
        return (
            auth,
            conn.last_recv + st.idle_timeout,
            expiry,
            conn.last_ping + st.heartbeat_interval,
        )

    def connection_closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.metrics.connections.set(len(self.connections))
        if len(self._due) > 2 * len(self.connections) + 1024:
            # entries of closed connections wait for their deadline before they are
            # dropped; under churn, drop them now rather than hold the connections
            live = self.connections
            self._due = [e for e in self._due if e[2] in live and e[2].next_check == e[0]]
            heapq.heapify(self._due)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    async def revoke_everywhere(self, user: str, channel: str) -> int:
        """Withdraw ``user``'s access to ``channel`` on every node at once, and bar new
        subscriptions for ``revocation_ttl``. Returns the local connections affected.
        Raises StoreUnavailable if the revocation could not be recorded."""
        await self.bus.revoke(user, channel, self.settings.revocation_ttl)
        return self.revoke(user, channel)

    async def kick(self, user: str, channel: str) -> None:
        """Make a membership change take effect on every node's connections now: end
        ``user``'s subscriptions to ``channel`` (``ws.<id>``: to the whole workspace), or
        with ``user`` empty, make everyone re-check posting rights on ``channel``. Records
        no bar (membership decides what a resubscribe gets). Raises StoreUnavailable if
        the other nodes could not be told."""
        self.revoke(user, channel)
        await self.bus.revoke(user, channel, 0)

    def revoke(self, user: str, channel: str) -> int:
        """Withdraw ``user``'s access to ``channel`` on every local connection at once;
        an empty ``user`` downgrades everyone's right to post on it to a re-check."""
        n = 0
        for conn in list(self.connections):
            if not user:
                conn.regrant(channel)
            elif conn.session.user == user:
                conn.revoke(channel)
                n += 1
        return n

    # ------------------------------------------------------------------ serving

    async def serve_websocket(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept WebSocket connections until cancelled; reports the bound port."""
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=4096)
        self._listeners = listeners
        bound = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener)
            task_status.started(bound)

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        sock = listener.socket
        async with trio.open_nursery() as nursery:
            while not self.draining:
                try:
                    conn_sock, addr = await sock.accept()
                except OSError as exc:  # EMFILE and friends: back off, do not die
                    log.warning("accept failed", extra={"error": str(exc)})
                    await trio.sleep(0.1)
                    continue
                except trio.ClosedResourceError:
                    return
                conn_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = self.connection_class(self, conn_sock, f"{addr[0]}:{addr[1]}")
                self._handshaking.add(conn)
                nursery.start_soon(self._run_connection, conn)

    async def _run_connection(self, conn: Connection) -> None:
        try:
            await conn.run()
        except Exception:
            log.exception("connection actor crashed", extra={"peer": conn.peer})
        finally:
            self._handshaking.discard(conn)
            self.connections.discard(conn)

    async def run_ticker(self) -> None:
        """Heartbeats, deadlines, idle channel reaping. One task for the whole node."""
        while True:
            woke = trio.current_time() + TICK
            await trio.sleep_until(woke)
            now = trio.current_time()
            wall = time.time()
            # any delay past the deadline is time the loop spent on work it could not
            # interrupt: a long synchronous loop, a full garbage collection, a blocking call
            self.metrics.loop_lag.observe(now - woke)
            for conn in list(self._handshaking):
                if now > conn.auth_deadline:
                    conn.scope.cancel()
            due = self._due
            while due and due[0][0] <= now:
                when, _, conn = heapq.heappop(due)
                if conn.next_check != when or conn.closing or conn not in self.connections:
                    continue  # rescheduled since, or on its way out
                self._check(conn, now, wall)
                if not conn.closing:
                    self._schedule(conn, now, wall)
            self.registry.reap_idle()

    def _check(self, conn: Connection, now: float, wall: float) -> None:
        auth, idle, expiry, ping = self._deadlines(conn, now, wall)
        if now > auth:
            conn.close(CloseCode.AUTH_TIMEOUT, "no successful auth in time")
        elif now > idle:
            conn.close(CloseCode.IDLE_TIMEOUT, "idle: nothing received")
        elif now > expiry:
            conn.close(CloseCode.SESSION_EXPIRED, "token expired: resume with a new one")
        elif now >= ping:
            conn.ping(now)

    # ------------------------------------------------------------------ shutdown

    async def drain(self, timeout: float) -> int:
        """Stop accepting, ask every client to resume elsewhere (4100), wait for them.

        Returns how many connections were still open when the timeout ran out.
        """
        self.draining = True
        for listener in self._listeners:
            await listener.aclose()
        for conn in list(self._handshaking):
            conn.scope.cancel()
        for conn in list(self.connections):
            conn.close(CloseCode.DRAINING, "server restarting: reconnect and resume")
        if self.connections:
            self._all_closed = trio.Event()
            with trio.move_on_after(timeout):
                await self._all_closed.wait()
        left = len(self.connections)
        for conn in list(self.connections):
            conn.scope.cancel()
        return left

    def statistics(self) -> dict[str, object]:
        return {
            "node": self.node_id,
            "connections": len(self.connections),
            "handshaking": len(self._handshaking),
            "channels": len(self.registry),
            "draining": self.draining,
            "uptime": time.time() - self.started_at,
        }
