"""What the SQLite domain store does beyond the contract: files, modes, error translation."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import trio

from gateway.domain.model import Role
from gateway.errors import StoreUnavailable
from gateway.store.domain_sqlite import SqliteDomainStore, open_sqlite_domain_store

KEY = b"k" * 32


async def test_creates_the_parent_directory_and_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "data" / "nested" / "domain.sqlite3"
    with trio.fail_after(10):
        async with open_sqlite_domain_store(str(path), KEY) as store:
            await store.create_user("u1", "u1@example.com", "U1")
    tables = {
        row[0]
        for row in sqlite3.connect(path).execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    assert {
        "users",
        "workspaces",
        "members",
        "channels",
        "conversations",
        "channel_members",
    } <= tables


async def test_an_unusable_path_fails_at_open_with_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with trio.fail_after(10), pytest.raises(StoreUnavailable, match="open failed"):
        async with open_sqlite_domain_store(str(tmp_path / "file" / "domain.sqlite3"), KEY):
            pass


async def test_a_corrupt_file_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "domain.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with trio.fail_after(10), pytest.raises(StoreUnavailable):
        async with open_sqlite_domain_store(str(path), KEY):
            pass


@pytest.mark.parametrize("durability", ["full", "interval"])
async def test_memory_databases_work_in_both_modes(durability: str) -> None:
    with trio.fail_after(10):
        async with open_sqlite_domain_store(":memory:", KEY, durability=durability) as store:
            await store.create_user("u1", "u1@example.com", "U1")
            ws = await store.create_workspace("W", owner="u1")
            assert (await store.get_member(ws.id, "u1")).role is Role.OWNER  # type: ignore[union-attr]


async def test_interval_mode_checkpoints_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "domain.sqlite3"
    with trio.fail_after(10):
        async with open_sqlite_domain_store(
            str(path), KEY, durability="interval", fsync_interval=0.01
        ) as store:
            await store.create_user("u1", "u1@example.com", "U1")
            while store._db._unsynced:  # the checkpointer runs every 10 ms
                await trio.sleep(0.01)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT id FROM users").fetchall() == [("u1",)]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="durability"):
        SqliteDomainStore(":memory:", KEY, durability="sometimes")
    with pytest.raises(ValueError, match="16 bytes"):
        SqliteDomainStore(":memory:", b"short")


async def test_the_clock_stamps_records() -> None:
    store = SqliteDomainStore(":memory:", KEY, clock=lambda: 1234)
    try:
        user = await store.create_user("u1", "u1@example.com", "U1")
        ws = await store.create_workspace("W", owner="u1")
        assert user.created_ms == ws.created_ms == 1234
    finally:
        await store.aclose()
