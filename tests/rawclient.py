"""A protocol-level test client over trio-websocket: sends exactly what a test says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from gateway.protocol import JSON, MSGPACK, Codec
from gateway.protocol import frames as f

# log entries other than messages (edits, reactions, member and channel changes)
LOG_EVENTS = (
    f.MessageUpdated,
    f.MessageDeleted,
    f.ReactionEvent,
    f.ThreadEvent,
    f.MemberEvent,
    f.ChannelEvent,
)


class Raw:
    def __init__(self, ws: WebSocketConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec

    async def send(self, frame: f.ClientFrame) -> None:
        data = self.codec.encode(frame)
        await self.ws.send_message(data if self.codec.binary else data.decode())

    async def send_json(self, obj: Any) -> None:
        await self.ws.send_message(msgspec.json.encode(obj).decode())

    async def recv(self) -> f.ServerFrame:
        data = await self.ws.get_message()
        return self.codec.decode_server(data)

    async def expect(self, kind: type[f.ServerFrame], *, skip: tuple[type, ...] = ()) -> Any:
        """Next frame of type ``kind``; frames of types in ``skip`` are passed over."""
        while True:
            frame = await self.recv()
            if isinstance(frame, kind):
                return frame
            if not isinstance(frame, skip):
                raise AssertionError(f"expected {kind.__name__}, got {frame!r}")

    async def closed(self) -> tuple[int, str]:
        """Wait for the server to close; return (code, reason)."""
        try:
            while True:
                await self.ws.get_message()
        except ConnectionClosed as exc:
            reason = exc.reason
            assert reason is not None, "connection closed without a close reason"
            return reason.code, reason.reason or ""

    async def auth(self, token: str) -> f.Ready:
        await self.send(f.Auth(token=token))
        ready: f.Ready = await self.expect(f.Ready)
        return ready

    async def subscribe(
        self, channel: str, since: Any = None
    ) -> tuple[list[f.MessageEvent], f.Subscribed]:
        await self.send(f.Subscribe(channel=channel, since=since))
        replay: list[f.MessageEvent] = []
        while True:
            frame = await self.recv()
            if isinstance(frame, f.MessageEvent):
                replay.append(frame)
            elif isinstance(frame, f.Subscribed):
                return replay, frame
            elif not isinstance(frame, f.TypingEvent | LOG_EVENTS):
                raise AssertionError(f"unexpected {frame!r}")


@asynccontextmanager
async def raw_client(
    url: str, *, codec: Codec = JSON, token: str | None = None, **kw: Any
) -> AsyncIterator[Raw]:
    async with open_websocket_url(url, subprotocols=[codec.subprotocol], **kw) as ws:
        client = Raw(ws, codec)
        hello = await client.recv()
        assert isinstance(hello, f.Hello), hello
        if token is not None:
            await client.auth(token)
        yield client


__all__ = ["JSON", "MSGPACK", "Raw", "raw_client", "trio"]
