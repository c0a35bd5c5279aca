"""The connection loop of the client: connect, authenticate or resume, read, reconnect.

A :class:`Connector` owns the supervisor task of one :class:`~gateway.client.Client`. It
opens a connection (``trio_websocket.open_websocket_url``), authenticates (``auth``, or
``resume`` with the last positions after a reconnect), then runs the reader (itself,
reading frames in order) next to the connection's writer task and heartbeat. When the
connection ends it decides, from the close code, whether to reconnect (full-jitter
exponential backoff) or to stop for good.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Sequence

import trio
import trio_websocket

from gateway.client._conn import CloseInfo, Conn
from gateway.client._errors import ConnectionClosed
from gateway.client._events import Disconnected
from gateway.client._state import State
from gateway.client._util import backoff_delay
from gateway.errors import ProtocolViolation, may_resume
from gateway.model import Position
from gateway.protocol import frames as f

__all__ = ["Connector", "TokenSource"]

log = logging.getLogger("gateway.client")

TokenSource = str | Callable[[], Awaitable[str]]
"""A JWT, or an async callable returning a fresh one (called once per connection)."""

CLOSE_TIMEOUT = 1.0  # budget for a graceful close handshake


class _ServerProtocolError(Exception):
    """The server broke the protocol during the handshake."""


class _TokenError(Exception):
    """The token callable raised; ``__cause__`` is what it raised."""


class Connector:
    """Runs the connections of one client, one after the other."""

    def __init__(
        self,
        state: State,
        url: str | Sequence[str],
        token: TokenSource,
        *,
        reconnect: bool,
        backoff_initial: float,
        backoff_max: float,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._state = state
        self._urls = [url] if isinstance(url, str) else list(url)
        if not self._urls:
            raise ValueError("open_client needs at least one URL")
        self._url_index = 0  # the next connection tries the next URL (failover)
        self._token = token
        self._reconnect = reconnect
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._gen = 0

    async def supervise(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Connect, run, and reconnect until told to stop or the close forbids it."""
        st = self._state
        first = True
        attempt = 0  # backoff exponent: reset once a connection stayed up long enough
        tries = 0  # attempts since the last connection that reached ready
        while True:
            info, ready_at = await self._run_connection(
                task_status if first else None, None if first else tries
            )
            st.last_close = info
            if st.closing:
                return
            if first and ready_at is None:
                raise ConnectionClosed(info.code, info.reason)
            resumable = self._reconnect and may_resume(info.code)
            if not resumable:
                log.info("connection closed for good: %s %s", info.code, info.reason)
                st.terminate(info, notice=True)
                return
            if ready_at is None:
                st.counters.connect_failures += 1
            else:
                first = False
                tries = 0
                st.notice(Disconnected(info.code, info.reason, will_reconnect=True))
                if trio.current_time() - ready_at >= self._backoff_max:
                    attempt = 0
            delay = backoff_delay(attempt, self._backoff_initial, self._backoff_max)
            attempt += 1
            tries += 1
            log.info("connection lost (%s %s); reconnecting in %.2fs", *info, delay)
            await trio.sleep(delay)

    async def _run_connection(
        self, task_status: trio.TaskStatus[None] | None, attempts: int | None
    ) -> tuple[CloseInfo, float | None]:
        """One connection from TCP connect to close. Returns why it ended and when it
        became ready (None if it never did)."""
        st = self._state
        conn: Conn | None = None
        opened: trio_websocket.WebSocketConnection | None = None
        info: CloseInfo | None = None
        scope = trio.CancelScope()
        try:
            with scope:
                url = self._urls[self._url_index % len(self._urls)]
                self._url_index += 1
                async with trio_websocket.open_websocket_url(
                    url,
                    self._ssl_context,
                    subprotocols=[st.codec.subprotocol],
                    connect_timeout=self._connect_timeout,
                    disconnect_timeout=CLOSE_TIMEOUT,
                ) as ws:
                    opened = ws
                    with trio.fail_after(self._connect_timeout):
                        hello, ready, resumed = await self._handshake(ws)
                    self._gen += 1
                    conn = Conn(self._gen, ws, hello, scope=scope, state=st, resumed=resumed)
                    async with trio.open_nursery() as nursery:
                        conn.nursery = nursery
                        nursery.start_soon(conn.run_writer)
                        if hello.heartbeat_ms > 0:
                            nursery.start_soon(conn.run_heartbeat, hello.heartbeat_ms / 1000)
                        st.attach(conn, ready, attempts)
                        if task_status is not None:
                            task_status.started()
                        info = await self._read_loop(conn)
                        nursery.cancel_scope.cancel()
        except trio_websocket.ConnectionClosed as exc:
            info = info or _close_info(exc.reason)
        except trio_websocket.ConnectionRejected as exc:
            # 503 (draining or full node) and other 5xx/408/429 are worth retrying; 400,
            # 403, 404 ... mean the URL, subprotocol or Origin must change: stop (1002).
            status = exc.status_code
            code = 1006 if status >= 500 or status in (408, 429) else 1002
            info = info or CloseInfo(code, f"handshake refused with HTTP {status}")
        except trio_websocket.HandshakeError as exc:
            cause = exc.__cause__ or exc
            info = info or CloseInfo(1006, f"cannot connect: {type(cause).__name__}: {cause}")
        except trio.TooSlowError:
            info = info or CloseInfo(1006, "timed out opening the connection")
        except OSError as exc:
            info = info or CloseInfo(1006, f"connection error: {exc}")
        except _TokenError as exc:
            if task_status is not None and exc.__cause__ is not None:
                raise exc.__cause__ from None  # first connection: the caller's own error
            log.warning("%s; retrying", exc)
            info = info or CloseInfo(1006, str(exc))
        except (_ServerProtocolError, ProtocolViolation) as exc:
            info = info or CloseInfo(1002, f"server protocol error: {exc}")
        finally:
            if conn is not None:
                st.detach(conn)
            if opened is not None:
                await _close_transport(opened)
        if info is None:
            info = (conn.abort_info if conn else None) or CloseInfo(1006, "connection lost")
        return info, None if conn is None else conn.ready_at

    async def _handshake(
        self, ws: trio_websocket.WebSocketConnection
    ) -> tuple[f.Hello, f.Ready, frozenset[str]]:
        st = self._state
        if ws.subprotocol != st.codec.subprotocol:
            raise _ServerProtocolError(f"server chose subprotocol {ws.subprotocol!r}")
        hello = self._decode_handshake(await ws.get_message())
        if not isinstance(hello, f.Hello):
            raise _ServerProtocolError(f"expected hello, got {type(hello).__name__}")
        if hello.v != f.PROTOCOL_VERSION:
            raise _ServerProtocolError(f"unsupported protocol version {hello.v}")
        if isinstance(self._token, str):
            token = self._token
        else:
            try:
                token = await self._token()
            except Exception as exc:
                raise _TokenError(f"the token callable failed: {exc!r}") from exc
        positions: dict[str, Position] = {}
        first: f.ClientFrame
        if st.session is None:
            first = f.Auth(token=token)
        else:
            positions = st.resume_positions(hello.limits.max_subscriptions)
            first = f.Resume(token=token, session=st.session, positions=positions)
        data = st.encode(first)
        await ws.send_message(data)
        st.counters.frames_sent += 1
        st.counters.bytes_sent += len(data)
        while True:
            frame = self._decode_handshake(await ws.get_message())
            if isinstance(frame, f.Ready):
                return hello, frame, frozenset(positions)
            if isinstance(frame, f.Error):
                log.warning("error during authentication: %s: %s", frame.code, frame.message)

    def _decode_handshake(self, data: bytes | str) -> f.ServerFrame:
        counters = self._state.counters
        counters.frames_received += 1
        counters.bytes_received += len(data)
        return self._state.codec.decode_server(data)

    async def _read_loop(self, conn: Conn) -> CloseInfo:
        """The reader: decode and dispatch frames in order until the socket closes."""
        st = self._state
        counters = st.counters
        decode = st.codec.decode_server
        ws = conn.ws
        while True:
            try:
                data = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return _close_info(exc.reason)
            conn.last_received = trio.current_time()
            counters.frames_received += 1
            counters.bytes_received += len(data)
            try:
                frame = decode(data)
            except ProtocolViolation as exc:  # e.g. a frame type from a newer server
                counters.decode_errors += 1
                log.debug("undecodable server frame ignored: %s", exc)
                continue
            await st.dispatch(conn, frame)

    async def shutdown(self) -> None:
        """Close the connection gracefully (bounded) and stop every waiting call."""
        st = self._state
        st.closing = True
        conn = st.conn
        # When we are being cancelled, trio-websocket's reader is cancelled too and the
        # close handshake cannot complete: then just drop the connection (the server sees
        # 1006, which it treats like a normal leave).
        cancelled = trio.current_effective_deadline() == -math.inf
        if conn is not None and not cancelled:
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await conn.ws.aclose(1000, "client closing")
        st.terminate(CloseInfo(1000, "client closed"), notice=False)


async def _close_transport(ws: trio_websocket.WebSocketConnection) -> None:
    """Close the TCP (or TLS) stream under a finished connection.

    trio-websocket's client never closes its socket itself when the server closed first
    (it waits for the server's TCP close, then just stops reading), and ``aclose()`` is a
    no-op once a close reason is set; without this the socket lingers until collected.
    """
    stream = getattr(ws, "_stream", None)
    if isinstance(stream, trio.abc.AsyncResource):
        await trio.aclose_forcefully(stream)


def _close_info(reason: trio_websocket.CloseReason | None) -> CloseInfo:
    if reason is None:
        return CloseInfo(1006, "connection lost")
    return CloseInfo(reason.code, reason.reason or "")
