"""One SQLite connection driven from trio: the thread boundary of the domain store.

One ``sqlite3`` connection, used by one task at a time (a ``trio.CapacityLimiter(1)``),
in one of two durability modes (see :mod:`gateway.store.domain_sqlite`). Every
``sqlite3`` and ``OSError`` exception becomes :class:`gateway.errors.StoreUnavailable`
here; :class:`gateway.domain.errors.DomainError` refusals pass unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

import trio

from gateway.domain.errors import DomainError
from gateway.errors import StoreUnavailable
from gateway.store._sqlite_wal import WalConnection
from gateway.store.domain import DomainStoreStatistics

__all__ = ["SqliteRunner"]

_T = TypeVar("_T")


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
