"""MemoryBus beyond the contract: group commit, failure recovery, hot window, shutdown."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.bus.base import Appended, Bus
from gateway.bus.memory import MemoryBus, open_memory_bus
from gateway.errors import StoreUnavailable
from gateway.model import Position, Record
from gateway.store.sqlite import open_sqlite_store
from tests.contract import DEADLINE, Faults, FaultyStore


@asynccontextmanager
async def open_bus(
    tmp_path: Path, faults: Faults, store_cls: type[FaultyStore] = FaultyStore, **kw: int
) -> AsyncIterator[tuple[MemoryBus, FaultyStore]]:
    with trio.fail_after(DEADLINE):
        async with open_sqlite_store(str(tmp_path / "bus.sqlite3")) as inner:
            store = store_cls(inner, faults)
            async with open_memory_bus(store, **kw) as bus:
                yield bus, store


def _memory_bus_is_a_bus(bus: MemoryBus) -> Bus:
    return bus  # mypy checks the structural match


async def test_appends_are_group_committed(tmp_path: Path) -> None:
    faults = Faults(hold=trio.Event())
    results: list[Appended] = []

    async def one(i: int) -> None:
        results.append(await bus.append(f"ch{i % 5}", sender="u", cmid=str(i), body="x"))

    async with open_bus(tmp_path, faults) as (bus, store):
        for i in range(5):
            await bus.head(f"ch{i}")  # loaded: no thread runs while we wait below
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
            assert faults.calls["write"] == 1  # the first batch is being written
            assert faults.hold is not None
            faults.hold.set()
        assert len(results) == 100
        # the batch taken while the others queued, and at most one more for the rest
        batches = bus.statistics().commit_batches
        assert batches == faults.calls["write"] == store.statistics().batches <= 2


async def test_batches_are_bounded_and_appends_wait_for_room(tmp_path: Path) -> None:
    faults = Faults(hold=trio.Event())
    async with open_bus(tmp_path, faults, max_batch=4) as (bus, _):
        await bus.head("c")
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(partial(bus.append, "c", sender="u", cmid=str(i), body=""))
            await trio.testing.wait_all_tasks_blocked()
            assert len(bus._queue) <= 8 * 4  # at most max_pending queued
            assert faults.hold is not None
            faults.hold.set()
        assert bus.statistics().commit_batches == faults.calls["write"] >= 25
        assert [r.offset for r in await bus.read("c", 0, 200)] == list(range(1, 101))


async def test_tails_see_nothing_before_commit(tmp_path: Path) -> None:
    faults = Faults(hold=trio.Event())
    got: list[Record] = []
    async with open_bus(tmp_path, faults) as (bus, _):
        async with bus.open_tail("c", 0) as tail, trio.open_nursery() as nursery:

            async def consume() -> None:
                got.extend(await tail.__anext__())

            nursery.start_soon(consume)
            nursery.start_soon(lambda: bus.append("c", sender="u", cmid="1", body=""))
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            assert list(await bus.read("c", 0, 10)) == []
            assert (await bus.head("c")).offset == 0
            assert faults.hold is not None
            faults.hold.set()
        assert [r.offset for r in got] == [1]


async def test_a_failed_batch_fails_the_appends_queued_behind_it(tmp_path: Path) -> None:
    faults = Faults(hold=trio.Event())
    outcome: dict[str, int | str] = {}

    async def one(name: str, channel: str) -> None:
        try:
            a = await bus.append(channel, sender="u", cmid=name, body="")
            outcome[name] = a.record.offset
        except StoreUnavailable:
            outcome[name] = "failed"

    async with open_bus(tmp_path, faults) as (bus, _):
        await bus.head("c1")
        await bus.head("c2")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "a", "c1")
            await trio.testing.wait_all_tasks_blocked()  # batch [a] is being written
            nursery.start_soon(one, "b", "c1")  # queued behind a, same channel
            nursery.start_soon(one, "c", "c2")  # queued, another channel
            await trio.testing.wait_all_tasks_blocked()
            faults.fail_writes = 1
            assert faults.hold is not None
            faults.hold.set()
        assert outcome == {"a": "failed", "b": "failed", "c": 1}
        loads = faults.calls["open_log"]
        d = await bus.append("c1", sender="u", cmid="d", body="")
        assert d.record.offset == 1  # no gap where a and b were
        assert faults.calls["open_log"] == loads + 1  # the head was reloaded from the store
        assert [r.cmid for r in await bus.read("c1", 0, 10)] == ["d"]


async def test_a_write_that_landed_but_failed_leaves_no_gap(tmp_path: Path) -> None:
    faults = Faults()
    async with open_bus(tmp_path, faults) as (bus, _):
        async with bus.open_tail("c", 0) as tail:
            faults.land_then_fail = 1
            with pytest.raises(StoreUnavailable):
                await bus.append("c", sender="u", cmid="k", body="")
            retry = await bus.append("c", sender="u", cmid="k", body="")
            assert retry.duplicate and retry.record.offset == 1
            nxt = await bus.append("c", sender="u", cmid="n", body="")
            assert nxt.record.offset == 2
            seen: list[int] = []
            with trio.fail_after(5):
                while len(seen) < 2:
                    seen.extend(r.offset for r in await tail.__anext__())
            assert seen == [1, 2]


async def test_reads_and_cmids_beyond_the_hot_window_use_the_store(tmp_path: Path) -> None:
    faults = Faults()
    async with open_bus(tmp_path, faults, hot_window=4) as (bus, _):
        sent = [(await bus.append("c", sender="u", cmid=str(i), body="")).record for i in range(5)]
        assert faults.calls["find_cmid"] == 0  # a new channel's cmids are all in memory
        for i in range(5, 10):  # cmid 0 has left memory: each new cmid is looked up
            sent.append((await bus.append("c", sender="u", cmid=str(i), body="")).record)
        assert faults.calls["find_cmid"] == 5
        assert list(await bus.read("c", 7, 10)) == sent[7:]
        assert faults.calls["read"] == 0
        assert list(await bus.read("c", 0, 10)) == sent
        assert faults.calls["read"] == 1
        assert (await bus.append("c", sender="u", cmid="9", body="")).duplicate
        assert faults.calls["find_cmid"] == 5  # found in memory
        old = await bus.append("c", sender="u", cmid="0", body="")
        assert old.duplicate and old.record == sent[0]
        assert faults.calls["find_cmid"] == 6  # found in the store


async def test_a_channel_is_loaded_once(tmp_path: Path) -> None:
    faults = Faults()
    heads: list[Position] = []
    async with open_bus(tmp_path, faults) as (bus, _):

        async def head() -> None:
            heads.append(await bus.head("c"))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(head)
        assert faults.calls["open_log"] == 1
        assert len(set(heads)) == 1
        assert bus.statistics().channels == 1


class SlowLookups(FaultyStore):
    """find_cmid waits for ``gate`` (to hold an append between its cmid and its offset)."""

    gate = trio.Event()

    async def find_cmid(self, channel: str, sender: str, cmid: str) -> Record | None:
        await self.gate.wait()
        return await super().find_cmid(channel, sender, cmid)


async def test_a_twin_takes_over_when_the_first_append_is_cancelled(tmp_path: Path) -> None:
    faults = Faults()
    SlowLookups.gate = trio.Event()
    async with open_bus(tmp_path, faults, SlowLookups, hot_window=1) as (bus, _):
        await bus.append("c", sender="u", cmid="old1", body="")
        await bus.append("c", sender="u", cmid="old2", body="")  # evicts old1: lookups on
        results: list[Appended] = []
        async with trio.open_nursery() as nursery:
            first = trio.CancelScope()

            async def original() -> None:
                with first:
                    await bus.append("c", sender="u", cmid="k", body="")

            async def twin() -> None:
                results.append(await bus.append("c", sender="u", cmid="k", body=""))

            nursery.start_soon(original)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(twin)
            await trio.testing.wait_all_tasks_blocked()
            first.cancel()
            await trio.testing.wait_all_tasks_blocked()
            SlowLookups.gate.set()
        assert len(results) == 1 and not results[0].duplicate
        assert results[0].record.offset == 3


async def test_a_failed_lookup_fails_the_append_and_its_twins(tmp_path: Path) -> None:
    faults = Faults()
    async with open_bus(tmp_path, faults, hot_window=1) as (bus, _):
        await bus.append("c", sender="u", cmid="a", body="")
        await bus.append("c", sender="u", cmid="b", body="")
        faults.fail_reads = True
        failed = 0

        async def one() -> None:
            nonlocal failed
            with pytest.raises(StoreUnavailable):
                await bus.append("c", sender="u", cmid="k", body="")
            failed += 1

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
        assert failed == 3
        faults.fail_reads = False
        assert (await bus.append("c", sender="u", cmid="k", body="")).record.offset == 3


class LosingStore(FaultyStore):
    """Pretends the store lost the channel: open_log answers a new epoch once ``lost``."""

    lost = False

    async def open_log(self, channel: str) -> Position:
        pos = await super().open_log(channel)
        return Position("new-epoch", 0) if self.lost else pos


async def test_an_epoch_change_ends_tails(tmp_path: Path) -> None:
    faults = Faults()
    async with open_bus(tmp_path, faults, LosingStore) as (bus, store):
        await bus.append("c", sender="u", cmid="1", body="")
        async with bus.open_tail("c", 1) as tail:
            faults.fail_writes = 1
            with pytest.raises(StoreUnavailable):
                await bus.append("c", sender="u", cmid="2", body="")
            assert isinstance(store, LosingStore)
            store.lost = True
            assert await bus.head("c") == Position("new-epoch", 0)
            with trio.fail_after(5), pytest.raises(StoreUnavailable, match="epoch"):
                await tail.__anext__()


async def test_close_commits_queued_appends_then_refuses_new_ones(tmp_path: Path) -> None:
    faults = Faults(hold=trio.Event())
    done: list[int] = []
    async with open_bus(tmp_path, faults) as (bus, _):
        async with bus.open_tail("c", 0) as tail, trio.open_nursery() as nursery:
            for i in range(10):

                async def one(i: int = i) -> None:
                    done.append(
                        (await bus.append("c", sender="u", cmid=str(i), body="")).record.offset
                    )

                nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(bus.aclose)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(StoreUnavailable, match="closed"):
                await bus.append("c", sender="u", cmid="late", body="")
            assert faults.hold is not None
            faults.hold.set()
        assert sorted(done) == list(range(1, 11))
        with trio.fail_after(5):
            assert [b async for b in tail] == []  # a closed bus ends its tails
    async with open_sqlite_store(str(tmp_path / "bus.sqlite3")) as store:
        assert (await store.open_log("c")).offset == 10


async def test_appends_need_the_writer(tmp_path: Path) -> None:
    async with open_sqlite_store(":memory:") as store:
        bus = MemoryBus(store)
        with pytest.raises(RuntimeError, match="open_memory_bus"):
            await bus.append("c", sender="u", cmid="1", body="")
        with pytest.raises(ValueError):
            MemoryBus(store, hot_window=0)


class Broken(FaultyStore):
    async def write(self, records: object) -> None:
        raise RuntimeError("a bug in the store")


async def test_a_crashing_writer_fails_waiting_appends_and_surfaces(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_bus(tmp_path, Faults(), Broken) as (bus, _):
            try:
                await bus.append("c", sender="u", cmid="1", body="")
            except BaseException as exc:
                errors.append(exc)
                raise
    assert info.group_contains(RuntimeError, match="a bug")
    assert len(errors) == 1 and isinstance(errors[0], StoreUnavailable | trio.Cancelled)


async def test_acknowledged_appends_are_on_disk_before_close(tmp_path: Path) -> None:
    async with open_bus(tmp_path, Faults()) as (bus, _):
        sent = [(await bus.append("c", sender="u", cmid=str(i), body="")).record for i in range(3)]
        async with open_sqlite_store(str(tmp_path / "bus.sqlite3")) as other:
            assert list(await other.read("c", 0, 10)) == sent


_CHILD = """
import sys, trio
from gateway.bus.memory import open_memory_bus
from gateway.store.sqlite import open_sqlite_store

async def main():
    opened = open_sqlite_store(sys.argv[1], durability=sys.argv[2])
    async with opened as store, open_memory_bus(store) as bus:
        async def one(t):
            for i in range(100_000):
                a = await bus.append(f"c{t % 3}", sender=str(t), cmid=str(i), body="x")
                print(a.record.channel, a.record.offset, flush=True)
        async with trio.open_nursery() as nursery:
            for t in range(10):
                nursery.start_soon(one, t)

trio.run(main)
"""


@pytest.mark.parametrize("durability", ["full", "interval"])
async def test_acknowledged_appends_survive_sigkill(tmp_path: Path, durability: str) -> None:
    path = str(tmp_path / "killed.sqlite3")
    acked: dict[str, int] = {}
    with trio.fail_after(DEADLINE):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-c", _CHILD, path, durability], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        buffer = b""
        while sum(acked.values()) < 300:
            chunk = await proc.stdout.receive_some()
            assert chunk, "the child exited early"
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                channel, text = line.decode().split()
                acked[channel] = max(acked.get(channel, 0), int(text))
        proc.kill()  # SIGKILL: no clean shutdown, no flush
        await proc.wait()
        await proc.stdout.aclose()
        async with open_sqlite_store(path) as store:
            for channel, offset in acked.items():
                pos = await store.open_log(channel)
                assert pos.offset >= offset  # everything acknowledged is there
                records = await store.read(channel, 0, pos.offset)
                assert [r.offset for r in records] == list(range(1, pos.offset + 1))


async def test_idle_channels_are_forgotten_and_reload_correctly(tmp_path: Path) -> None:
    faults = Faults()
    async with open_bus(tmp_path, faults, max_idle_channels=3) as (bus, _):
        async with bus.open_tail("kept", 0) as tail:
            for i in range(10):
                await bus.append(f"c{i}", sender="u", cmid="x", body=str(i))
            await bus.append("kept", sender="u", cmid="k", body="k")
            # at most 3 idle channels are remembered, plus the one with an open tail
            assert bus.statistics().channels <= 4
            assert [r.body for r in await tail.__anext__()] == ["k"]
        # an evicted channel reloads its head and still deduplicates from the store
        again = await bus.append("c0", sender="u", cmid="x", body="again")
        assert again.duplicate and again.record.offset == 1
        fresh = await bus.append("c0", sender="u", cmid="y", body="next")
        assert fresh.record.offset == 2 and not fresh.duplicate
