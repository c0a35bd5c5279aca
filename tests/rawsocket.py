"""A bare TCP + wsproto client for tests that need to misbehave on the wire:
fragments, stray bytes, never answering pings, never reading."""

from __future__ import annotations

import socket
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from gateway.protocol import JSON


class RawSocket:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Event] = []

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawSocket:
        sock = trio.socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        return cls(trio.SocketStream(sock))

    async def handshake(
        self,
        *,
        target: str = "/ws",
        subprotocols: list[str] | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
        trailing: bytes = b"",
    ) -> Event:
        req = Request(
            host="127.0.0.1",
            target=target,
            subprotocols=["gateway.v1.json"] if subprotocols is None else subprotocols,
            extra_headers=extra or [],
        )
        await self.stream.send_all(self.ws.send(req) + trailing)
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                raise ConnectionError("closed during handshake")
            self.ws.receive_data(data)
            for ev in self.ws.events():
                if isinstance(ev, AcceptConnection | RejectConnection):
                    self.events.extend(e for e in self.ws.events())
                    return ev

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_event(self, ev: Event) -> None:
        await self.stream.send_all(self.ws.send(ev))

    async def send_text(self, text: str) -> None:
        await self.send_event(TextMessage(data=text))

    async def send_frame(self, frame: Any) -> None:
        await self.send_text(JSON.encode(frame).decode())

    async def next_event(self) -> Event:
        while not self.events:
            data = await self.stream.receive_some(65536)
            if not data:
                self.ws.receive_data(None)
            else:
                self.ws.receive_data(data)
            self.events.extend(self.ws.events())
            if not data and not self.events:
                raise ConnectionError("connection closed without a close frame")
        return self.events.pop(0)

    async def next_frame(self) -> Any:
        parts: list[Any] = []
        while True:
            ev = await self.next_event()
            if isinstance(ev, TextMessage | BytesMessage):
                parts.append(ev.data)
                if ev.message_finished:
                    data = "".join(parts) if isinstance(ev.data, str) else b"".join(parts)
                    return JSON.decode_server(data)
            if isinstance(ev, CloseConnection):
                raise ConnectionError(f"closed {ev.code} {ev.reason}")

    async def wait_close(self) -> CloseConnection:
        """Read (and discard) everything until the server's close frame."""
        while True:
            ev = await self.next_event()
            if isinstance(ev, CloseConnection):
                return ev

    async def reject_body(self) -> bytes:
        body = b""
        while True:
            ev = await self.next_event()
            if isinstance(ev, RejectData):
                body += ev.data
                if ev.body_finished:
                    return body

    async def aclose(self) -> None:
        await self.stream.aclose()


__all__ = ["Connection", "Message", "RawSocket"]
