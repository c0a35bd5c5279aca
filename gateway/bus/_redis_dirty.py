"""The registry of channels that may hold records not yet written behind.

Write-behind is done per channel by whichever node holds its lease, and a node only
writes channels it has loaded. A node that appends to a channel and dies (or evicts
the channel) would leave its records in Redis, durable but never written to the store,
until some node loads that channel again. The registry closes that gap: before its
appends, a node marks the channel in one sorted set (``<prefix>:{ctl}:dirty``, score =
time of the mark, ms); every node's audit sweeps marks older than two leases, loads
those channels (which takes over their write-behind once the dead writer's lease
lapsed), and removes a mark once the channel is fully written, unless it was renewed
meanwhile.

Marks are renewed at most every half lease per channel and node, so the registry costs
one ``ZADD`` per busy channel every few seconds, not one per append. Why removal is
safe: an append at time t always follows a mark with score >= t - lease/2, and a sweep
at time s only removes marks older than s - 2 leases, after seeing ``persisted ==
head``, with a compare-and-delete on the score it read.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.errors import StoreUnavailable
from gateway.redis import RedisClient, RedisError, RedisUnavailable
from gateway.redis.client import Script

__all__ = ["DirtyRegistry"]

_UNMARK = Script(
    """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""
)
SWEEP_BATCH = 100


class DirtyRegistry:
    def __init__(self, redis: RedisClient, prefix: str, lease_ms: int) -> None:
        self.redis = redis
        self.key = f"{prefix}:{{ctl}}:dirty"
        self.lease_ms = lease_ms
        self._marked: dict[str, float] = {}  # channel -> when this node last marked it
        self.marks = 0  # ZADDs sent (statistics)

    async def mark(self, channel: str) -> None:
        """Before appending to ``channel``: make sure its mark is recent."""
        now = time.monotonic()
        if now - self._marked.get(channel, -1e9) < self.lease_ms / 2000:
            return
        try:
            await self.redis.execute("ZADD", self.key, "GT", _now_ms(), channel, key=self.key)
        except (RedisUnavailable, RedisError) as exc:
            raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc
        self.marks += 1
        self._marked[channel] = now
        if len(self._marked) > 100_000:
            self._marked.clear()

    async def stale(self) -> list[tuple[str, bytes]]:
        """Marks older than two leases (at most :data:`SWEEP_BATCH`): (channel, score)."""
        upto = _now_ms() - 2 * self.lease_ms
        try:
            reply: list[Any] = await self.redis.execute(
                "ZRANGEBYSCORE", self.key, "-inf", upto, "WITHSCORES", "LIMIT", 0, SWEEP_BATCH,
                key=self.key,
            )  # fmt: skip
        except (RedisUnavailable, RedisError) as exc:
            raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc
        return [(reply[i].decode(), reply[i + 1]) for i in range(0, len(reply), 2)]

    async def unmark(self, channel: str, score: bytes) -> None:
        """Remove the mark read as ``score``, unless it was renewed since."""
        try:
            await self.redis.run_script(_UNMARK, [self.key], [channel, score])
        except (RedisUnavailable, RedisError) as exc:
            raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
