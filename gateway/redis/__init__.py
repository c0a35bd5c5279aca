"""A small Redis client for trio: pipelined RESP over trio sockets, parsed by hiredis.

Why not redis-py's own clients: under trio its asyncio client needs trio-asyncio (about
13k pipelined commands/s here) and its sync client needs a thread hop per call (about
190 us of CPU each on a pinned core). This client writes commands from many tasks in
one ``send_all`` and parses replies with hiredis (the parser redis-py itself uses), and
computes cluster slots with ``redis.crc``. ``bench/redis_clients.py`` measures the three.

Only the bus and presence adapters use it; nothing above them knows which client runs.
"""

from gateway.redis.client import (
    RedisClient,
    RedisError,
    RedisUnavailable,
    Subscription,
    open_redis,
)

__all__ = ["RedisClient", "RedisError", "RedisUnavailable", "Subscription", "open_redis"]
