"""One RESP connection: commands from many tasks pipelined onto one socket.

A caller's command is encoded and appended to a buffer; whoever finds no send in
progress writes the whole buffer with one ``send_all`` and keeps writing what arrives
meanwhile, so concurrent callers share syscalls. Replies come back in order and are
handed to the waiting callers by one reader task. A connection that fails (EOF, a
protocol error, a send or reply that times out) is closed and fails every waiter with
:class:`RedisUnavailable`: whether those commands ran is unknown, so callers must only
retry what is idempotent (the bus retries appends with the same client message id).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import trio

__all__ = ["Arg", "Connection", "RedisError", "RedisUnavailable", "encode", "redirect"]

Arg = bytes | str | int | float


class RedisError(Exception):
    """An error reply from the server (``-ERR ...``, ``-MOVED ...``, ``-NOSCRIPT ...``)."""


class RedisUnavailable(Exception):
    """Redis could not be reached, or the connection broke: retry later.

    Commands in flight when a connection broke may or may not have run.
    """


def encode(args: Sequence[Arg]) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode()
        else:
            b = str(a).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


def redirect(replies: Sequence[Any]) -> tuple[str, int, tuple[str, int]] | None:
    """The first ``MOVED``/``ASK`` error reply in ``replies``: (kind, slot, (host, port))."""
    for r in replies:
        if isinstance(r, RedisError):
            text = str(r)
            if text.startswith(("MOVED ", "ASK ")):
                kind, slot, target = text.split(" ", 2)
                host, _, port = target.rpartition(":")
                return kind, int(slot), (host, int(port))
    return None


class _Waiter:
    __slots__ = ("count", "done", "replies", "since")

    def __init__(self, count: int, since: float) -> None:
        self.count = count  # replies still expected
        self.replies: list[Any] = []
        self.done = trio.Event()
        self.since = since  # when it was queued: the watchdog's clock


class Connection:
    """A pipelined connection; :meth:`open` connects and starts its reader in ``nursery``.

    ``on_push`` switches the connection to push mode (pub/sub): every reply goes to the
    callback instead of a waiter, and :meth:`send` is used without waiting.
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        address: tuple[str, int],
        *,
        timeout: float,
        on_push: Callable[[Any], None] | None = None,
    ) -> None:
        self.address = address
        self._stream = stream
        self._timeout = timeout
        self._on_push = on_push
        self._buf = bytearray()
        self._sending = False
        self._waiters: deque[_Waiter] = deque()
        self.closed = False
        self.error: str | None = None
        self.ended = trio.Event()

    @classmethod
    async def open(
        cls,
        nursery: trio.Nursery,
        address: tuple[str, int],
        *,
        timeout: float,
        on_push: Callable[[Any], None] | None = None,
    ) -> Connection:
        host, port = address
        try:
            with trio.fail_after(timeout):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            raise RedisUnavailable(f"cannot connect to Redis at {host}:{port}: {exc}") from exc
        conn = cls(stream, address, timeout=timeout, on_push=on_push)
        nursery.start_soon(conn._read_loop)
        if on_push is None:
            nursery.start_soon(conn._watchdog)
        return conn

    # -- commands ----------------------------------------------------------------------

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (an error reply is raised)."""
        reply = (await self.pipeline((args,)))[0]
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send several commands at once; replies in order, error replies as values."""
        if not commands:
            return []  # no reply would ever come: do not wait for one
        if self.closed:
            raise RedisUnavailable(self.error or "connection closed")
        waiter = _Waiter(len(commands), trio.current_time())
        self._waiters.append(waiter)
        await self.send(b"".join(encode(c) for c in commands))
        await waiter.done.wait()  # the watchdog closes the connection if it takes too long
        if waiter.count:
            raise RedisUnavailable(self.error or "connection closed")
        return waiter.replies

    async def send(self, data: bytes) -> None:
        """Queue bytes for the socket; the first sender writes for everyone."""
        if self.closed:
            raise RedisUnavailable(self.error or "connection closed")
        self._buf += data
        if self._sending:
            return
        self._sending = True
        try:
            while self._buf and not self.closed:
                chunk = bytes(self._buf)
                self._buf.clear()
                with trio.move_on_after(self._timeout) as scope:
                    scope.shield = True  # a half-written command would desync the stream
                    try:
                        await self._stream.send_all(chunk)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                        self.close(f"lost the connection to Redis at {self._where()}: {e}")
                if scope.cancelled_caught:
                    self.close(f"Redis at {self._where()} stopped reading for {self._timeout} s")
        finally:
            self._sending = False
        if self.closed:
            raise RedisUnavailable(self.error or "connection closed")

    async def _watchdog(self) -> None:
        """Close the connection when the oldest unanswered command waited ``timeout``.

        Replies come in order, so only the head of the queue needs watching: one timer
        per connection instead of a cancel scope per command (which cost about half the
        client CPU of a small command under load, bench/README.md).
        """
        tick = self._timeout / 4
        while not self.closed:
            await trio.sleep(tick)
            if self._waiters:
                waited = trio.current_time() - self._waiters[0].since
                if waited >= self._timeout:
                    self.close(f"Redis at {self._where()} did not answer within {self._timeout} s")
                    return

    # -- reading -----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reader = hiredis.Reader(replyError=RedisError)
        try:
            while not self.closed:
                try:
                    data = await self._stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self.close(f"lost the connection to Redis at {self._where()}: {exc}")
                    return
                if not data:
                    self.close(f"Redis at {self._where()} closed the connection")
                    return
                reader.feed(data)
                while True:
                    try:
                        reply = reader.gets()
                    except hiredis.ProtocolError as exc:
                        self.close(f"protocol error from Redis at {self._where()}: {exc}")
                        return
                    if reply is False:
                        break
                    self._dispatch(reply)
        finally:
            self.close(self.error or "connection closed")
            with trio.CancelScope(shield=True):
                await self._stream.aclose()
            self.ended.set()

    def _dispatch(self, reply: Any) -> None:
        if self._on_push is not None:
            self._on_push(reply)
            return
        if not self._waiters:
            self.close(f"unexpected reply from Redis at {self._where()}")
            return
        waiter = self._waiters[0]
        waiter.replies.append(reply)
        waiter.count -= 1
        if not waiter.count:
            self._waiters.popleft()
            waiter.done.set()

    def close(self, reason: str) -> None:
        """Mark closed and fail every waiter (the reader closes the socket)."""
        if self.closed:
            return
        self.closed = True
        self.error = reason
        for w in self._waiters:
            w.done.set()
        self._waiters.clear()
        # Wake the reader if it is blocked in receive_some.
        with contextlib.suppress(OSError):
            self._stream.socket.shutdown(2)

    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"
