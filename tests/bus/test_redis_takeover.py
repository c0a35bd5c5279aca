"""Write-behind survives the writer: a channel only a dead node knew is written by others."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import trio

from gateway.bus.redis import open_redis_bus
from gateway.errors import StoreUnavailable
from gateway.model import Record
from gateway.redis import open_redis
from gateway.store.sqlite import SqliteStore, open_sqlite_store


class DeadStore:
    """The store as a node that is about to die sees it: every write fails."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def write(self, records: Sequence[Record]) -> None:
        raise StoreUnavailable("this node never gets to write")

    async def write_behind(self, records: Sequence[Record]) -> None:
        raise StoreUnavailable("this node never gets to write")


async def test_records_a_dead_node_left_unwritten_are_written_by_another(
    tmp_path: Path, redis_url: str
) -> None:
    prefix = "to" + uuid.uuid4().hex[:8]
    options = {"prefix": prefix, "lease_ms": 300, "audit_interval": 0.1}
    with trio.fail_after(30):
        async with open_sqlite_store(str(tmp_path / "m.db")) as store:
            async with (
                open_redis(redis_url, timeout=1.0) as redis,
                open_redis_bus(redis, DeadStore(store), **options) as doomed,  # type: ignore[arg-type]
            ):
                for i in range(5):
                    await doomed.append("orphan", sender="u", cmid=f"c{i}", body=f"m{i}")
            assert await store.read("orphan", 0, 10) == []  # the node is gone, unwritten
            # another node that never hears of "orphan" from a client still writes it
            async with (
                open_redis(redis_url, timeout=1.0) as redis,
                open_redis_bus(redis, store, **options) as survivor,
            ):
                while len(await store.read("orphan", 0, 10)) < 5:
                    await trio.sleep(0.05)
                assert [r.body for r in await store.read("orphan", 0, 10)] == [
                    f"m{i}" for i in range(5)
                ]
                # once written, the mark goes: the registry does not grow forever
                key = f"{prefix}:{{ctl}}:dirty"
                while await redis.execute("ZSCORE", key, "orphan", key=key) is not None:
                    await trio.sleep(0.05)
                assert survivor.statistics().persist_backlog == 0
