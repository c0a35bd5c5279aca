"""One SQLite connection in WAL mode, shared by the SQLite message and domain stores.

Two durability modes. ``full``: ``synchronous=FULL``, operations in a worker thread (the
commit fsyncs). ``interval``: ``synchronous=NORMAL``, operations inline on the event loop
(a commit survives a crash of the process) and :meth:`WalConnection.run_checkpointer`
checkpoints (fsyncs) the WAL from a second connection in a worker thread every
``fsync_interval`` seconds. Subclasses run their operations on ``self._conn`` while
holding ``self._limiter`` and count commits in ``self._unsynced``.

Also what every SQLite store shares around that connection: :func:`transaction` (one
``BEGIN IMMEDIATE`` transaction) and :func:`running` (the body of each ``open_sqlite_*``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol, TypeVar

import trio

from gateway.errors import StoreUnavailable

__all__ = ["WalConnection", "WalStore", "checkpoint", "running", "transaction"]


class WalConnection:
    def __init__(
        self, path: str, schema: str, *, durability: str = "full", fsync_interval: float = 1.0
    ) -> None:
        if durability not in ("full", "interval"):
            raise ValueError("durability must be 'full' or 'interval'")
        self.path = path
        self.durability = durability
        self.fsync_interval = fsync_interval
        self._schema = schema
        self._inline = durability == "interval"
        self._unsynced = 0  # commits since the last checkpoint (interval mode)
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._limiter = trio.CapacityLimiter(1)  # held by the task whose thread runs ops

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
            conn.executescript(self._schema)
        except BaseException:
            conn.close()
            raise
        return conn

    async def run_checkpointer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Interval mode: every ``fsync_interval`` seconds, if anything was committed,
        checkpoint the WAL from a second connection in a worker thread, which fsyncs the
        WAL (and then the database). Runs until cancelled."""
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
                    await trio.to_thread.run_sync(checkpoint, conn, "PASSIVE")
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
                    checkpoint(self._conn, "TRUNCATE")
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
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def checkpoint(conn: sqlite3.Connection, mode: str) -> None:
    conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any exception (a refusal too)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class WalStore(Protocol):
    """What :func:`running` needs of a SQLite store."""

    async def open(self) -> None: ...

    async def run_checkpointer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...

    async def aclose(self) -> None: ...


_S = TypeVar("_S", bound=WalStore)


@asynccontextmanager
async def running(store: _S) -> AsyncIterator[_S]:
    """Open ``store`` (creating the parent directory and the schema), run its checkpointer
    (interval mode) while the block runs, and close it: the body of every ``open_sqlite_*``.
    """
    try:
        await store.open()
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run_checkpointer)
            try:
                yield store
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await store.aclose()
