"""Redis presence specifics: the key layout, server-time leases, versions, and faults."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from redis.crc import key_slot

from gateway.errors import StoreUnavailable
from gateway.presence.base import PresenceState
from gateway.presence.redis import RedisPresence, open_redis_presence
from gateway.redis.client import RedisClient, open_redis
from tests.contract.test_presence_contract import Recorder
from tests.services import RedisServer

TTL = 1.0
TTL_MS = int(TTL * 1000)
DAY_MS = 86_400_000
SLACK_MS = 50


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fresh_prefix() -> str:
    return "pt" + uuid.uuid4().hex[:10]


@asynccontextmanager
async def node(url: str, prefix: str, **kw: float) -> AsyncIterator[RedisPresence]:
    async with (
        open_redis(url, timeout=2.0, max_backoff=0.2) as redis,
        open_redis_presence(redis, prefix=prefix, ttl=TTL, **kw) as presence,
    ):
        yield presence


async def hgetall(redis: RedisClient, key: str) -> dict[str, str]:
    flat = await redis.execute("HGETALL", key, key=key)
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


async def server_ms(redis: RedisClient) -> int:
    sec, usec = await redis.execute("TIME")
    return int(sec) * 1000 + int(usec) // 1000


async def test_one_hash_per_user_with_devices_seen_and_expiry(redis_url: str) -> None:
    async with node(redis_url, fresh_prefix(), seen_retention=2 * 86400) as p:
        key, chan = p.keys("amy")
        assert key == f"{p.prefix}:{{p:amy}}" and chan == f"{key}:ch"
        assert key_slot(key.encode()) == key_slot(chan.encode())
        t0 = now_ms()
        await p.set_device("amy", "d1", "online")
        await p.set_device("amy", "d2", "away")
        h = await hgetall(p.redis, key)
        assert set(h) == {"d:d1", "d:d2", "agg", "ver"}
        status, expires = h["d:d1"].split("|")
        assert status == "online" and h["d:d2"].startswith("away|")
        assert t0 + TTL_MS - SLACK_MS <= int(expires) <= now_ms() + TTL_MS + SLACK_MS
        assert h["agg"] == "online" and int(h["ver"]) > 0
        pttl = await p.redis.execute("PTTL", key, key=key)
        assert 2 * DAY_MS <= pttl <= 2 * DAY_MS + TTL_MS  # kept after the last lease ends
        await p.remove_device("amy", "d1")
        gone = await p.remove_device("amy", "d2")
        h = await hgetall(p.redis, key)
        assert h["seen"] == str(gone.last_seen) and h["agg"] == f"offline|{gone.last_seen}"
        assert not [f for f in h if f.startswith("d:")]
        assert 2 * DAY_MS - 1000 <= await p.redis.execute("PTTL", key, key=key) <= 2 * DAY_MS
        assert await p.redis.execute("EXISTS", p.keys("never")[0], key=p.keys("never")[0]) == 0
        await p.get(["never"])  # reading a user never seen writes nothing
        assert await p.redis.execute("EXISTS", p.keys("never")[0], key=p.keys("never")[0]) == 0


async def test_lapses_are_judged_by_the_server_clock(redis_url: str) -> None:
    async with node(redis_url, fresh_prefix()) as p:
        key = p.keys("bo")[0]
        now = await server_ms(p.redis)
        # Another node's devices: one lapsed 5 s ago (by the server's clock), one live.
        await p.redis.execute(
            "HSET", key, "d:gone", f"online|{now - 5000}", "d:live", f"away|{now + 60_000}",
            "agg", "online", "ver", "1", key=key,
        )  # fmt: skip
        [state] = await p.get(["bo"])
        assert state.status == "away"
        h = await hgetall(p.redis, key)
        assert "d:gone" not in h and h["seen"] == str(now - 5000)  # purged when read
        await p.redis.execute("HSET", key, "d:live", f"away|{now - 1000}", key=key)
        assert await p.get(["bo"]) == [PresenceState("bo", "offline", now - 1000)]


async def test_versions_keep_growing_after_the_key_is_gone(redis_url: str) -> None:
    prefix = fresh_prefix()
    async with node(redis_url, prefix) as writer, node(redis_url, prefix) as watcher:
        seen = Recorder(watcher)
        await watcher.watch(["cy"])
        await writer.set_device("cy", "d1", "online")
        await seen.until("cy", "online")
        await writer.remove_device("cy", "d1")
        await seen.until("cy", "offline")
        key = writer.keys("cy")[0]
        assert await writer.redis.execute("DEL", key, key=key) == 1  # as if it expired
        await writer.set_device("cy", "d2", "online")
        await seen.until("cy", "online")  # not taken for an old version
        assert seen.statuses("cy") == ["online", "offline", "online"]


async def test_old_and_unreadable_publications_are_dropped(redis_url: str) -> None:
    async with node(redis_url, fresh_prefix()) as p:
        seen = Recorder(p)
        await p.watch(["di"])
        await p.set_device("di", "d1", "online")
        await seen.until("di", "online")
        chan = p.keys("di")[1]
        for junk in ("1|away|0", "nonsense", "9|busy|0", "0|offline|0"):
            await p.redis.execute("SPUBLISH", chan, junk, key=chan)
        await p.remove_device("di", "d1")
        await seen.until("di", "offline")
        assert seen.statuses("di") == ["online", "offline"]  # nothing old, nothing unchanged


async def test_changes_missed_while_resubscribing_are_read_again(
    fresh_redis: RedisServer,
) -> None:
    prefix = fresh_prefix()
    async with node(fresh_redis.url, prefix) as writer, node(fresh_redis.url, prefix) as watcher:
        seen = Recorder(watcher)
        await watcher.watch(["ed"])
        deliver = watcher._sub._on_message
        for i in range(3):
            for status in ("online", "offline"):  # offline users are not polled: re-read only
                watcher._sub._on_message = lambda chan, data: None  # lost, as in a disconnect
                if status == "online":
                    await writer.set_device("ed", f"d{i}", "online")
                else:
                    await writer.remove_device("ed", f"d{i}")
                watcher._sub._on_message = deliver
                await trio.to_thread.run_sync(fresh_redis.call, "CLIENT", "KILL", "TYPE", "pubsub")
                await seen.until("ed", status)
        assert seen.statuses("ed") == ["online", "offline"] * 3


async def test_redis_down_raises_store_unavailable_and_devices_come_back(
    fresh_redis: RedisServer,
) -> None:
    async with node(fresh_redis.url, fresh_prefix()) as p:
        await p.set_device("fi", "d1", "online")
        await trio.to_thread.run_sync(fresh_redis.stop)
        with pytest.raises(StoreUnavailable):
            await p.set_device("fi", "d2", "away")  # kept: renewed once Redis is back
        with pytest.raises(StoreUnavailable):
            await p.get(["fi"])
        with pytest.raises(StoreUnavailable):
            await p.watch(["fi"])
        with pytest.raises(StoreUnavailable):
            await p.remove_device("fi", "d1")  # not kept: left to lapse
        await trio.to_thread.run_sync(fresh_redis.start)
        with trio.fail_after(3 * TTL):
            while True:
                try:
                    [state] = await p.get(["fi"])
                    h = await hgetall(p.redis, p.keys("fi")[0])
                    if state.status == "away" and "d:d1" not in h:
                        break
                except StoreUnavailable:
                    pass
                await trio.sleep(0.05)
        assert h["d:d2"].startswith("away|")


async def test_a_device_lost_by_redis_is_set_again_but_a_removed_one_is_not(
    redis_url: str,
) -> None:
    async with node(redis_url, fresh_prefix()) as p:
        key = p.keys("gus")[0]
        await p.set_device("gus", "d1", "away")
        await p.redis.execute("HDEL", key, "d:d1", key=key)  # Redis lost it
        with trio.fail_after(2 * TTL):
            while (await p.get(["gus"]))[0].status != "away":
                await trio.sleep(0.05)
        await p.remove_device("gus", "d1")
        await trio.sleep(TTL)  # three renewal periods: nothing may bring it back
        assert (await p.get(["gus"]))[0].status == "offline"


async def test_a_failing_handler_is_logged_and_reports_go_on(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with node(redis_url, fresh_prefix()) as p:
        got: list[PresenceState] = []

        def handler(state: PresenceState) -> None:
            got.append(state)
            raise RuntimeError("boom")

        p.on_change(handler)
        await p.watch(["hal"])
        with caplog.at_level(logging.ERROR, "gateway.presence.redis"):
            await p.set_device("hal", "d1", "online")
            await p.remove_device("hal", "d1")
        assert [s.status for s in got] == ["online", "offline"]
        assert "handler failed" in caplog.text


async def test_a_state_equal_to_the_last_report_is_not_reported(redis_url: str) -> None:
    async with node(redis_url, fresh_prefix()) as p:
        seen = Recorder(p)
        await p.watch(["ivy"])
        p._offer("ivy", 2**60, "offline", 0)  # newer, but what was last reported: coalesced
        p._offer("ivy", 2**60 + 1, "offline", 5)  # offline since another time: a change
        p._offer("ivy", 2**60 + 3, "online", 7)
        p._offer("ivy", 2**60 + 2, "away", 6)  # older than the last one seen
        assert [(s.status, s.last_seen) for s in seen.states] == [("offline", 5), ("online", 7)]


async def test_bad_options_and_a_closed_adapter(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        with pytest.raises(ValueError):
            RedisPresence(redis, prefix="a{b}")
        with pytest.raises(ValueError):
            RedisPresence(redis, ttl=0)
        async with open_redis_presence(redis, prefix=fresh_prefix(), ttl=TTL) as p:
            await p.set_device("jo", "d1", "online")
            await p.aclose()
            assert (await RedisPresence(redis, p.prefix).get(["jo"]))[0].status == "offline"
            with pytest.raises(StoreUnavailable):
                await p.set_device("jo", "d1", "online")
            with pytest.raises(StoreUnavailable):
                await p.get(["jo"])
