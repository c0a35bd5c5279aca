"""Group commit of the Redis bus: appends queued behind a call in flight go as one call.

A :class:`Gate` wraps the client's ``run_script`` (as ``FaultyRedis`` in
``tests/contract/conftest.py`` does): it records each APPEND call's batch size, can hold
the first call until the test has queued what it wants, and can fail a call before or
after Redis ran it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from gateway.bus._redis_chan import encode_body
from gateway.bus.base import Appended
from gateway.bus.redis import RedisBus, open_redis_bus
from gateway.bus.redis_scripts import APPEND
from gateway.errors import StoreUnavailable
from gateway.model import Record
from gateway.redis.client import RedisClient, RedisUnavailable, Script, open_redis
from gateway.redis.connection import Arg
from gateway.store.sqlite import open_sqlite_store

DEADLINE = 30.0


class Gate:
    """Counts APPEND calls; ``hold`` makes the next call wait for ``release``; ``fail``
    makes the next N calls raise before running, ``land_then_fail`` after running."""

    def __init__(self, client: RedisClient) -> None:
        self.inner = client.run_script
        self.batches: list[int] = []  # entries per APPEND call, in call order
        self.hold = False
        self.release = trio.Event()
        self.fail = 0
        self.land_then_fail = 0
        self.truncate = 0  # the next N replies lose their last result
        client.run_script = self.run_script  # type: ignore[method-assign]

    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        if script is not APPEND:
            return await self.inner(script, keys, args)
        self.batches.append((len(args) - 1) // 2)
        if self.hold:
            self.hold = False
            await self.release.wait()
        if self.fail:
            self.fail -= 1
            raise RedisUnavailable("injected: the connection broke before the call")
        reply = await self.inner(script, keys, args)
        if self.land_then_fail:
            self.land_then_fail -= 1
            raise RedisUnavailable("injected: the connection broke after the call ran")
        if self.truncate:
            self.truncate -= 1
            return reply[:-1]
        return reply


@asynccontextmanager
async def open_nodes(
    tmp_path: Path, url: str, n: int = 1, **options: Any
) -> AsyncIterator[list[tuple[RedisBus, Gate]]]:
    prefix = "gc" + uuid.uuid4().hex[:8]
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_sqlite_store(str(tmp_path / "m.db")))
        out = []
        for _ in range(n):
            redis = await stack.enter_async_context(open_redis(url, timeout=2.0, max_backoff=0.2))
            gate = Gate(redis)
            bus = await stack.enter_async_context(
                open_redis_bus(redis, store, prefix=prefix, **options)
            )
            out.append((bus, gate))
        yield out


@pytest.fixture(params=["server", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "server":
        return str(request.getfixturevalue("redis_url"))
    return str(request.getfixturevalue("redis_cluster").url)


async def queue_behind_held_call(
    bus: RedisBus, gate: Gate, channel: str, sends: list[tuple[str, str, str]]
) -> list[Appended | StoreUnavailable]:
    """Send ``sends`` (sender, cmid, body) concurrently, in that order, while the first
    one's call is held; then release it. Results in the order of ``sends``."""
    results: list[Appended | StoreUnavailable | None] = [None] * len(sends)

    async def one(i: int, sender: str, cmid: str, body: str) -> None:
        try:
            results[i] = await bus.append(channel, sender=sender, cmid=cmid, body=body)
        except StoreUnavailable as exc:
            results[i] = exc

    await bus.head(channel)  # loaded: the appends below queue in the order started
    gate.release = trio.Event()
    gate.hold = True
    async with trio.open_nursery() as nursery:
        for i, (sender, cmid, body) in enumerate(sends):
            nursery.start_soon(one, i, sender, cmid, body)
            await trio.testing.wait_all_tasks_blocked()
        gate.release.set()
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def records(results: Sequence[Appended | StoreUnavailable]) -> list[Record]:
    out = []
    for r in results:
        assert isinstance(r, Appended), r
        out.append(r.record)
    return out


async def test_appends_queued_behind_a_call_go_in_few_calls(tmp_path: Path, url: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, url) as [(bus, gate)]:
            sends = [(f"u{i % 7}", f"m{i}", f"body {i}") for i in range(200)]
            results = records(await queue_behind_held_call(bus, gate, "c", sends))
            # the first alone (the channel was idle), the other 199 in batches of <= 64
            assert gate.batches == [1, 64, 64, 64, 7]
            assert bus.append_calls == 5
            assert [r.offset for r in results] == list(range(1, 201))  # queue order
            for (sender, cmid, body), rec in zip(sends, results, strict=True):
                assert (rec.sender, rec.cmid, rec.body) == (sender, cmid, body)
            assert list(await bus.read("c", 0, 500)) == results
            assert bus.statistics().appends == 200


async def test_an_idle_channel_sends_each_append_at_once(tmp_path: Path, redis_url: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, redis_url) as [(bus, gate)]:
            for i in range(5):
                await bus.append("c", sender="u", cmid=f"m{i}", body="x")
            assert gate.batches == [1] * 5


async def test_a_batch_is_bounded_by_bytes(tmp_path: Path, redis_url: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, redis_url, append_batch_bytes=3000) as [(bus, gate)]:
            sends = [("u", f"m{i}", "x" * 1000) for i in range(10)]
            results = records(await queue_behind_held_call(bus, gate, "c", sends))
            assert gate.batches == [1, 3, 3, 3]  # a batch stops once 3000 bytes are in
            assert [r.offset for r in results] == list(range(1, 11))


async def test_duplicates_inside_one_batch_are_found_per_entry(tmp_path: Path, url: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, url, n=2) as [(bus, gate), (other, _)]:
            old = (await other.append("c", sender="u", cmid="old", body="old")).record
            sends = [
                ("u", "first", "1"),  # the held call, alone
                ("u", "a", "a"),
                ("v", "a", "same cmid, another sender: another message"),
                ("u", "old", "a retry of a message another node sent"),
                ("u", "a", "a retry inside the batch"),
                ("u", "first", "a retry of the call in front"),
                ("u", "b", "b"),
            ]
            got = await queue_behind_held_call(bus, gate, "c", sends)
            assert gate.batches == [1, 6]
            assert all(isinstance(r, Appended) for r in got)
            res = [r for r in got if isinstance(r, Appended)]
            assert [r.duplicate for r in res] == [False, False, False, True, True, True, False]
            first, a, va, again_old, again_a, again_first, b = (r.record for r in res)
            assert [first.offset, a.offset, va.offset, b.offset] == [2, 3, 4, 5]
            assert (again_old, again_a, again_first) == (old, a, first)
            log = list(await other.read("c", 0, 100))
            assert [(r.sender, r.cmid, r.body) for r in log] == [
                ("u", "old", "old"),
                ("u", "first", "1"),
                ("u", "a", "a"),
                ("v", "a", "same cmid, another sender: another message"),
                ("u", "b", "b"),
            ]
            assert bus.statistics().appends == 4 and bus.statistics().duplicates == 3


async def test_a_failed_call_fails_every_append_of_its_batch(tmp_path: Path, url: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, url) as [(bus, gate)]:
            gate.fail = 2  # the held call and the batch behind it
            sends = [("u", f"m{i}", "x") for i in range(20)]
            got = await queue_behind_held_call(bus, gate, "c", sends)
            assert gate.batches == [1, 19]
            assert all(isinstance(r, StoreUnavailable) and r.retryable for r in got)
            assert (await bus.head("c")).offset == 0  # nothing appended, nothing lost
            again = [await bus.append("c", sender=s, cmid=c, body=b) for s, c, b in sends]
            assert [(a.duplicate, a.record.offset) for a in again] == [
                (False, i) for i in range(1, 21)
            ]


async def test_a_call_that_ran_but_failed_is_safe_to_retry(tmp_path: Path, url: str) -> None:
    """The connection broke after Redis ran the batch: every append fails retryably, and
    each client's retry with its cmid returns its record, appended once."""
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, url, n=2) as [(bus, gate), (other, _)]:
            gate.land_then_fail = 2
            sends = [("u", f"m{i}", f"b{i}") for i in range(10)]
            got = await queue_behind_held_call(bus, gate, "c", sends)
            assert gate.batches == [1, 9]
            assert all(isinstance(r, StoreUnavailable) for r in got)
            log = list(await other.read("c", 0, 100))
            assert [r.cmid for r in log] == [c for _, c, _ in sends]
            retried = await queue_behind_held_call(bus, gate, "c", sends[::-1])
            assert all(isinstance(r, Appended) and r.duplicate for r in retried)
            assert records(retried)[::-1] == log
            assert (await bus.head("c")).offset == 10


async def test_a_cancelled_append_still_queued_is_never_sent(
    tmp_path: Path, redis_url: str
) -> None:
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, redis_url) as [(bus, gate)]:
            await bus.head("c")
            gate.hold = True
            send = functools.partial(bus.append, "c", sender="u", body="x")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(send, cmid="held"))
                await trio.testing.wait_all_tasks_blocked()
                with trio.CancelScope() as scope:

                    async def give_up() -> None:
                        await trio.testing.wait_all_tasks_blocked()
                        scope.cancel()

                    nursery.start_soon(give_up)
                    await send(cmid="given-up")
                assert scope.cancelled_caught
                nursery.start_soon(functools.partial(send, cmid="kept"))
                await trio.testing.wait_all_tasks_blocked()
                gate.release.set()
            assert [r.cmid for r in await bus.read("c", 0, 10)] == ["held", "kept"]
            assert gate.batches == [1, 1]


async def test_tails_on_other_nodes_get_batches_in_order(tmp_path: Path, url: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, url, n=2) as [(bus, gate), (other, _)]:
            seen: list[Record] = []
            async with other.open_tail("c", 0) as tail:

                async def read() -> None:
                    async for batch in tail:
                        seen.extend(batch)
                        if len(seen) >= 150:
                            return

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    sends = [("u", f"m{i}", str(i)) for i in range(150)]
                    sent = records(await queue_behind_held_call(bus, gate, "c", sends))
            assert len(gate.batches) < 10
            assert seen == sent


async def test_a_lost_live_batch_is_filled_from_the_stream(tmp_path: Path, url: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, url, n=2, audit_interval=60.0) as nodes:
            (bus, gate), (other, _) = nodes
            deliver = other._sub._on_message
            dropped: list[bytes] = []

            def lossy(live: str, data: bytes) -> None:
                if data.startswith(b"#") and not dropped:
                    dropped.append(data)  # lost, as in a disconnect
                    return
                deliver(live, data)

            seen: list[Record] = []
            async with other.open_tail("c", 0) as tail:
                other._sub._on_message = lossy
                await queue_behind_held_call(
                    bus, gate, "c", [("u", f"m{i}", "x") for i in range(30)]
                )
                other._on_message("garbage", b"# not a batch")  # no such live channel: ignored
                other._on_message(next(iter(other._by_live)), b"#e\n\xc1")  # malformed: fill
                await bus.append("c", sender="u", cmid="last", body="x")  # after the gap
                async for batch in tail:
                    seen.extend(batch)
                    if len(seen) >= 31:
                        break
            assert dropped
            assert [r.offset for r in seen] == list(range(1, 32))


async def test_batches_survive_a_script_cache_flush(tmp_path: Path, url: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, url) as [(bus, gate)]:
            await bus.append("c", sender="u", cmid="before", body="x")
            meta = f"{bus.prefix}:{{c}}:m"
            assert await bus.redis.execute("SCRIPT", "FLUSH", key=meta) == b"OK"
            sends = [("u", f"m{i}", "x") for i in range(10)]
            got = records(await queue_behind_held_call(bus, gate, "c", sends))
            assert [r.offset for r in got] == list(range(2, 12))  # NOSCRIPT, then EVAL
            assert gate.batches == [1, 1, 9]


async def test_a_reply_not_understood_acks_nothing(tmp_path: Path, redis_url: str) -> None:
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, redis_url) as [(bus, gate)]:
            gate.truncate = 2
            sends = [("u", f"m{i}", "x") for i in range(5)]
            got = await queue_behind_held_call(bus, gate, "c", sends)
            assert all(isinstance(r, StoreUnavailable) for r in got)
            again = records(await queue_behind_held_call(bus, gate, "c", sends))
            assert [r.offset for r in again] == [1, 2, 3, 4, 5]  # they had landed: the same


async def test_one_entry_is_the_call_and_reply_of_before_batching(redis_url: str) -> None:
    """``bench/redis_clients.py`` calls APPEND with four keys and one entry."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis:
            tag = uuid.uuid4().hex
            keys = [f"b:{{{tag}}}:m", f"b:{{{tag}}}:log", f"b:{{{tag}}}:ids", f"b:{{{tag}}}:live"]
            await redis.execute("HSET", keys[0], "epoch", "e", "head", 0, key=keys[0])
            r = encode_body(("u", "c", "b", 1, None))
            assert await redis.run_script(APPEND, keys, ["u\0c", r, 60]) == [1, b"e", 1]
            assert await redis.run_script(APPEND, keys, ["u\0c", r, 60]) == [1, b"e", [1, r]]


async def test_kind_goes_through_batches_stream_and_live(tmp_path: Path, redis_url: str) -> None:
    kinds = ["", "reaction", "", "edit"]
    with trio.fail_after(DEADLINE):
        async with open_nodes(tmp_path, redis_url, n=2) as [(bus, gate), (other, _)]:
            async with other.open_tail("c", 0) as tail:
                await bus.head("c")
                gate.hold = True

                async def send(i: int) -> None:
                    await bus.append("c", sender="u", cmid=f"k{i}", body="{}", kind=kinds[i])

                async with trio.open_nursery() as nursery:
                    for i in range(len(kinds)):
                        nursery.start_soon(send, i)
                        await trio.testing.wait_all_tasks_blocked()
                    gate.release.set()
                seen: list[Record] = []
                async for batch in tail:
                    seen.extend(batch)
                    if len(seen) >= len(kinds):
                        break
            assert gate.batches == [1, 3]
            assert [r.kind for r in seen] == kinds
            assert list(await other.read("c", 0, 10)) == seen
            again = await other.append("c", sender="u", cmid="k1", body="{}", kind="reaction")
            assert again.duplicate and again.record == seen[1]
