"""The pipelined RESP connection under load and under failure, against real redis-server.

Every command here goes through :class:`RedisClient`, so what is tested is what callers
see: replies matched to callers across tasks, error replies, big values, and
:class:`RedisUnavailable` (quickly, never a hang or a wrong reply) when the server stops,
pauses or dies with commands in flight.
"""

from __future__ import annotations

import functools
import os
import uuid

import pytest
import trio

from gateway.redis.client import open_redis, parse_url
from gateway.redis.connection import Connection, RedisError, RedisUnavailable, encode
from tests.services import RedisServer


def unique(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex}"


def test_encode_is_resp_array_of_bulk_strings() -> None:
    assert encode(("SET", b"k\r\n", 12, 1.5)) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$3\r\n1.5\r\n"
    )
    assert encode(("SET", "é", "")) == b"*3\r\n$3\r\nSET\r\n$2\r\n\xc3\xa9\r\n$0\r\n\r\n"


async def test_execute_and_pipeline_round_trip(redis_url: str) -> None:
    key = unique("rt")
    async with open_redis(redis_url) as client:
        assert await client.execute("SET", key, "v1") == b"OK"
        assert await client.execute("GET", key) == b"v1"
        assert await client.execute("GET", unique("missing")) is None
        assert await client.pipeline(
            [("SET", key, 5), ("INCRBY", key, 3), ("GET", key), ("RPUSH", key + ":l", "a", "b")]
        ) == [b"OK", 8, b"8", 2]
        assert await client.execute("LRANGE", key + ":l", 0, -1) == [b"a", b"b"]
        assert await client.pipeline([]) == []
        await client.execute("DEL", key, key + ":l")
        assert client.cluster is False
        assert client.stats.connects == 1


async def test_error_replies_raised_by_execute_returned_by_pipeline(redis_url: str) -> None:
    key = unique("err")
    async with open_redis(redis_url) as client:
        await client.execute("SET", key, "not a number")
        with pytest.raises(RedisError, match="not an integer"):
            await client.execute("INCR", key)
        with pytest.raises(RedisError, match="unknown command"):
            await client.execute("NO-SUCH-COMMAND", key)
        replies = await client.pipeline(
            [("INCR", key), ("GET", key), ("LPUSH", key, "x"), ("ECHO", "after")]
        )
        assert isinstance(replies[0], RedisError)
        assert "not an integer" in str(replies[0])
        assert replies[1] == b"not a number"
        assert isinstance(replies[2], RedisError)
        assert str(replies[2]).startswith("WRONGTYPE")
        assert replies[3] == b"after"
        # Error replies are ordinary replies: the connection stays open and in step.
        assert await client.execute("ECHO", "in step") == b"in step"
        assert client.stats.connects == 1
        await client.execute("DEL", key)


async def test_concurrent_tasks_share_one_pipelined_connection(redis_url: str) -> None:
    shared = unique("incr")
    tasks, per_task = 200, 50
    seen: list[int] = []

    async with open_redis(redis_url) as client:

        async def worker(i: int) -> None:
            own = f"{shared}:{i}"
            for n in range(1, per_task + 1):
                seen.append(await client.execute("INCR", shared))
                # A reply only this caller can expect: a mix-up between tasks shows here.
                assert await client.execute("INCRBY", own, i + 1) == (i + 1) * n

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(tasks):
                    nursery.start_soon(worker, i)

        assert await client.execute("GET", shared) == b"10000"
        # Every INCR reply went to exactly one caller: the replies are 1..10000, once each.
        assert sorted(seen) == list(range(1, tasks * per_task + 1))
        assert client.stats.connects == 1
        await client.execute("DEL", shared, *[f"{shared}:{i}" for i in range(tasks)])


async def test_large_values_round_trip(redis_url: str) -> None:
    mib = 1 << 20
    keys = [unique("big") for _ in range(6)]
    values = [os.urandom(mib) for _ in keys]
    async with open_redis(redis_url) as client:
        assert await client.execute("SET", keys[0], values[0]) == b"OK"
        assert await client.execute("GET", keys[0]) == values[0]
        assert await client.execute("STRLEN", keys[0]) == mib

        async def set_get(key: str, value: bytes) -> None:
            assert await client.execute("SET", key, value) == b"OK"
            assert await client.execute("GET", key) == value

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for key, value in zip(keys, values, strict=True):
                    nursery.start_soon(set_get, key, value)
            assert await client.pipeline([("GET", k) for k in keys]) == values
        await client.execute("DEL", *keys)


# -- failures --------------------------------------------------------------------------------


async def test_stopped_redis_fails_fast_backs_off_and_recovers(fresh_redis: RedisServer) -> None:
    addr = parse_url(fresh_redis.url)
    async with open_redis(fresh_redis.url, timeout=5.0, max_backoff=0.5) as client:
        assert await client.execute("SET", "k", "v") == b"OK"
        await trio.to_thread.run_sync(fresh_redis.stop)

        # Well under the 5 s timeout: the open connection sees EOF, a new one is refused.
        start = trio.current_time()
        with trio.fail_after(1.0):
            while client.stats.connect_failures == 0:
                with pytest.raises(RedisUnavailable):
                    await client.execute("GET", "k")
        assert trio.current_time() - start < 0.5
        assert client._backoff[addr] == 0.05

        # Once the backoff has passed the next command tries again, and the backoff grows.
        await trio.sleep_until(client._down_until[addr])
        with pytest.raises(RedisUnavailable, match="cannot connect"):
            await client.execute("GET", "k")
        assert client.stats.connect_failures == 2
        assert client._backoff[addr] == 0.1

        # In backoff (50-100 ms now): commands fail at once, without trying to connect.
        down_until = client._down_until[addr]
        attempts = (client.stats.connects, client.stats.connect_failures)
        for _ in range(20):
            with pytest.raises(RedisUnavailable, match="cannot connect"):
                await client.execute("GET", "k")
        assert trio.current_time() < down_until  # all 20 ran inside the backoff
        assert (client.stats.connects, client.stats.connect_failures) == attempts

        # After a restart the client reconnects by itself (within max_backoff).
        await trio.to_thread.run_sync(fresh_redis.start)
        with trio.fail_after(3):
            while True:
                try:
                    value = await client.execute("GET", "k")
                    break
                except RedisUnavailable:
                    await trio.sleep(0.01)
        assert value == b"v"  # the AOF kept it
        assert addr not in client._backoff
        assert await client.execute("INCR", "n") == 1


async def test_paused_redis_times_out_after_timeout(fresh_redis: RedisServer) -> None:
    async with open_redis(fresh_redis.url, timeout=0.5) as client:
        assert await client.execute("PING") == b"PONG"
        fresh_redis.pause()
        try:
            # On the open connection: the reply never comes.
            start = trio.current_time()
            with trio.fail_after(3):
                with pytest.raises(RedisUnavailable, match=r"did not answer within 0\.5 s"):
                    await client.execute("PING")
            assert 0.45 <= trio.current_time() - start < 1.0

            # On a new connection (the kernel still accepts it), and for many callers at
            # once: all fail together after one timeout, not one after another.
            failures: list[float] = []

            async def ping() -> None:
                with pytest.raises(RedisUnavailable):
                    await client.execute("PING")
                failures.append(trio.current_time() - start)

            start = trio.current_time()
            with trio.fail_after(3):
                async with trio.open_nursery() as nursery:
                    for _ in range(50):
                        nursery.start_soon(ping)
            assert len(failures) == 50
            assert min(failures) >= 0.45
            assert max(failures) < 1.0
        finally:
            fresh_redis.resume()
        with trio.fail_after(2):
            assert await client.execute("PING") == b"PONG"


async def test_commands_in_flight_when_redis_dies_raise(fresh_redis: RedisServer) -> None:
    async with open_redis(fresh_redis.url, timeout=5.0) as client:
        outcomes: list[str] = []

        async def blocked(*command: str) -> None:
            with pytest.raises(RedisUnavailable):
                await client.execute(*command)
            outcomes.append("unavailable")

        start = 0.0
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                # BLPOP blocks the (shared) connection on the server: every command sent
                # after it stays in flight until the server dies.
                nursery.start_soon(blocked, "BLPOP", unique("never"), "0")
                await trio.sleep(0)
                for i in range(100):
                    nursery.start_soon(blocked, "ECHO", f"queued {i}")
                while "blocked_clients:1" not in str(fresh_redis.call("INFO", "clients")):
                    await trio.sleep(0.01)
                start = trio.current_time()
                await trio.to_thread.run_sync(fresh_redis.kill)
        assert outcomes == ["unavailable"] * 101
        assert trio.current_time() - start < 1.0  # not the 5 s timeout


async def test_kill_under_load_never_returns_a_wrong_reply(fresh_redis: RedisServer) -> None:
    async with open_redis(fresh_redis.url, timeout=5.0) as client:
        ok = 0
        unavailable = 0
        loaded = trio.Event()

        async def echo(i: int) -> None:
            nonlocal ok, unavailable
            for n in range(1_000_000):
                token = f"{i}:{n}:" + "x" * ((i * 7919 + n) % 3000)
                try:
                    reply = await client.execute("ECHO", token)
                except RedisUnavailable:
                    unavailable += 1
                    return
                assert reply == token.encode()
                ok += 1
                if ok >= 3000:
                    loaded.set()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(echo, i)
                await loaded.wait()
                await trio.to_thread.run_sync(fresh_redis.kill)
        assert ok >= 3000
        assert unavailable == 50


async def test_protocol_error_closes_the_connection() -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.receive_some(1024)
        await stream.send_all(b"@not resp\r\n")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, garbage, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        conn = await Connection.open(nursery, ("127.0.0.1", port), timeout=5.0)
        with trio.fail_after(1), pytest.raises(RedisUnavailable, match="protocol error"):
            await conn.execute("PING")
        assert conn.closed
        with pytest.raises(RedisUnavailable, match="protocol error"):
            await conn.execute("PING")
        with trio.fail_after(1):
            await conn.ended.wait()
        nursery.cancel_scope.cancel()
