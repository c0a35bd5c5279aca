"""A lean WebSocket client (RFC 6455) on a bare asyncio Protocol, for the load generator.

Why not the websockets client: at 1,000 subscribers x 50 messages/s the generator receives
50,000 frames/s on one core, and every microsecond of per-frame client work would show up as
"server latency". This client does the minimum: HTTP/1.1 upgrade, unmasked server frames in,
masked client frames out, answer pings, honour close. No extensions are offered, so every
server sends plain frames. Received text payloads go to ``on_text(payload, now_ns)`` once the
caller has set it; before that they queue for ``recv()`` (used for the setup handshakes).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import os
import struct
import time
from collections.abc import Callable
from typing import cast

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10

TextHandler = Callable[[bytes, int], None]


class WSClosedError(ConnectionError):
    """The connection closed (or never opened); ``code`` is the close code if one was sent."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n:
        k = int.from_bytes((key * (n // 4 + 1))[:n], "little")
        payload = (int.from_bytes(payload, "little") ^ k).to_bytes(n, "little")
    return key + payload


def _client_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + _mask(payload)


class WSClient(asyncio.Protocol):
    """One client connection. Create with :func:`connect`."""

    def __init__(self, request: bytes, key: bytes) -> None:
        self._request = request
        self._accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self._buf = bytearray()
        self._upgraded = False
        self._frag_op = 0
        self._frag = bytearray()
        self._inbox: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.on_text: TextHandler | None = None
        self.close_code: int | None = None
        self.subprotocol = ""

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded and not self._read_response():
            return
        now = time.perf_counter_ns()
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:
                self._fail(1002, "server frames must not be masked")
                return
            end = pos + head + length
            if end > size:
                break
            payload = bytes(buf[pos + head : end])
            pos = end
            self._frame(b0 & 0x0F, bool(b0 & 0x80), payload, now)
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(WSClosedError(f"connection lost during upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    # ------------------------------------------------------------------ frames
    def _read_response(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > 16384:
                self._fail(None, "oversized upgrade response")
            return False
        head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if not head[0].startswith("HTTP/1.1 101"):
            self._fail(None, f"upgrade refused: {head[0]}")
            return False
        if headers.get("sec-websocket-accept", "").encode() != self._accept:
            self._fail(None, "bad Sec-WebSocket-Accept")
            return False
        self.subprotocol = headers.get("sec-websocket-protocol", "")
        self._upgraded = True
        self.opened.set_result(None)
        return True

    def _frame(self, op: int, fin: bool, payload: bytes, now: int) -> None:
        if op == _OP_PING:
            self._write(_OP_PONG, payload)
            return
        if op == _OP_PONG:
            return
        if op == _OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._write(_OP_CLOSE, payload[:2])
            if self.transport is not None:
                self.transport.close()
            return
        if op != _OP_CONT and not fin:
            self._frag_op, self._frag = op, bytearray(payload)
            return
        if op == _OP_CONT:
            self._frag += payload
            if not fin:
                return
            op, payload = self._frag_op, bytes(self._frag)
            self._frag = bytearray()
        if op != _OP_TEXT and op != _OP_BINARY:
            return
        handler = self.on_text
        if handler is not None:
            handler(payload, now)
        else:
            self._inbox.append(payload)
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _write(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_client_frame(opcode, payload))

    def _fail(self, code: int | None, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(WSClosedError(reason, code))
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ public API
    def send_text(self, text: str | bytes) -> None:
        """Queue one masked text frame (no backpressure: the generator sends little)."""
        data = text.encode() if isinstance(text, str) else text
        self._write(_OP_TEXT, data)

    async def recv(self) -> bytes:
        """The next queued data payload (only while ``on_text`` is unset)."""
        while not self._inbox:
            if self.closed.done():
                raise WSClosedError("connection closed", self.close_code)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._inbox.popleft()

    def close(self, code: int = 1000) -> None:
        """Send a close frame and close the transport without waiting for the echo."""
        self._write(_OP_CLOSE, code.to_bytes(2, "big"))
        if self.transport is not None:
            self.transport.close()

    @property
    def is_open(self) -> bool:
        return self._upgraded and not self.closed.done()


async def connect(
    host: str,
    port: int,
    path: str = "/",
    subprotocol: str = "",
    origin: str = "",
    timeout: float = 10.0,
) -> WSClient:
    """Open a WebSocket connection; raise :class:`WSClosedError` or ``OSError`` on failure."""
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    if origin:
        lines.append(f"Origin: {origin}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, proto = await loop.create_connection(lambda: WSClient(request, key), host, port)
        try:
            await proto.opened
        except BaseException:
            if proto.transport is not None:
                proto.transport.abort()
            raise
    return proto
