"""The integration event stream: domain events for other systems, from Redis.

With the Redis bus, every message is announced on the stream ``<prefix>:events`` once it is
in the message store (``type=message.created``, with channel, id, offset, epoch, sender,
ts, thread and body), and a new channel log with ``type=channel.created``. Delivery is at
least once: de-duplicate by ``id`` (channel + epoch + offset).

Consumers use a Redis consumer group, so several workers share the stream and a worker
that dies leaves its unacknowledged events to the others: :func:`consume_events` claims
events that stayed pending longer than ``claim_after`` seconds. ``gateway events`` runs it
from the command line and prints one JSON object per event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from gateway.redis.client import RedisClient, RedisError

__all__ = ["Event", "consume_events", "ensure_group"]

Event = dict[str, str]


async def ensure_group(
    redis: RedisClient, prefix: str, group: str, *, from_start: bool = False
) -> None:
    """Create the consumer group (and the stream) unless it exists."""
    key = f"{prefix}:events"
    try:
        await redis.execute(
            "XGROUP", "CREATE", key, group, "0" if from_start else "$", "MKSTREAM", key=key
        )
    except RedisError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def consume_events(
    redis: RedisClient,
    prefix: str,
    group: str,
    consumer: str,
    handle: Callable[[str, Event], Awaitable[None]],
    *,
    count: int = 100,
    block_ms: int = 1000,
    claim_after: float = 30.0,
    stop: trio.Event | None = None,
) -> None:
    """Read events as ``consumer`` of ``group`` and acknowledge each once ``handle(id,
    event)`` returned. Use a client of its own: reads block its connection up to
    ``block_ms``. Runs until ``stop`` is set (or forever)."""
    key = f"{prefix}:events"
    await ensure_group(redis, prefix, group)
    next_claim = 0.0
    while stop is None or not stop.is_set():
        batch: list[tuple[str, Event]] = []
        if trio.current_time() >= next_claim:  # take over what a dead consumer left
            next_claim = trio.current_time() + claim_after / 2
            reply = await redis.execute(
                "XAUTOCLAIM", key, group, consumer, int(claim_after * 1000), "0",
                "COUNT", count, key=key,
            )  # fmt: skip
            batch = [_event(e) for e in reply[1] if e is not None]
        if not batch:
            reply = await redis.execute(
                "XREADGROUP", "GROUP", group, consumer, "COUNT", count, "BLOCK", block_ms,
                "STREAMS", key, ">", key=key,
            )  # fmt: skip
            if reply:
                batch = [_event(e) for e in reply[0][1]]
        for event_id, event in batch:
            await handle(event_id, event)
            await redis.execute("XACK", key, group, event_id, key=key)


def _event(entry: list[Any]) -> tuple[str, Event]:
    fields = entry[1]
    event = {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}
    return entry[0].decode(), event
