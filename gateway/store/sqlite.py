"""SQLite message store: the embedded default, one file, no services.

One ``sqlite3`` connection is shared by every call, and only one task touches it at a
time (a ``trio.CapacityLimiter(1)``). Operations that queue up while one runs are executed
together (each still its own transaction). Two durability modes:

``"full"``
    WAL with ``synchronous=FULL``, operations in a worker thread: a ``write`` that returned
    has been fsynced (an acknowledged message survives a power cut). Each call pays a
    trio-to-thread hop, measured at ~175-200 us of CPU on one pinned core, more than the
    commit itself.
``"interval"``
    WAL with ``synchronous=NORMAL``, operations run inline on the event loop (a commit is
    ~80 us of CPU, no fsync): a ``write`` that returned is in the WAL file, so it survives
    a crash or ``kill -9`` of the process; a background checkpoint from a second
    connection fsyncs it within ``fsync_interval`` seconds, bounding what a power cut can
    take. This is Redis' ``appendfsync everysec`` contract.

Every ``sqlite3`` exception is translated into :class:`gateway.errors.StoreUnavailable`
here, at this one boundary.

Several handles on one file are safe (``write`` refuses a record that differs from the
stored one), but only one bus should assign offsets for a channel.
"""

from __future__ import annotations

import enum
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar, cast

import trio

from gateway.errors import StoreUnavailable
from gateway.model import Position, Record
from gateway.store._sqlite_wal import WalConnection, running, transaction
from gateway.store.base import StoreStatistics, WriteBehindResult

__all__ = ["SqliteStore", "open_sqlite_store"]

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    channel    TEXT PRIMARY KEY,
    epoch      TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    channel  TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    epoch    TEXT NOT NULL,
    id       TEXT NOT NULL,
    sender   TEXT NOT NULL,
    cmid     TEXT NOT NULL,
    body     TEXT NOT NULL,
    ts       INTEGER NOT NULL,
    thread   TEXT,
    kind     TEXT NOT NULL DEFAULT '',
    files    TEXT NOT NULL DEFAULT '',  -- attached file ids, space-separated
    PRIMARY KEY (channel, "offset")
);  -- a rowid table: appends land on few pages (measured faster than WITHOUT ROWID)
CREATE UNIQUE INDEX IF NOT EXISTS messages_cmid ON messages (channel, sender, cmid);
"""
# after _migrate (an older database gets its kind column first)
_INDEXES = """
CREATE INDEX IF NOT EXISTS messages_sender ON messages (channel, sender, "offset")
    WHERE kind = '';
"""

_COLUMNS = 'channel, "offset", epoch, id, sender, cmid, body, ts, thread, kind, files'
_INSERT = f"INSERT OR IGNORE INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT = f"SELECT {_COLUMNS} FROM messages"


_Row = tuple[str, int, str, str, str, str, str, int, str | None, str, str]


def _row(record: Record) -> _Row:
    r = record
    files = " ".join(r.files)
    return (
        r.channel,
        r.offset,
        r.epoch,
        r.id,
        r.sender,
        r.cmid,
        r.body,
        r.ts,
        r.thread,
        r.kind,
        files,
    )


def _record(row: _Row) -> Record:
    return Record(*row[:10], tuple(row[10].split()) if row[10] else ())


_MAX_OPS_PER_CALL = 256


class _State(enum.Enum):
    QUEUED = enum.auto()
    TAKEN = enum.auto()
    DONE = enum.auto()
    WITHDRAWN = enum.auto()


class _Op(Generic[_T]):
    """One store operation waiting for, or run by, the worker thread."""

    __slots__ = ("error", "fn", "result", "state")

    def __init__(self, fn: Callable[[sqlite3.Connection], _T]) -> None:
        self.fn = fn
        self.state = _State.QUEUED
        self.result: _T | None = None
        self.error: Exception | None = None


class _Conflict(Exception):
    """A write would change a stored record or mix epochs; the transaction is rolled back."""


class SqliteStore(WalConnection):
    """A :class:`gateway.store.base.MessageStore` on one SQLite file.

    ``path`` is a file path (its parent directory is created) or ``":memory:"``. The
    connection opens on first use; :func:`open_sqlite_store` opens it eagerly so a bad
    path fails at startup. Beyond the protocol's guarantees, ``write`` refuses (with
    :class:`StoreUnavailable`, storing nothing of the call) a record that differs from
    the one stored at its ``(channel, offset)``, whose ``(channel, sender, cmid)`` is
    stored at another offset, or whose epoch is not its log's epoch.
    """

    def __init__(self, path: str, *, durability: str = "full", fsync_interval: float = 1.0) -> None:
        super().__init__(path, _SCHEMA, durability=durability, fsync_interval=fsync_interval)
        self._ops: deque[_Op[Any]] = deque()
        self._epochs: dict[str, str] = {}  # committed epochs, touched in the worker only
        self._stats = StoreStatistics()

    # -- the one thread boundary -------------------------------------------------------

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` on the connection in a worker thread, translating its errors.

        Operations queued while another runs are executed together in the next worker
        call, one after the other (each a transaction of its own): one thread switch for
        many concurrent callers instead of one each.
        """
        op = _Op(fn)
        self._ops.append(op)
        try:
            async with self._limiter:
                if op.state is _State.QUEUED:
                    batch: list[_Op[Any]] = []
                    while self._ops and len(batch) < _MAX_OPS_PER_CALL:
                        queued = self._ops.popleft()
                        if queued.state is _State.QUEUED:
                            queued.state = _State.TAKEN
                            batch.append(queued)
                    if self._inline:
                        self._execute(batch)  # no fsync: tens of microseconds
                    else:
                        await trio.to_thread.run_sync(self._execute, batch)
        except BaseException:
            if op.state is _State.QUEUED:
                op.state = _State.WITHDRAWN  # cancelled before it ran: it never will
            raise
        exc = op.error
        if exc is None:
            return cast(_T, op.result)
        if isinstance(exc, _Conflict):
            raise StoreUnavailable(f"sqlite store {self.path!r}: {what} refused: {exc}") from exc
        if isinstance(exc, sqlite3.Error | OSError):
            raise StoreUnavailable(f"sqlite store {self.path!r}: {what} failed: {exc}") from exc
        raise exc

    def _execute(self, batch: list[_Op[Any]]) -> None:
        """In the worker thread, with the limiter held: run each op, keep its outcome."""
        for op in batch:
            try:
                if self._closed:
                    raise StoreUnavailable(f"sqlite store {self.path!r} is closed")
                if self._conn is None:
                    self._conn = self._connect()
                op.result = op.fn(self._conn)
            except Exception as exc:
                op.error = exc
            op.state = _State.DONE

    # -- MessageStore ------------------------------------------------------------------

    async def open(self) -> None:
        """Open the connection and create the schema now (idempotent)."""
        await self._run("open", _migrate)

    async def open_log(self, channel: str) -> Position:
        """Epoch and highest stored offset (0 if none); creates the epoch if needed."""

        def op(conn: sqlite3.Connection) -> Position:
            conn.execute(
                "INSERT OR IGNORE INTO logs (channel, epoch, created_ms) VALUES (?, ?, ?)",
                (channel, secrets.token_hex(8), time.time_ns() // 1_000_000),
            )
            (epoch,) = conn.execute(
                "SELECT epoch FROM logs WHERE channel = ?", (channel,)
            ).fetchone()
            (head,) = conn.execute(
                'SELECT COALESCE(MAX("offset"), 0) FROM messages WHERE channel = ?', (channel,)
            ).fetchone()
            self._epochs[channel] = epoch
            return Position(epoch=str(epoch), offset=int(head))

        return await self._run("open_log", op)

    async def write(self, records: Sequence[Record]) -> None:
        """Store ``records`` in one transaction: all of them or, on error, none."""
        if not records:
            return
        rows = [_row(r) for r in records]

        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                new_logs = self._check_epochs(conn, records)
                before = conn.total_changes
                conn.executemany(_INSERT, rows)
                if conn.total_changes - before != len(rows):
                    _check_ignored(conn, records)  # some were already there: same ones?
            self._epochs.update(new_logs)

        await self._run("write", op)
        self._stats.writes += len(records)
        self._stats.batches += 1
        self._unsynced += 1

    async def write_behind(self, records: Sequence[Record]) -> WriteBehindResult:
        """One transaction per channel (see :meth:`MessageStore.write_behind`): late
        duplicates left out; a channel in another epoch, or with another record at an
        offset already stored, refused."""
        result = WriteBehindResult()
        by_channel: dict[str, list[Record]] = {}
        for r in sorted(records, key=lambda r: r.offset):
            by_channel.setdefault(r.channel, []).append(r)

        def op(conn: sqlite3.Connection) -> int:
            stored = 0
            for channel, recs in by_channel.items():
                try:
                    with transaction(conn):
                        new_logs = self._check_epochs(conn, recs)
                        keep, late = _split_late(conn, recs)
                        before = conn.total_changes
                        conn.executemany(_INSERT, [_row(r) for r in keep])
                        if conn.total_changes - before != len(keep):
                            _check_ignored(conn, keep)
                except _Conflict as exc:
                    result.refused[channel] = str(exc)
                    continue
                self._epochs.update(new_logs)
                result.duplicates += late
                stored += len(keep)
            return stored

        if records:
            self._stats.writes += await self._run("write_behind", op)
            self._stats.batches += 1
            self._unsynced += 1
        return result

    async def read(self, channel: str, after: int, limit: int) -> Sequence[Record]:
        """Records with ``offset > after``, ascending, at most ``limit``."""
        if limit <= 0:
            return []
        sql = f'{_SELECT} WHERE channel = ? AND "offset" > ? ORDER BY "offset" LIMIT ?'
        rows = await self._run("read", lambda c: c.execute(sql, (channel, after, limit)).fetchall())
        self._stats.reads += 1
        return [_record(row) for row in rows]

    async def read_before(self, channel: str, before: int, limit: int) -> Sequence[Record]:
        """The ``limit`` records just below ``before`` (newest page), ascending."""
        if limit <= 0:
            return []
        sql = f'{_SELECT} WHERE channel = ? AND "offset" < ? ORDER BY "offset" DESC LIMIT ?'
        rows = await self._run(
            "read_before", lambda c: c.execute(sql, (channel, before, limit)).fetchall()
        )
        self._stats.reads += 1
        return [_record(row) for row in reversed(rows)]

    async def find_cmid(self, channel: str, sender: str, cmid: str) -> Record | None:
        """The record ``sender`` sent with client message id ``cmid``, if stored."""
        sql = f"{_SELECT} WHERE channel = ? AND sender = ? AND cmid = ?"
        row = await self._run(
            "find_cmid", lambda c: c.execute(sql, (channel, sender, cmid)).fetchone()
        )
        self._stats.reads += 1
        return None if row is None else _record(row)

    async def read_by_sender(
        self, channel: str, sender: str, before: int, limit: int
    ) -> Sequence[Record]:
        """``sender``'s messages below ``before``, newest first (index messages_sender)."""
        if limit <= 0:
            return []
        sql = (
            f"{_SELECT} WHERE channel = ? AND sender = ? AND kind = '' AND \"offset\" < ?"
            ' ORDER BY "offset" DESC LIMIT ?'
        )
        rows = await self._run(
            "read_by_sender",
            lambda c: c.execute(sql, (channel, sender, before, limit)).fetchall(),
        )
        self._stats.reads += 1
        return [_record(row) for row in rows]

    def _check_epochs(self, conn: sqlite3.Connection, records: Sequence[Record]) -> dict[str, str]:
        """Refuse records not of their log's epoch; returns the logs this call creates."""
        epochs: dict[str, str] = {}
        for r in records:
            if epochs.setdefault(r.channel, r.epoch) != r.epoch:
                raise _Conflict(f"records of channel {r.channel!r} carry two epochs")
        new: dict[str, str] = {}
        for channel, epoch in epochs.items():
            stored = self._epochs.get(channel)
            if stored is None:
                conn.execute(
                    "INSERT OR IGNORE INTO logs (channel, epoch, created_ms) VALUES (?, ?, ?)",
                    (channel, epoch, time.time_ns() // 1_000_000),
                )
                sql = "SELECT epoch FROM logs WHERE channel = ?"
                stored = new[channel] = conn.execute(sql, (channel,)).fetchone()[0]
            if stored != epoch:
                raise _Conflict(f"channel {channel!r} is in epoch {stored}, not {epoch}")
        return new

    def statistics(self) -> StoreStatistics:
        """A snapshot: records written, write calls (transactions), read calls."""
        s = self._stats
        return StoreStatistics(writes=s.writes, batches=s.batches, reads=s.reads)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an older version up to this schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
    if "kind" not in columns:  # before message events (edits, reactions, ...)
        conn.execute("ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT ''")
    if "files" not in columns:  # before attachments
        conn.execute("ALTER TABLE messages ADD COLUMN files TEXT NOT NULL DEFAULT ''")
    conn.executescript(_INDEXES)


def _split_late(
    conn: sqlite3.Connection, records: list[Record]
) -> tuple[list[Record], list[Record]]:
    """(records to store, late duplicates: their sender and cmid are stored, or come
    earlier in ``records``, at another offset)."""
    sql = 'SELECT "offset" FROM messages WHERE channel = ? AND sender = ? AND cmid = ?'
    keep: list[Record] = []
    late: list[Record] = []
    first: dict[tuple[str, str], int] = {}
    for r in records:
        row = conn.execute(sql, (r.channel, r.sender, r.cmid)).fetchone()
        at = first.setdefault((r.sender, r.cmid), r.offset if row is None else int(row[0]))
        (keep if at == r.offset else late).append(r)
    return keep, late


def _check_ignored(conn: sqlite3.Connection, records: Sequence[Record]) -> None:
    sql = f'{_SELECT} WHERE channel = ? AND "offset" = ?'
    for r in records:
        row = conn.execute(sql, (r.channel, r.offset)).fetchone()
        if row is None:
            raise _Conflict(
                f"channel {r.channel!r}: sender {r.sender!r} cmid {r.cmid!r} is stored at "
                f"another offset than {r.offset}"
            )
        if _record(row) != r:
            raise _Conflict(f"channel {r.channel!r} offset {r.offset} holds another record")


@asynccontextmanager
async def open_sqlite_store(
    path: str, *, durability: str = "full", fsync_interval: float = 1.0
) -> AsyncIterator[SqliteStore]:
    """Open (creating the parent directory and the schema) and close a :class:`SqliteStore`,
    running its checkpointer in interval mode."""
    store = SqliteStore(path, durability=durability, fsync_interval=fsync_interval)
    async with running(store):
        yield store
