"""The Bus contract: every guarantee of ``gateway.bus.base``, for every adapter."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

import pytest
import trio

from gateway.bus.base import Appended, Bus, BusStatistics
from gateway.errors import StoreUnavailable
from gateway.model import Position, Record
from tests.contract import DEADLINE, Faults
from tests.contract.conftest import Opener


async def send(bus: Bus, channel: str, n: int, *, sender: str = "alice") -> list[Record]:
    out = []
    for i in range(n):
        a = await bus.append(channel, sender=sender, cmid=f"{channel}-{i}", body=f"m{i}")
        out.append(a.record)
    return out


async def collect(tail: AsyncIterator[Sequence[Record]], n: int) -> list[Record]:
    got: list[Record] = []
    while len(got) < n:
        got.extend(await tail.__anext__())
    return got


def offsets(records: Sequence[Record]) -> list[int]:
    return [r.offset for r in records]


# -- head and append ---------------------------------------------------------------------


async def test_head_of_a_new_channel(bus: Bus) -> None:
    pos = await bus.head("general")
    assert isinstance(pos, Position)
    assert pos.offset == 0
    assert pos.epoch
    assert (await bus.head("general")).epoch == pos.epoch


async def test_append_assigns_offsets_one_by_one(bus: Bus) -> None:
    epoch = (await bus.head("general")).epoch
    t0 = time.time() * 1000
    a = await bus.append("general", sender="alice", cmid="c1", body="hello", thread=None)
    b = await bus.append("general", sender="bob", cmid="c1", body="reply", thread=a.record.id)
    t1 = time.time() * 1000
    assert isinstance(a, Appended)
    assert not a.duplicate and not b.duplicate
    assert a.record == Record("general", 1, epoch, f"{epoch}-1", "alice", "c1", "hello",
                              a.record.ts, None)  # fmt: skip
    assert b.record.offset == 2
    assert b.record.id == f"{epoch}-2"
    assert b.record.thread == a.record.id
    assert t0 - 1 <= a.record.ts <= b.record.ts <= t1 + 1
    assert await bus.head("general") == Position(epoch, 2)
    more = await send(bus, "general", 30)
    assert offsets(more) == list(range(3, 33))


async def test_kind_and_files_survive_every_path(bus: Bus) -> None:
    """Events (``kind``) and attachments (``files``) come back alike from the append,
    a retry, a read and a live tail."""
    files = ("f" + "a" * 24, "f" + "b" * 24)
    async with bus.open_tail("room", 0) as tail:
        m = await bus.append("room", sender="u", cmid="m", body="see", files=files)
        e = await bus.append("room", sender="u", cmid="~r:m", body="{}", kind="react")
        got: list[Record] = []
        with trio.fail_after(10):
            async for batch in tail:
                got += batch
                if len(got) >= 2:
                    break
    again = await bus.append("room", sender="u", cmid="m", body="see", files=files)
    assert again.duplicate
    read = list(await bus.read("room", 0, 10))
    for records in ([m.record, e.record], [again.record, e.record], read, got):
        assert [(r.kind, r.files) for r in records] == [("", files), ("react", ())]


async def test_channels_have_independent_logs(bus: Bus) -> None:
    await send(bus, "a", 3)
    b = await send(bus, "b", 2)
    assert offsets(b) == [1, 2]
    assert (await bus.head("a")).offset == 3
    assert (await bus.head("a")).epoch != (await bus.head("b")).epoch


# -- idempotency -------------------------------------------------------------------------


async def test_duplicate_cmid_returns_the_original(bus: Bus) -> None:
    first = await bus.append("general", sender="alice", cmid="k", body="one")
    again = await bus.append("general", sender="alice", cmid="k", body="changed body")
    assert again.duplicate
    assert again.record == first.record
    assert (await bus.head("general")).offset == 1
    assert offsets(await bus.read("general", 0, 10)) == [1]
    # the key is (channel, sender, cmid)
    other_sender = await bus.append("general", sender="bob", cmid="k", body="x")
    other_channel = await bus.append("random", sender="alice", cmid="k", body="x")
    assert not other_sender.duplicate and not other_channel.duplicate
    assert other_sender.record.offset == 2


async def test_concurrent_duplicates_make_one_record(bus: Bus) -> None:
    results: list[Appended] = []

    async def one(i: int) -> None:
        results.append(await bus.append("general", sender="alice", cmid="k", body=f"try {i}"))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
    assert len(results) == 50
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.record for r in results}) == 1
    assert (await bus.head("general")).offset == 1


async def test_duplicates_are_found_after_a_restart(bus_opener: Opener[Bus]) -> None:
    async with bus_opener.open() as bus:
        originals = await send(bus, "general", 5)
    async with bus_opener.open() as bus:
        results: list[Appended] = []

        async def one(i: int) -> None:
            results.append(await bus.append("general", sender="alice", cmid="general-3",
                                            body="retry"))  # fmt: skip

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(one, i)
        assert all(r.duplicate and r.record == originals[3] for r in results)
        fresh = await bus.append("general", sender="alice", cmid="new", body="x")
        assert not fresh.duplicate and fresh.record.offset == 6


# -- read --------------------------------------------------------------------------------


async def test_read_pages_forward(bus: Bus) -> None:
    sent = await send(bus, "general", 23)
    pages: list[Record] = []
    after = 0
    while page := await bus.read("general", after, 5):
        assert len(page) <= 5
        pages.extend(page)
        after = page[-1].offset
    assert pages == sent
    assert list(await bus.read("general", 10, 3)) == sent[10:13]
    assert list(await bus.read("general", 23, 3)) == []
    assert list(await bus.read("general", 99, 3)) == []
    assert list(await bus.read("general", 0, 0)) == []


# -- tails -------------------------------------------------------------------------------


async def test_tail_sees_records_before_and_after_it_opened(bus: Bus) -> None:
    before = await send(bus, "general", 7)
    with trio.fail_after(10):
        async with bus.open_tail("general", 0) as tail:
            assert await collect(tail, 7) == before
            after = [
                (await bus.append("general", sender="bob", cmid=f"b{i}", body="x")).record
                for i in range(5)
            ]
            assert await collect(tail, 5) == after


async def test_tail_starts_after_the_given_offset(bus: Bus) -> None:
    sent = await send(bus, "general", 10)
    with trio.fail_after(10):
        async with bus.open_tail("general", 6) as tail:
            assert await collect(tail, 4) == sent[6:]
        async with bus.open_tail("general", 10) as tail:
            more = await send(bus, "general", 2, sender="bob")
            assert await collect(tail, 2) == more


async def test_tail_yields_each_record_once_in_order_under_load(bus: Bus) -> None:
    n = 600
    await send(bus, "general", 50)
    got: list[Record] = []

    async def consume(tail: AsyncIterator[Sequence[Record]]) -> None:
        async for batch in tail:
            assert batch  # batches are never empty
            got.extend(batch)
            if len(got) >= n:
                return

    async def produce(k: int) -> None:
        for i in range(k * 50, (k + 1) * 50 if k < 10 else 550):
            await bus.append("general", sender="p", cmid=str(i), body="x")

    with trio.fail_after(20):
        async with bus.open_tail("general", 0) as tail, trio.open_nursery() as nursery:
            nursery.start_soon(consume, tail)
            for k in range(11):
                nursery.start_soon(produce, k)
    assert offsets(got) == list(range(1, n + 1))


async def test_a_tail_that_is_not_read_does_not_block_appends(bus: Bus) -> None:
    with trio.fail_after(30):
        async with bus.open_tail("general", 0) as idle, bus.open_tail("general", 0) as slow:
            await send(bus, "general", 3)
            await slow.__anext__()  # reads once, then never again
            async with bus.open_tail("general", 0) as live:
                sent = await send(bus, "general", 1200, sender="bob")
                got = await collect(live, 1203)
            assert got[3:] == sent
            # the idle tail still has everything, from the start
            assert offsets(await collect(idle, 1203)) == list(range(1, 1204))


async def test_many_tails_each_see_everything(bus: Bus) -> None:
    results: dict[int, list[int]] = {}

    async def watch(i: int, task_status: trio.TaskStatus[None]) -> None:
        async with bus.open_tail("general", 0) as tail:
            task_status.started()
            results[i] = offsets(await collect(tail, 100))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(20):
                await nursery.start(watch, i)
            await send(bus, "general", 100)
    assert all(v == list(range(1, 101)) for v in results.values()) and len(results) == 20


# -- concurrency -------------------------------------------------------------------------


async def test_concurrent_appends_across_channels(bus: Bus) -> None:
    channels = [f"ch{i}" for i in range(8)]
    per_task = 25
    results: list[Appended] = []

    async def producer(t: int) -> None:
        for i in range(per_task):
            ch = channels[(t + i) % len(channels)]
            results.append(await bus.append(ch, sender=f"u{t}", cmid=str(i), body=f"{t}:{i}"))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for t in range(40):
                nursery.start_soon(producer, t)
    assert len(results) == 40 * per_task
    for ch in channels:
        mine = [a.record for a in results if a.record.channel == ch]
        stored = await bus.read(ch, 0, 10_000)
        assert offsets(stored) == list(range(1, len(mine) + 1))  # no gaps
        assert sorted(mine, key=lambda r: r.offset) == list(stored)
        assert (await bus.head(ch)).offset == len(mine)
        # each producer's appends to one channel keep their order
        for t in range(40):
            seq = [int(r.body.split(":")[1]) for r in stored if r.sender == f"u{t}"]
            assert seq == sorted(seq)


# -- failures and durability -------------------------------------------------------------


async def test_a_failed_append_leaves_no_trace(bus: Bus, faults: Faults) -> None:
    await send(bus, "general", 2)
    with trio.fail_after(DEADLINE):
        async with bus.open_tail("general", 0) as tail:
            assert offsets(await collect(tail, 2)) == [1, 2]
            faults.fail_writes = 3
            for i in range(3):
                with pytest.raises(StoreUnavailable):
                    await bus.append("general", sender="alice", cmid=f"lost{i}", body="x")
            assert (await bus.head("general")).offset == 2
            assert offsets(await bus.read("general", 0, 10)) == [1, 2]
            # the same cmid again is not a duplicate: nothing was appended
            again = await bus.append("general", sender="alice", cmid="lost0", body="x")
            assert not again.duplicate
            assert again.record.offset == 3  # no gap
            assert offsets(await collect(tail, 1)) == [3]  # the tail saw nothing else
        assert offsets(await bus.read("general", 0, 10)) == [1, 2, 3]


async def test_concurrent_appends_fail_together_without_gaps(bus: Bus, faults: Faults) -> None:
    await send(bus, "general", 1)
    faults.fail_writes = 1_000_000
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        try:
            await bus.append("general", sender="alice", cmid=f"x{i}", body="x")
        except StoreUnavailable:
            failures += 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(one, i)
    assert failures == 30
    faults.fail_writes = 0
    sent = await send(bus, "general", 3, sender="bob")
    assert offsets(sent) == [2, 3, 4]
    assert offsets(await bus.read("general", 0, 100)) == [1, 2, 3, 4]


async def test_an_acknowledged_append_survives_a_restart(bus_opener: Opener[Bus]) -> None:
    async with bus_opener.open() as bus:
        sent = await send(bus, "general", 40)
        pos = await bus.head("general")
    async with bus_opener.open() as bus:
        assert await bus.head("general") == pos == Position(pos.epoch, 40)
        assert list(await bus.read("general", 0, 100)) == sent
        async with bus.open_tail("general", 35) as tail:
            assert await collect(tail, 5) == sent[35:]
        nxt = await bus.append("general", sender="z", cmid="z", body="z")
        assert nxt.record.offset == 41 and nxt.record.epoch == pos.epoch


async def test_a_fresh_backend_makes_a_new_epoch(bus_opener: Opener[Bus]) -> None:
    async with bus_opener.open("one") as one, bus_opener.open("two") as two:
        await send(one, "general", 2)
        a, b = await one.head("general"), await two.head("general")
    assert a.epoch != b.epoch and b.offset == 0


async def test_statistics(bus: Bus) -> None:
    await send(bus, "a", 3)
    await send(bus, "b", 2)
    await bus.append("a", sender="alice", cmid="a-0", body="dup")
    async with bus.open_tail("a", 0):
        stats = bus.statistics()
    assert isinstance(stats, BusStatistics)
    assert stats.appends == 5
    assert stats.duplicates == 1
    assert stats.tails_open == 1
    assert stats.channels == 2
    assert 1 <= stats.commit_batches <= 5
    assert bus.statistics().tails_open == 0
