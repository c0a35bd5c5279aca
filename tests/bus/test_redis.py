"""The Redis bus under stress: several nodes (buses) on one Redis, concurrent appenders
with retries, tails opened at different places, a tiny hot window so the stream is
trimmed and old reads come from the store, and Redis restarted in the middle.

What must hold: every acknowledged append is in the log once; every tail sees every
offset exactly once, in order; all nodes agree on each offset's record; the store ends
up with the same log.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from gateway.bus.redis import RedisBus, open_redis_bus
from gateway.errors import StoreUnavailable
from gateway.model import Record
from gateway.redis import open_redis
from gateway.store.sqlite import SqliteStore, open_sqlite_store
from tests.services import RedisServer

CHANNELS = ("a", "b", "c")


@asynccontextmanager
async def nodes(
    tmp_path: Path, url: str, n: int, **options: object
) -> AsyncIterator[tuple[list[RedisBus], SqliteStore]]:
    prefix = "st" + uuid.uuid4().hex[:8]
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_sqlite_store(str(tmp_path / "m.db")))
        buses = []
        for _ in range(n):
            redis = await stack.enter_async_context(open_redis(url, timeout=1.0, max_backoff=0.2))
            bus = await stack.enter_async_context(
                open_redis_bus(redis, store, prefix=prefix, **options)
            )
            buses.append(bus)
        yield buses, store


async def append_until_acked(bus: RedisBus, channel: str, sender: str, cmid: str) -> Record:
    """What a client does: retry with the same cmid until acknowledged."""
    while True:
        try:
            return (await bus.append(channel, sender=sender, cmid=cmid, body=cmid)).record
        except StoreUnavailable:
            await trio.sleep(0.02)


async def read_tail(bus: RedisBus, channel: str, after: int, upto: int) -> list[Record]:
    got: list[Record] = []
    async with bus.open_tail(channel, after) as tail:
        async for batch in tail:
            got.extend(batch)
            if got and got[-1].offset >= upto:
                return got
    raise AssertionError("tail ended")


def check_log(records: Sequence[Record], after: int, upto: int) -> None:
    assert [r.offset for r in records] == list(range(after + 1, upto + 1))


async def stress(buses: list[RedisBus], per_writer: int, chaos: RedisServer | None) -> None:
    rng = random.Random(7)
    acked: dict[tuple[str, str], Record] = {}

    async def writer(w: int) -> None:
        bus = buses[w % len(buses)]
        for i in range(per_writer):
            channel = CHANNELS[(w + i) % len(CHANNELS)]
            cmid = f"w{w}-{i}"
            rec = await append_until_acked(bus, channel, f"u{w}", cmid)
            if rng.random() < 0.1:  # a client retry after a lost ack: the same record
                again = await append_until_acked(bus, channel, f"u{w}", cmid)
                assert again == rec
            acked[(f"u{w}", cmid)] = rec

    async with trio.open_nursery() as nursery:
        for w in range(9):
            nursery.start_soon(writer, w)
        if chaos is not None:
            await trio.sleep(0.3)
            await trio.to_thread.run_sync(chaos.stop)
            await trio.sleep(1.0)
            await trio.to_thread.run_sync(chaos.start)

    total = {ch: sum(1 for r in acked.values() if r.channel == ch) for ch in CHANNELS}
    assert sum(total.values()) == 9 * per_writer
    for ch in CHANNELS:
        offsets = sorted(r.offset for r in acked.values() if r.channel == ch)
        assert offsets == list(range(1, total[ch] + 1)), "an acked append is missing or doubled"
    # every node, from several starting points, sees each channel's whole log in order
    views: dict[str, list[Record]] = {}
    for k, bus in enumerate(buses):
        for ch in CHANNELS:
            start = (k * 7) % max(1, total[ch])
            got = await read_tail(bus, ch, start, total[ch])
            check_log(got, start, total[ch])
            if start == 0:
                views.setdefault(ch, got)
            assert got == views.get(ch, got)[start:] if ch in views else True
    for ch in CHANNELS:
        full = views.get(ch) or await read_tail(buses[0], ch, 0, total[ch])
        by_key = {(r.sender, r.cmid): r for r in full}
        for key, rec in acked.items():
            if rec.channel == ch:
                assert by_key[key] == rec


@pytest.mark.parametrize("kind", ["server", "cluster"])
async def test_many_nodes_many_writers_tiny_window(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("redis_url")
        if kind == "server"
        else request.getfixturevalue("redis_cluster").url
    )
    with trio.fail_after(120):
        async with nodes(tmp_path, url, 3, hot_window=8, persist_interval=0.01) as (buses, store):
            await stress(buses, 60, None)
            # the write-behind catches up: the store holds the same log
            for ch in CHANNELS:
                head = await buses[0].head(ch)
                while (await store.open_log(ch)).offset < head.offset:
                    await trio.sleep(0.05)
                stored = await store.read(ch, 0, 10_000)
                assert stored == list(await buses[1].read(ch, 0, 10_000))


async def test_redis_restart_in_the_middle(tmp_path: Path, fresh_redis: RedisServer) -> None:
    with trio.fail_after(120):
        async with nodes(tmp_path, fresh_redis.url, 2, hot_window=8, persist_interval=0.01) as (
            buses,
            _,
        ):
            await stress(buses, 40, fresh_redis)


async def test_a_retry_is_one_message_after_trimming_and_within_the_window(
    tmp_path: Path, redis_url: str
) -> None:
    """The cmid index does not follow the stream's trimming: a retry of a message that is
    only in the store any more is still the same message, read back from the store. Past
    two idempotency windows a retry is a new message (documented)."""
    with trio.fail_after(30):
        async with nodes(
            tmp_path, redis_url, 2, hot_window=2, persist_interval=0.01, idempotency_window=1.0
        ) as (buses, store):
            first = await buses[0].append("w", sender="u", cmid="keep", body="original")
            for i in range(20):
                await buses[0].append("w", sender="u", cmid=f"n{i}", body="x")
            while (await store.open_log("w")).offset < 21:
                await trio.sleep(0.02)
            again = await buses[1].append("w", sender="u", cmid="keep", body="changed")
            assert again.duplicate and again.record == first.record
            await trio.sleep(2.2)  # two windows of 1 s
            late = await buses[1].append("w", sender="u", cmid="keep", body="late")
            assert not late.duplicate and late.record.offset == 22
