"""One SQLite connection driven from trio: the thread boundary of the domain store.

One ``sqlite3`` connection, used by one task at a time (a ``trio.CapacityLimiter(1)``),
in one of two durability modes (see :mod:`gateway.store.domain_sqlite`). Every
``sqlite3`` and ``OSError`` exception becomes :class:`gateway.errors.StoreUnavailable`
here; :class:`gateway.domain.errors.DomainError` refusals pass unchanged.

:class:`RunnerStore` is what the stores on one runner share (the domain, message-state,
read-state and file stores): reads, writes, opening, checkpointing, closing, statistics.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Protocol, TypeVar

import trio

from gateway.domain.errors import DomainError
from gateway.errors import StoreUnavailable
from gateway.store._sqlite_wal import WalConnection
from gateway.store.domain import DomainStoreStatistics

__all__ = ["RunnerStore", "SqliteRunner"]

_T = TypeVar("_T")
_S_co = TypeVar("_S_co", covariant=True)


class SqliteRunner(WalConnection):
    """Runs synchronous functions on one connection to ``path`` (schema ``schema``)."""

    def __init__(
        self, path: str, schema: str, *, durability: str = "full", fsync_interval: float = 1.0
    ) -> None:
        super().__init__(path, schema, durability=durability, fsync_interval=fsync_interval)
        self.schema = schema
        self.stats = DomainStoreStatistics()

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


class _StatisticsType(Protocol[_S_co]):
    def __call__(self, *, reads: int, writes: int, refusals: int) -> _S_co: ...


class RunnerStore:
    """A store on one :class:`SqliteRunner` (``self._db``) to ``path`` (schema ``schema``)."""

    def __init__(
        self, path: str, schema: str, *, durability: str = "full", fsync_interval: float = 1.0
    ) -> None:
        self._db = SqliteRunner(path, schema, durability=durability, fsync_interval=fsync_interval)
        self.path = path
        self.durability = durability

    async def _read(self, what: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._db.run(what, fn, write=False)

    async def _write(self, what: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._db.run(what, fn, write=True)

    def _statistics(self, kind: _StatisticsType[_S_co]) -> _S_co:
        s = self._db.stats
        return kind(reads=s.reads, writes=s.writes, refusals=s.refusals)

    async def open(self) -> None:
        """Open the connection and create the schema now (idempotent)."""
        await self._read("open", lambda conn: None)

    async def run_checkpointer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Interval mode: fsync the WAL every ``fsync_interval`` seconds if anything was
        committed. Runs until cancelled; the store's ``open_sqlite_*`` function starts it."""
        await self._db.run_checkpointer(task_status=task_status)

    async def aclose(self) -> None:
        """Close the connection (waits for the running operation); later calls fail."""
        await self._db.aclose()
