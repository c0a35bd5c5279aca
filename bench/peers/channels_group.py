"""Peer: Django Channels, one node of a cluster joined by channels-redis, under uvicorn +
uvloop.

A minimal ``AsyncWebsocketConsumer``: on connect it joins the ``bench`` group
(``group_add``), accepts and sends ``ok``; every text it receives goes to the whole group
with ``group_send``; the group handler writes the text to its socket. With ``--redis`` the
channel layer is ``channels_redis.core.RedisChannelLayer`` (the documented production
layer: one Lua script per group_send pushes the message once per receiving process, each
process pops it with BZPOPMIN); ``--layer pubsub`` takes
``channels_redis.pubsub.RedisPubSubChannelLayer`` instead. Without ``--redis`` it is
``InMemoryChannelLayer`` (one node). ``--capacity`` (default 1,000 messages per channel,
the library's default is 100) is raised so a burst is queued instead of silently dropped.

    python -m bench.peers.channels_group --port 9002 --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
from typing import Any

import django
import uvicorn
from django.conf import settings

from bench.common import HOST, raise_nofile

GROUP = "bench"


def configure(redis_url: str, layer: str, capacity: int) -> None:
    if not redis_url:
        backend: dict[str, Any] = {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": capacity},
        }
    elif layer == "pubsub":
        backend = {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_url]},
        }
    else:
        backend = {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "capacity": capacity},
        }
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={"default": backend},
        USE_TZ=True,
    )
    django.setup()


def make_app() -> Any:
    from channels.generic.websocket import AsyncWebsocketConsumer

    class GroupConsumer(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            await self.channel_layer.group_add(GROUP, self.channel_name)
            await self.accept()
            await self.send(text_data="ok")

        async def disconnect(self, code: int) -> None:
            await self.channel_layer.group_discard(GROUP, self.channel_name)

        async def receive(
            self, text_data: str | None = None, bytes_data: bytes | None = None
        ) -> None:
            await self.channel_layer.group_send(GROUP, {"type": "bench.message", "text": text_data})

        async def bench_message(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["text"])

    return GroupConsumer.as_asgi()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", default="", help="redis://host:port/db; empty: one node")
    parser.add_argument("--layer", choices=("core", "pubsub"), default="core")
    parser.add_argument("--capacity", type=int, default=1000, help="messages per channel")
    args = parser.parse_args()
    raise_nofile()
    configure(args.redis, args.layer, args.capacity)
    uvicorn.run(
        make_app(),
        host=HOST,
        port=args.port,
        loop="uvloop",
        http="h11",
        ws="websockets",
        ws_per_message_deflate=False,
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=3,
    )
