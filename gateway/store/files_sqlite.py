"""SQLite file records: one table in a file of its own (``<data_dir>/files.sqlite3``).

Its own file for the reasons the domain store has one (``gateway.store.domain_sqlite``):
a slot request never queues behind the message store's write-behind commits. The
connection, its two durability modes and the translation of every ``sqlite3`` error into
:class:`gateway.errors.StoreUnavailable` are :class:`gateway.store._sqlite_runner.
SqliteRunner`'s. Each change is one ``BEGIN IMMEDIATE`` transaction: the conditions of
:class:`gateway.store.files.FileStore` are checked and the row written under one lock.

Lapsed pending rows of an owner are deleted when that owner asks for a new slot (their
blobs, if any were uploaded, stay in the blob store: see ``docs/operations.md``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from gateway.domain.errors import AlreadyExists, Conflict, InvalidField, NotFound
from gateway.store._sqlite_runner import RunnerStore
from gateway.store._sqlite_wal import running, transaction
from gateway.store.domain import DomainStoreStatistics
from gateway.store.files import (
    ATTACHED,
    EXPIRED,
    NOT_READY,
    SIZE,
    FileRecord,
    check_file_id,
)

__all__ = ["SqliteFileStore", "open_sqlite_file_store"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    name         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    status       TEXT NOT NULL,          -- 'pending' | 'ready'
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER,                -- pending only
    channel      TEXT,                   -- once attached
    sha256       TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_pending ON files (owner, expires_ms) WHERE status = 'pending';
"""

_COLUMNS = "id, owner, name, size, content_type, status, created_ms, expires_ms, channel, sha256"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _record(row: tuple[Any, ...]) -> FileRecord:
    return FileRecord(
        id=row[0],
        owner=row[1],
        name=row[2],
        size=row[3],
        content_type=row[4],
        status=row[5],
        created_ms=row[6],
        expires_ms=row[7],
        channel=row[8],
        sha256=row[9],
    )


def _get(conn: sqlite3.Connection, file_id: str) -> FileRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
    return None if row is None else _record(row)


def _no_file(file_id: str) -> NotFound:
    return NotFound(f"no file {file_id!r} of yours", reason="file")


def _check_text(value: str, field: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 256:
        raise InvalidField(f"{field} must be 1..256 characters", field=field)
    return value


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidField("size must be an integer >= 0", field="size")
    return size


class SqliteFileStore(RunnerStore):
    """A :class:`gateway.store.files.FileStore` on one SQLite file (or ``":memory:"``).
    ``clock`` gives the time in milliseconds (lapsed slots)."""

    def __init__(
        self,
        path: str,
        *,
        durability: str = "full",
        fsync_interval: float = 1.0,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        super().__init__(path, SCHEMA, durability=durability, fsync_interval=fsync_interval)
        self.clock = clock

    async def create(self, record: FileRecord) -> FileRecord:
        check_file_id(record.id)
        _check_text(record.owner, "owner")
        _check_size(record.size)
        if record.status != "pending" or record.expires_ms is None or record.channel:
            raise InvalidField("a new file record is pending, with expires_ms", field="status")
        now = self.clock()

        def create(conn: sqlite3.Connection) -> FileRecord:
            with transaction(conn):
                conn.execute(
                    "DELETE FROM files WHERE owner = ? AND status = 'pending' AND expires_ms <= ?",
                    (record.owner, now),
                )
                if _get(conn, record.id) is not None:
                    raise AlreadyExists(f"file {record.id!r} exists", reason="file")
                conn.execute(
                    f"INSERT INTO files ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.owner,
                        record.name,
                        record.size,
                        record.content_type,
                        record.status,
                        record.created_ms,
                        record.expires_ms,
                        record.channel,
                        record.sha256,
                    ),
                )
            return record

        return await self._write("create", create)

    async def get(self, file_id: str) -> FileRecord | None:
        check_file_id(file_id)
        return await self._read("get", lambda conn: _get(conn, file_id))

    async def mark_ready(self, file_id: str, owner: str, size: int) -> FileRecord:
        check_file_id(file_id)
        _check_text(owner, "owner")
        _check_size(size)
        now = self.clock()

        def mark(conn: sqlite3.Connection) -> FileRecord:
            with transaction(conn):
                found = _get(conn, file_id)
                if found is None or found.owner != owner:
                    raise _no_file(file_id)
                if found.size != size:
                    raise Conflict(
                        f"file {file_id!r} has {size} bytes stored, not the announced {found.size}",
                        reason=SIZE,
                    )
                if found.status == "ready":
                    return found
                if found.expires_ms is not None and found.expires_ms <= now:
                    raise Conflict(f"the upload slot of file {file_id!r} lapsed", reason=EXPIRED)
                conn.execute(
                    "UPDATE files SET status = 'ready', expires_ms = NULL WHERE id = ?",
                    (file_id,),
                )
                ready = _get(conn, file_id)
                assert ready is not None
                return ready

        return await self._write("mark_ready", mark)

    async def attach(self, file_id: str, owner: str, channel: str) -> FileRecord:
        check_file_id(file_id)
        _check_text(owner, "owner")
        _check_text(channel, "channel")

        def attach(conn: sqlite3.Connection) -> FileRecord:
            with transaction(conn):
                found = _get(conn, file_id)
                if found is None or found.owner != owner:
                    raise _no_file(file_id)
                if found.status != "ready":
                    raise Conflict(f"file {file_id!r} is not uploaded yet", reason=NOT_READY)
                if found.channel == channel:
                    return found
                if found.channel is not None:
                    raise Conflict(
                        f"file {file_id!r} is attached to another channel", reason=ATTACHED
                    )
                conn.execute("UPDATE files SET channel = ? WHERE id = ?", (channel, file_id))
                attached = _get(conn, file_id)
                assert attached is not None
                return attached

        return await self._write("attach", attach)

    async def count_pending(self, owner: str) -> int:
        _check_text(owner, "owner")
        now = self.clock()

        def count(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT count(*) FROM files WHERE owner = ? AND status = 'pending'"
                " AND expires_ms > ?",
                (owner, now),
            ).fetchone()
            return int(row[0])

        return await self._read("count_pending", count)

    # -- lifecycle -----------------------------------------------------------------------

    def statistics(self) -> DomainStoreStatistics:
        """Reads, writes and refusals so far (a snapshot)."""
        return self._statistics(DomainStoreStatistics)


@asynccontextmanager
async def open_sqlite_file_store(
    path: str,
    *,
    durability: str = "full",
    fsync_interval: float = 1.0,
    clock: Callable[[], int] = _now_ms,
) -> AsyncIterator[SqliteFileStore]:
    """Open (creating the parent directory and the schema) and close a
    :class:`SqliteFileStore`, running its checkpointer in interval mode."""
    store = SqliteFileStore(path, durability=durability, fsync_interval=fsync_interval, clock=clock)
    async with running(store):
        yield store
