"""SqliteStore beyond the contract: file handling, durability settings, error translation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from gateway.errors import StoreUnavailable
from gateway.model import Record
from gateway.store.base import MessageStore
from gateway.store.sqlite import SqliteStore, open_sqlite_store
from tests.contract.test_store_contract import rec


def _sqlite_store_is_a_message_store(store: SqliteStore) -> MessageStore:
    return store  # mypy checks the structural match


async def test_creates_the_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "messages.sqlite3"
    async with open_sqlite_store(str(path)) as store:
        await store.open_log("general")
    assert path.is_file()


async def test_wal_and_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    async with open_sqlite_store(str(path)) as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


async def test_in_memory_database() -> None:
    async with open_sqlite_store(":memory:") as store:
        epoch = (await store.open_log("c")).epoch
        await store.write([rec("c", 1, epoch)])
        assert [r.offset for r in await store.read("c", 0, 10)] == [1]


async def test_a_returned_write_is_visible_to_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    async with open_sqlite_store(str(path)) as store:
        epoch = (await store.open_log("c")).epoch
        await store.write([rec("c", 1, epoch), rec("c", 2, epoch)])
        with sqlite3.connect(path) as other:
            rows = other.execute('SELECT "offset", body FROM messages ORDER BY 1').fetchall()
        assert rows == [(1, "message 1"), (2, "message 2")]


async def test_a_record_of_another_epoch_is_refused(tmp_path: Path) -> None:
    async with open_sqlite_store(str(tmp_path / "m.sqlite3")) as store:
        epoch = (await store.open_log("c")).epoch
        with pytest.raises(StoreUnavailable, match="epoch"):
            await store.write([rec("c", 1, "not-the-epoch")])
        with pytest.raises(StoreUnavailable, match="two epochs"):
            await store.write([rec("c", 1, epoch), rec("c", 2, "other")])
        assert list(await store.read("c", 0, 10)) == []


async def test_a_write_creates_a_missing_log_with_its_epoch(tmp_path: Path) -> None:
    async with open_sqlite_store(str(tmp_path / "m.sqlite3")) as store:
        await store.write([rec("c", 1, "e1")])
        assert (await store.open_log("c")).epoch == "e1"


async def test_a_cmid_stored_at_another_offset_is_refused(tmp_path: Path) -> None:
    async with open_sqlite_store(str(tmp_path / "m.sqlite3")) as store:
        epoch = (await store.open_log("c")).epoch
        await store.write([rec("c", 1, epoch, cmid="k")])
        with pytest.raises(StoreUnavailable, match="another offset"):
            await store.write([rec("c", 2, epoch), rec("c", 3, epoch, cmid="k")])
        assert [r.offset for r in await store.read("c", 0, 10)] == [1]


async def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreUnavailable, match=r"junk\.sqlite3.*failed"):
        async with open_sqlite_store(str(path)):
            pass


async def test_a_path_under_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreUnavailable, match="failed"):
        async with open_sqlite_store(str(tmp_path / "file" / "m.sqlite3")):
            pass


async def test_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "m.sqlite3"))
    await store.open_log("c")  # opens lazily
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.open_log("c")
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.write([rec("c", 1, "e")])


async def test_concurrent_callers_share_one_thread_at_a_time(tmp_path: Path) -> None:
    async with open_sqlite_store(str(tmp_path / "m.sqlite3")) as store:
        epochs = {c: (await store.open_log(c)).epoch for c in ("a", "b", "c")}
        found: list[Record | None] = []

        async def writer(channel: str) -> None:
            for i in range(1, 51):
                await store.write([rec(channel, i, epochs[channel])])

        async def reader() -> None:
            for i in range(1, 51):
                found.append(await store.find_cmid("a", "alice", f"c{i}"))
                await store.read_before("b", 100, 5)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for channel in epochs:
                    nursery.start_soon(writer, channel)
                for _ in range(5):
                    nursery.start_soon(reader)
        for channel in epochs:
            assert [r.offset for r in await store.read(channel, 0, 100)] == list(range(1, 51))
        stats = store.statistics()
        assert stats.writes == stats.batches == 150
        assert stats.reads >= 500


async def test_a_cancelled_queued_call_does_not_run(tmp_path: Path) -> None:
    async with open_sqlite_store(str(tmp_path / "m.sqlite3")) as store:
        epoch = (await store.open_log("c")).epoch
        async with trio.open_nursery() as nursery:
            # hold the store's limiter so that the write below stays queued
            await store._limiter.acquire()
            scope = trio.CancelScope()

            async def write() -> None:
                with scope:
                    await store.write([rec("c", 1, epoch)])

            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            store._limiter.release()
        assert list(await store.read("c", 0, 10)) == []
        assert store.statistics().batches == 0


async def test_statistics_is_a_snapshot() -> None:
    async with open_sqlite_store(":memory:") as store:
        before = store.statistics()
        await store.read("c", 0, 1)
        assert before.reads == 0 and store.statistics().reads == 1


async def test_interval_mode_checkpoints_what_was_committed(tmp_path: Path) -> None:
    """Interval durability: commits run inline; the checkpointer fsyncs them soon after."""
    path = str(tmp_path / "interval.sqlite3")
    with trio.fail_after(10):
        async with open_sqlite_store(path, durability="interval", fsync_interval=0.01) as store:
            pos = await store.open_log("c")
            recs = [
                Record("c", i, pos.epoch, f"{pos.epoch}-{i}", "u", str(i), "b", 0) for i in (1, 2)
            ]
            await store.write(recs)
            assert store._unsynced > 0
            while store._unsynced:
                await trio.sleep(0.01)
        # closed cleanly: reopening in full mode sees everything
        async with open_sqlite_store(path) as store:
            assert [r.offset for r in await store.read("c", 0, 10)] == [1, 2]


def test_unknown_durability_is_refused() -> None:
    with pytest.raises(ValueError, match="durability"):
        SqliteStore("x", durability="sometimes")


async def test_a_database_from_before_message_events_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE logs (channel TEXT PRIMARY KEY, epoch TEXT NOT NULL,
                           created_ms INTEGER NOT NULL);
        CREATE TABLE messages (channel TEXT NOT NULL, "offset" INTEGER NOT NULL,
            epoch TEXT NOT NULL, id TEXT NOT NULL, sender TEXT NOT NULL, cmid TEXT NOT NULL,
            body TEXT NOT NULL, ts INTEGER NOT NULL, thread TEXT,
            PRIMARY KEY (channel, "offset"));
        CREATE UNIQUE INDEX messages_cmid ON messages (channel, sender, cmid);
        INSERT INTO logs VALUES ('general', 'e0', 1);
        INSERT INTO messages VALUES ('general', 1, 'e0', 'e0-1', 'alice', 'c1', 'old', 1, NULL);
        """
    )
    conn.commit()
    conn.close()
    with trio.fail_after(10):
        async with open_sqlite_store(str(path)) as store:
            (old,) = await store.read("general", 0, 10)
            assert (old.body, old.kind) == ("old", "")
            await store.write([rec("general", 2, "e0")])
            assert [r.offset for r in await store.read_by_sender("general", "alice", 9, 9)] == [
                2,
                1,
            ]
