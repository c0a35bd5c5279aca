"""Contract suites run against every bus and store adapter, and the fakes they share.

:class:`Faults` are switches a test flips to make an adapter's durable backend misbehave;
each adapter factory (in ``conftest.py``) wires them in its own way: a
:class:`FaultyStore` wrapper for adapters built on a ``MessageStore``; for network
services later, a proxy or a stopped server.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import trio

from gateway.errors import StoreUnavailable
from gateway.model import Position, Record
from gateway.store.base import MessageStore, StoreStatistics, WriteBehindResult

__all__ = ["DEADLINE", "Faults", "FaultyStore"]

DEADLINE = 60.0  # seconds: a hung adapter fails its test instead of hanging the run


@dataclasses.dataclass
class Faults:
    """What the durable backend should do wrong, and what it has been asked to do."""

    fail_writes: int = 0  # the next N writes raise StoreUnavailable and store nothing
    land_then_fail: int = 0  # the next N writes are stored, then raise StoreUnavailable
    fail_reads: bool = False  # reads and lookups raise StoreUnavailable
    hold: trio.Event | None = None  # when set to an Event, writes wait for it first
    calls: Counter[str] = dataclasses.field(default_factory=Counter)


class FaultyStore:
    """A :class:`MessageStore` wrapper that obeys :class:`Faults` and counts calls."""

    def __init__(self, inner: MessageStore, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults

    def _read(self, name: str) -> None:
        self.faults.calls[name] += 1
        if self.faults.fail_reads:
            raise StoreUnavailable(f"injected {name} failure")

    async def open_log(self, channel: str) -> Position:
        self._read("open_log")
        return await self.inner.open_log(channel)

    async def write(self, records: Sequence[Record]) -> None:
        await self._before_write("write")
        await self.inner.write(records)
        self._after_write()

    async def write_behind(self, records: Sequence[Record]) -> WriteBehindResult:
        await self._before_write("write_behind")
        result = await self.inner.write_behind(records)
        self._after_write()
        return result

    async def _before_write(self, name: str) -> None:
        f = self.faults
        f.calls[name] += 1
        if f.hold is not None:
            await f.hold.wait()
        if f.fail_writes > 0:
            f.fail_writes -= 1
            raise StoreUnavailable("injected write failure")

    def _after_write(self) -> None:
        f = self.faults
        if f.land_then_fail > 0:
            f.land_then_fail -= 1
            raise StoreUnavailable("injected failure after the write landed")

    async def read(self, channel: str, after: int, limit: int) -> Sequence[Record]:
        self._read("read")
        return await self.inner.read(channel, after, limit)

    async def read_before(self, channel: str, before: int, limit: int) -> Sequence[Record]:
        self._read("read_before")
        return await self.inner.read_before(channel, before, limit)

    async def find_cmid(self, channel: str, sender: str, cmid: str) -> Record | None:
        self._read("find_cmid")
        return await self.inner.find_cmid(channel, sender, cmid)

    async def read_by_sender(
        self, channel: str, sender: str, before: int, limit: int
    ) -> Sequence[Record]:
        self._read("read_by_sender")
        return await self.inner.read_by_sender(channel, sender, before, limit)

    def statistics(self) -> StoreStatistics:
        return self.inner.statistics()

    async def aclose(self) -> None:
        await self.inner.aclose()
