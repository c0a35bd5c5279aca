"""Peer: ``websockets.broadcast`` on uvloop, the fan-out floor the gateway is compared with.

Every connection is a subscriber: once registered it receives ``ok``. Any text a client
sends is broadcast to every registered connection (the sender included, as on the gateway,
where the publisher is subscribed too). No compression, as the gateway never negotiates it.

    python -m bench.peers.ws_broadcast --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.common import HOST, raise_nofile

CLIENTS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        await ws.send("ok")
        async for message in ws:
            broadcast(CLIENTS, message)
    finally:
        CLIENTS.discard(ws)


async def main(port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler,
        HOST,
        port,
        compression=None,
        max_size=64 * 1024,
        backlog=4096,
        ping_interval=25,
        ping_timeout=20,
    ):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    raise_nofile()
    uvloop.run(main(parser.parse_args().port))
