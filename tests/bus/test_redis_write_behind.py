"""The Redis bus's write-behind against what the store answers: a channel refused alone,
late duplicates left out (and not announced), failures retried after a backoff."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from gateway.bus.redis import RedisBus, open_redis_bus
from gateway.errors import GatewayError
from gateway.model import Record
from gateway.redis import RedisClient, open_redis
from gateway.store.base import MessageStore, WriteBehindResult
from gateway.store.sqlite import SqliteStore, open_sqlite_store
from tests.contract import Faults, FaultyStore

T = 30  # seconds: deadline of each test body


class Refusing(FaultyStore):
    """Refuses the channels in ``refuse`` as a store whose log is in another epoch does."""

    def __init__(self, inner: MessageStore, refuse: set[str]) -> None:
        super().__init__(inner, Faults())
        self.refuse = refuse

    async def write_behind(self, records: Sequence[Record]) -> WriteBehindResult:
        result = await super().write_behind([r for r in records if r.channel not in self.refuse])
        for channel in {r.channel for r in records} & self.refuse:
            result.refused[channel] = f"channel {channel!r} is in epoch x, not y"
        return result


@asynccontextmanager
async def bus_on(
    tmp_path: Path,
    redis_url: str,
    *,
    refuse: set[str] | None = None,
    faults: Faults | None = None,
    **options: Any,
) -> AsyncIterator[tuple[RedisBus, SqliteStore, RedisClient]]:
    """A bus on a SQLite store, the store refusing the ``refuse`` channels or obeying
    ``faults``."""
    async with (
        open_sqlite_store(str(tmp_path / "m.db")) as store,
        open_redis(redis_url, timeout=1.0) as redis,
    ):
        front: MessageStore = store
        if refuse is not None:
            front = Refusing(store, refuse)
        elif faults is not None:
            front = FaultyStore(store, faults)
        prefix = "wb" + uuid.uuid4().hex[:8]
        async with open_redis_bus(redis, front, prefix=prefix, **options) as bus:
            yield bus, store, redis


async def until_written(bus: RedisBus, store: SqliteStore, channel: str, offset: int) -> None:
    while (await store.open_log(channel)).offset < offset:
        await trio.sleep(0.02)


async def test_a_refused_channel_waits_and_keeps_its_records_while_others_go_on(
    tmp_path: Path, redis_url: str
) -> None:
    with trio.fail_after(T):
        async with bus_on(tmp_path, redis_url, refuse={"bad"}, hot_window=2) as (bus, store, _):
            for i in range(6):
                await bus.append("bad", sender="u", cmid=f"b{i}", body=f"bad {i}")
                await bus.append("good", sender="u", cmid=f"g{i}", body=f"good {i}")
            await until_written(bus, store, "good", 6)
            while bus.statistics().persist_refused == 0:
                await trio.sleep(0.02)
            assert (await store.open_log("bad")).offset == 0
            # nothing of "bad" was trimmed: all of it still reads from Redis
            assert [r.body for r in await bus.read("bad", 0, 10)] == [f"bad {i}" for i in range(6)]
            await trio.sleep(0.3)  # several write-behind rounds: "bad" is not retried yet
            assert bus.statistics().persist_refused == 1


async def test_a_late_duplicate_is_left_out_and_not_announced(
    tmp_path: Path, redis_url: str
) -> None:
    with trio.fail_after(T):
        async with bus_on(tmp_path, redis_url, hot_window=2) as (bus, store, redis):
            first = (await bus.append("general", sender="u", cmid="once", body="first")).record
            await until_written(bus, store, "general", first.offset)
            # the idempotency window passes: Redis no longer knows the cmid
            keys = await redis.execute("KEYS", f"{bus.prefix}:{{general}}:ids:*")
            assert keys
            await redis.execute("DEL", *keys)
            late = await bus.append("general", sender="u", cmid="once", body="again")
            assert not late.duplicate and late.record.offset == first.offset + 1
            after = (await bus.append("general", sender="u", cmid="next", body="next")).record
            await until_written(bus, store, "general", after.offset)
            assert bus.statistics().late_duplicates == 1
            assert [r.body for r in await store.read("general", 0, 10)] == ["first", "next"]
            events = await redis.execute("XRANGE", bus.events_key, "-", "+")
            created = [dict(zip(e[1][::2], e[1][1::2], strict=True)) for e in events]
            bodies = [e[b"body"] for e in created if e[b"type"] == b"message.created"]
            assert bodies == [b"first", b"next"]


async def test_failed_writes_are_retried_after_a_backoff(tmp_path: Path, redis_url: str) -> None:
    with trio.fail_after(T):
        faults = Faults(fail_writes=4)
        async with bus_on(tmp_path, redis_url, faults=faults) as (bus, store, _):
            started = trio.current_time()
            record = (await bus.append("general", sender="u", cmid="c", body="b")).record
            await until_written(bus, store, "general", record.offset)
            assert bus.statistics().persist_failures == 4
            assert faults.calls["write_behind"] == 5
            # 4 backoffs of at least half of 0.1, 0.2, 0.4 and 0.8 s
            assert trio.current_time() - started >= 0.75


async def test_a_write_that_outlives_its_lease_still_counts(tmp_path: Path, redis_url: str) -> None:
    """A slow store: the lease lapses while the write runs. Nobody else took it, so the
    write is acknowledged when it returns, not done again (nor announced twice)."""
    with trio.fail_after(T):
        faults = Faults(hold=trio.Event())
        async with bus_on(tmp_path, redis_url, faults=faults) as (bus, store, redis):
            for i in range(3):
                await bus.append("general", sender="u", cmid=f"c{i}", body=f"b{i}")
            while faults.calls["write_behind"] == 0:
                await trio.sleep(0.01)
            assert await redis.execute("DEL", f"{bus.prefix}:{{general}}:lease") == 1
            assert faults.hold is not None
            faults.hold.set()
            await until_written(bus, store, "general", 3)
            while (
                bus.backlog
                or (await redis.execute("HGET", f"{bus.prefix}:{{general}}:m", "persisted")) != b"3"
            ):
                await trio.sleep(0.01)
            assert store.statistics().writes == 3  # each record written once
            events = await redis.execute("XRANGE", bus.events_key, "-", "+")
            created = [e for e in events if e[1][1] == b"message.created"]
            assert len(created) == 3


async def test_the_backlog_is_counted_while_a_write_hangs(tmp_path: Path, redis_url: str) -> None:
    """The audit does not wait for a write-behind call: the backlog gauge stays current
    while the store holds a call (a slow store, the retries of an outage)."""
    with trio.fail_after(T):
        faults = Faults(hold=trio.Event())
        async with bus_on(tmp_path, redis_url, faults=faults, audit_interval=0.05) as (
            bus,
            store,
            _,
        ):
            await bus.append("general", sender="u", cmid="c0", body="b0")
            while faults.calls["write_behind"] == 0:
                await trio.sleep(0.01)
            for i in range(1, 5):
                await bus.append("general", sender="u", cmid=f"c{i}", body=f"b{i}")
            while bus.statistics().persist_backlog != 5:
                await trio.sleep(0.01)
            assert faults.hold is not None
            faults.hold.set()
            while bus.statistics().persist_backlog:
                await trio.sleep(0.01)
            assert (await store.open_log("general")).offset == 5


class Denying(FaultyStore):
    """Refuses the first ``times`` calls the way AWS refuses a role without the permission:
    not retryable by the SDK, not "unavailable"."""

    def __init__(self, inner: MessageStore, times: int) -> None:
        super().__init__(inner, Faults())
        self.times = times

    async def write_behind(self, records: Sequence[Record]) -> WriteBehindResult:
        if self.times > 0:
            self.times -= 1
            raise GatewayError("AccessDeniedException: not authorized to BatchWriteItem")
        return await super().write_behind(records)


async def test_a_refused_call_is_retried_and_does_not_stop_the_bus(
    tmp_path: Path, redis_url: str
) -> None:
    with trio.fail_after(T):
        async with (
            open_sqlite_store(str(tmp_path / "m.db")) as store,
            open_redis(redis_url, timeout=1.0) as redis,
            open_redis_bus(redis, Denying(store, 2), prefix="wb" + uuid.uuid4().hex[:8]) as bus,
        ):
            record = (await bus.append("general", sender="u", cmid="c", body="b")).record
            await until_written(bus, store, "general", record.offset)
            assert bus.statistics().persist_failures == 2
            assert (await bus.append("general", sender="u", cmid="d", body="b")).record


async def test_a_channel_more_than_a_batch_behind_is_written_without_pauses(
    tmp_path: Path, redis_url: str
) -> None:
    """``persist_interval`` gathers a batch; a backlog of many batches (after an outage, or
    a node taking a channel over) is written back to back, not one batch per interval."""
    prefix = "bb" + uuid.uuid4().hex[:8]
    options: dict[str, Any] = {"prefix": prefix, "lease_ms": 300, "audit_interval": 0.1}
    with trio.fail_after(T):
        async with open_sqlite_store(str(tmp_path / "m.db")) as store:
            faults = Faults(fail_writes=10**6)  # this node never manages to write
            async with (
                open_redis(redis_url, timeout=1.0) as redis,
                open_redis_bus(redis, FaultyStore(store, faults), **options) as down,
            ):
                for i in range(20):
                    await down.append("backlog", sender="u", cmid=f"c{i}", body=f"m{i}")
            assert await store.read("backlog", 0, 30) == []
            # 5 batches of 4 with a 60 s interval: written within the deadline only if the
            # rounds after a full batch do not wait for the interval
            async with (
                open_redis(redis_url, timeout=1.0) as redis,
                open_redis_bus(
                    redis, store, max_batch=4, persist_interval=60.0, **options
                ) as catching_up,
            ):
                await until_written(catching_up, store, "backlog", 20)
                assert [r.body for r in await store.read("backlog", 0, 30)] == [
                    f"m{i}" for i in range(20)
                ]
                assert catching_up.statistics().commit_batches == 5
