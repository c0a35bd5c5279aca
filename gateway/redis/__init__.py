"""A small Redis client for trio: pipelined RESP over trio sockets, parsed by hiredis.

Why not redis-py's own clients (``bench/redis_clients.py``, same run, 2-core VM): under
trio its asyncio client needs trio-asyncio (1.8-1.9k ops/s with 100 concurrent tasks,
about 0.5 ms of CPU per op) and its sync client a thread hop per call (4.6-5.3k ops/s,
190-220 us per op); this client did 27-34k ops/s at 29-37 us per op on the same work, by
writing commands from many tasks in one ``send_all`` and parsing replies with hiredis
(the parser redis-py itself uses); cluster slots come from ``redis.crc``.

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
