"""One SQLite connection driven from trio: the thread boundary of the domain store.

One ``sqlite3`` connection, used by one task at a time (a ``trio.CapacityLimiter(1)``),
in one of two durability modes (see :mod:`gateway.store.domain_sqlite`). Every
``sqlite3`` and ``OSError`` exception becomes :class:`gateway.errors.StoreUnavailable`
here; :class:`gateway.domain.errors.DomainError` refusals pass unchanged.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import TypeVar

import trio

from gateway.domain.errors import DomainError
from gateway.errors import StoreUnavailable
from gateway.store.domain import DomainStoreStatistics

__all__ = ["SqliteRunner"]

_T = TypeVar("_T")


class SqliteRunner:
    """Runs synchronous functions on one connection to ``path`` (schema ``schema``)."""

    def __init__(
        self, path: str, schema: str, *, durability: str = "full", fsync_interval: float = 1.0
    ) -> None:
        if durability not in ("full", "interval"):
            raise ValueError("durability must be 'full' or 'interval'")
        self.path = path
        self.schema = schema
        self.durability = durability
        self.fsync_interval = fsync_interval
        self.stats = DomainStoreStatistics()
        self._inline = durability == "interval"
        self._unsynced = 0  # commits since the last checkpoint (interval mode)
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, what: str, fn: Callable[[sqlite3.Connection], _T], *, write: bool) -> _T:
        """``fn(conn)``, inline (interval mode) or in a worker thread (full mode)."""
        try:
            async with self._limiter:
                if self._inline:
                    result = self._call(fn)  # no fsync: tens of microseconds
                else:
                    result = await trio.to_thread.run_sync(self._call, fn)
        except DomainError:
            self.stats.refusals += 1
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"sqlite store {self.path!r}: {what} failed: {exc}") from exc
        if write:
            self.stats.writes += 1
            self._unsynced += 1
        else:
            self.stats.reads += 1
        return result

    def _call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._closed:
            raise StoreUnavailable(f"sqlite store {self.path!r} is closed")
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=5.0
        )
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'NORMAL' if self._inline else 'FULL'}")
            if self._inline:  # checkpoints (which fsync) run off the loop: run_checkpointer
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.executescript(self.schema)
        except BaseException:
            conn.close()
            raise
        return conn

    async def run_checkpointer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Interval mode: every ``fsync_interval`` seconds, if anything was committed,
        checkpoint (fsync) the WAL from a second connection in a worker thread. Runs
        until cancelled."""
        task_status.started()
        if not self._inline or self.path == ":memory:":
            return
        conn: sqlite3.Connection | None = None
        try:
            while True:
                await trio.sleep(self.fsync_interval)
                if not self._unsynced:
                    continue
                pending = self._unsynced
                try:
                    if conn is None:
                        conn = await trio.to_thread.run_sync(_connect_checkpointer, self.path)
                    await trio.to_thread.run_sync(_checkpoint, conn, "PASSIVE")
                except sqlite3.Error:
                    continue  # retried next interval; the WAL keeps everything meanwhile
                self._unsynced -= pending
        finally:
            if conn is not None:
                conn.close()

    async def aclose(self) -> None:
        """Close the connection (waits for the running operation); later calls fail.
        In interval mode the WAL is checkpointed (fsynced) first."""
        if self._closed:
            return

        def close() -> None:
            self._closed = True
            if self._conn is not None:
                if self._inline and self._unsynced:
                    _checkpoint(self._conn, "TRUNCATE")
                self._conn.close()
                self._conn = None

        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(close, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite store {self.path!r}: close failed: {exc}") from exc


def _connect_checkpointer(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _checkpoint(conn: sqlite3.Connection, mode: str) -> None:
    conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
