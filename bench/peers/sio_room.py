"""Peer: python-socketio ``AsyncServer`` (ASGI) under uvicorn with uvloop.

A client emits ``join`` (with an ack) to enter the ``bench`` room; the publisher emits
``publish`` with the body and the server emits ``message`` to the whole room (the publisher
is in it too, as on the gateway). WebSocket transport only, no compression.

    python -m bench.peers.sio_room --port 9001
"""

from __future__ import annotations

import argparse

import socketio
import uvicorn

from bench.common import HOST, raise_nofile

ROOM = "bench"

sio = socketio.AsyncServer(
    async_mode="asgi",
    transports=["websocket"],
    cors_allowed_origins="*",
    ping_interval=25,
    ping_timeout=20,
    http_compression=False,
    compression_threshold=1 << 30,
    logger=False,
    engineio_logger=False,
)
app = socketio.ASGIApp(sio)


async def join(sid: str, room: str) -> bool:
    await sio.enter_room(sid, room)
    return True


async def publish(sid: str, body: str) -> None:
    await sio.emit("message", body, room=ROOM)


# registered with on(event, handler) rather than as @sio.on(event): python-socketio is
# untyped, and its decorator would make the handlers untyped too
sio.on("join", join)
sio.on("publish", publish)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    raise_nofile()
    uvicorn.run(
        app,
        host=HOST,
        port=parser.parse_args().port,
        loop="uvloop",
        http="h11",
        ws="websockets",
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=3,
    )
