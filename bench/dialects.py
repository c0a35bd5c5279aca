"""How the load generator speaks to each server under test.

A dialect knows the URL path and subprotocol, the setup exchange that turns a fresh
connection into a live subscriber, how to wrap a message body into a publish frame, and what to
do with frames that are not bench messages (acks, pings, errors). Bench messages are recognised
by the marker inside their body, which every server forwards verbatim, so the hot receive path
is the same for all three servers and never parses JSON.

Body layout (exactly ``body_bytes`` long, ASCII only so no JSON escaping changes it)::

    bm~SSSSSSSS~TTTTTTTTTTTTTTTTTTT~xxxx...
        seq (8)  intended send time, perf_counter_ns (19)
"""

from __future__ import annotations

import json
from collections import Counter
from typing import ClassVar

from bench.common import HOST
from bench.wsclient import WSClient

MARKER = b"bm~"
SEQ_AT = len(MARKER)
SEQ_END = SEQ_AT + 8
TIME_AT = SEQ_END + 1
TIME_END = TIME_AT + 19
HEADER_LEN = TIME_END + 1
CHANNEL = "bench"


def make_body(seq: int, intended_ns: int, body_bytes: int) -> str:
    head = f"bm~{seq:08d}~{intended_ns:019d}~"
    return head + "x" * max(0, body_bytes - len(head))


class SetupError(RuntimeError):
    """The server refused or broke the setup exchange."""


class Dialect:
    """Base: subclasses fill in the wire details of one server."""

    name: ClassVar[str] = ""
    path: ClassVar[str] = "/"
    subprotocol: ClassVar[str] = ""

    def __init__(self, port: int, secret: str = "") -> None:
        self.port = port
        self.secret = secret
        self.acks = 0
        self.errors: Counter[str] = Counter()

    @property
    def origin(self) -> str:
        return ""

    async def setup(self, client: WSClient, index: int) -> None:
        """Bring a fresh connection to the point where it receives channel messages."""
        raise NotImplementedError

    def publish_frame(self, seq: int, body: str) -> str:
        raise NotImplementedError

    def on_other(self, client: WSClient, payload: bytes) -> None:
        """A frame without the bench marker arrived after setup."""
        self.errors["unexpected:" + payload[:40].decode("utf-8", "replace")] += 1


class WebsocketsPeer(Dialect):
    """bench/peers/ws_broadcast.py: the server says ``ok`` once the connection is
    registered; every text a client sends is broadcast to all connections."""

    name = "websockets"

    async def setup(self, client: WSClient, index: int) -> None:
        first = await client.recv()
        if first != b"ok":
            raise SetupError(f"expected ok, got {first[:80]!r}")

    def publish_frame(self, seq: int, body: str) -> str:
        return body


class SocketIOPeer(Dialect):
    """bench/peers/sio_room.py over the engine.io v4 / socket.io v5 wire protocol."""

    name = "socketio"
    path = "/socket.io/?EIO=4&transport=websocket"

    async def setup(self, client: WSClient, index: int) -> None:
        opening = await client.recv()
        if not opening.startswith(b"0{"):
            raise SetupError(f"expected engine.io open, got {opening[:80]!r}")
        client.send_text("40")
        while True:
            frame = await client.recv()
            if frame == b"2":
                client.send_text("3")
            elif frame.startswith(b"40"):
                break
            elif frame.startswith(b"44"):
                raise SetupError(f"socket.io connect refused: {frame[:120]!r}")
        client.send_text(f'421["join","{CHANNEL}"]')
        while True:
            frame = await client.recv()
            if frame == b"2":
                client.send_text("3")
            elif frame.startswith(b"431"):
                return

    def publish_frame(self, seq: int, body: str) -> str:
        return f'42["publish","{body}"]'

    def on_other(self, client: WSClient, payload: bytes) -> None:
        if payload == b"2":
            client.send_text("3")
        else:
            super().on_other(client, payload)


class Gateway(Dialect):
    """Our gateway, protocol v1 over JSON text frames."""

    name = "gateway"
    path = "/ws"
    subprotocol = "gateway.v1.json"

    def __init__(self, port: int, secret: str = "") -> None:
        super().__init__(port, secret)
        from bench.common import make_token

        self._token = make_token

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def _expect(self, client: WSClient, wanted: str) -> dict[str, object]:
        while True:
            frame = json.loads(await client.recv())
            kind = frame.get("type")
            if kind == wanted:
                return frame  # type: ignore[no-any-return]
            if kind == "error":
                raise SetupError(f"waiting for {wanted}: {frame}")

    async def setup(self, client: WSClient, index: int) -> None:
        await self._expect(client, "hello")
        token = self._token(self.secret, f"bench-{index}")
        client.send_text(json.dumps({"type": "auth", "token": token}))
        await self._expect(client, "ready")
        client.send_text(json.dumps({"type": "subscribe", "channel": CHANNEL}))
        await self._expect(client, "subscribed")

    def publish_frame(self, seq: int, body: str) -> str:
        return json.dumps({"type": "publish", "channel": CHANNEL, "cmid": f"c{seq}", "body": body})

    def on_other(self, client: WSClient, payload: bytes) -> None:
        if payload.startswith(b'{"type":"ack"'):
            self.acks += 1
            return
        try:
            frame = json.loads(payload)
        except ValueError:
            super().on_other(client, payload)
            return
        kind = frame.get("type")
        if kind == "ack":
            self.acks += 1
        elif kind == "error":
            self.errors[f"error:{frame.get('code')}"] += 1
        elif kind != "pong":
            self.errors[f"frame:{kind}"] += 1


DIALECTS: dict[str, type[Dialect]] = {d.name: d for d in (WebsocketsPeer, SocketIOPeer, Gateway)}
