"""The cursor tail both bus adapters hand out.

A tail holds no queue: it keeps its own cursor, reads what became visible since (from the
adapter's hot window, its log or its store), and parks on the channel's
:class:`trio.lowlevel.ParkingLot` until more does. A slow tail costs appenders and the
other tails nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import trio

from gateway.errors import StoreUnavailable
from gateway.model import Record

__all__ = ["CursorTail", "TailedLog"]


class TailedLog(Protocol):
    """What a tail needs of an adapter's per-channel state."""

    name: str
    epoch: str
    lot: trio.lowlevel.ParkingLot


class CursorTail:
    """Async iterator of record batches after ``after``, in order, each record once.

    ``visible()`` is the highest offset a tail may yield now (None: not known yet),
    ``read(after, limit)`` returns contiguous records after ``after``, ``stopped()`` says
    the adapter closed. Iteration ends when the tail or the adapter closes and raises
    :class:`StoreUnavailable` if the log's epoch changes (the log was lost).
    """

    def __init__(
        self,
        log: TailedLog,
        after: int,
        *,
        max_batch: int,
        visible: Callable[[], int | None],
        read: Callable[[int, int], Awaitable[Sequence[Record]]],
        stopped: Callable[[], bool],
    ) -> None:
        self._log = log
        self._epoch = log.epoch
        self._cursor = after
        self._max_batch = max_batch
        self._visible = visible
        self._read = read
        self._stopped = stopped
        self.closed = False

    def __aiter__(self) -> CursorTail:
        return self

    async def __anext__(self) -> Sequence[Record]:
        log = self._log
        while True:
            if self.closed or self._stopped():
                raise StopAsyncIteration
            if log.epoch != self._epoch:
                raise StoreUnavailable(f"channel {log.name!r}: log epoch changed, tail ended")
            top = self._visible()
            if top is not None and self._cursor < top:
                limit = min(self._max_batch, top - self._cursor)
                batch = [r for r in await self._read(self._cursor, limit) if r.offset <= top]
                if batch and log.epoch == self._epoch:
                    self._cursor = batch[-1].offset
                    return batch
            await log.lot.park()
