"""Peer: python-socketio ``AsyncServer`` (ASGI, uvicorn + uvloop), one node of a cluster
joined by ``socketio.AsyncRedisManager`` (Redis pub/sub), as the library documents it.

Same events as bench/peers/sio_room.py: ``join`` (with an ack) enters the ``bench`` room,
``publish`` emits ``message`` with the body to the room. With ``--redis`` the manager hands
the emit to the local room members and PUBLISHes it on the ``socketio`` Redis channel; every
other node receives it there and emits it to its own members of the room. Without
``--redis`` it is the default in-memory manager (one node). WebSocket transport only, no
compression.

    python -m bench.peers.socketio_redis --port 9001 --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse

import socketio
import uvicorn

from bench.common import HOST, raise_nofile

ROOM = "bench"


def make_app(redis_url: str) -> socketio.ASGIApp:
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        transports=["websocket"],
        cors_allowed_origins="*",
        ping_interval=25,
        ping_timeout=20,
        http_compression=False,
        compression_threshold=1 << 30,
        logger=False,
        engineio_logger=False,
    )

    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True

    async def publish(sid: str, body: str) -> None:
        await sio.emit("message", body, room=ROOM)

    # on(event, handler) rather than @sio.on(event): python-socketio is untyped, and its
    # decorator would make the handlers untyped too
    sio.on("join", join)
    sio.on("publish", publish)

    return socketio.ASGIApp(sio)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", default="", help="redis://host:port/db; empty: one node")
    args = parser.parse_args()
    raise_nofile()
    uvicorn.run(
        make_app(args.redis),
        host=HOST,
        port=args.port,
        loop="uvloop",
        http="h11",
        ws="websockets",
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=3,
    )
