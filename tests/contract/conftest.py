"""Adapter factories for the contract suites.

To put a new adapter under contract, write one factory and append it to
``STORE_FACTORIES`` or ``BUS_FACTORIES``. A factory takes a :class:`Site` and returns an
async context manager that opens the adapter there, such that:

* the same ``site.root`` and ``site.name`` open the same durable data (close + reopen);
* another ``name`` opens a fresh, empty backend (a new store, with new epochs);
* ``site.faults`` is honoured for writes (see :class:`tests.contract.Faults`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Generic, TypeVar

import pytest
import trio

from gateway.bus.base import Bus
from gateway.bus.memory import open_memory_bus
from gateway.store.base import MessageStore
from gateway.store.sqlite import open_sqlite_store
from tests.contract import DEADLINE, Faults, FaultyStore

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Site:
    """Where an adapter keeps its data in one test: a directory, a name, its faults."""

    root: Path
    name: str
    faults: Faults


Factory = Callable[[Site], AbstractAsyncContextManager[T]]


# -- stores ------------------------------------------------------------------------------


@asynccontextmanager
async def sqlite_store(site: Site) -> AsyncIterator[MessageStore]:
    async with open_sqlite_store(str(site.root / f"{site.name}.sqlite3")) as store:
        yield FaultyStore(store, site.faults)


@asynccontextmanager
async def sqlite_store_interval(site: Site) -> AsyncIterator[MessageStore]:
    path = str(site.root / f"{site.name}.sqlite3")
    async with open_sqlite_store(path, durability="interval", fsync_interval=0.05) as store:
        yield FaultyStore(store, site.faults)


STORE_FACTORIES = [
    pytest.param(sqlite_store, id="sqlite"),
    pytest.param(sqlite_store_interval, id="sqlite-interval"),
]


# -- buses -------------------------------------------------------------------------------


@asynccontextmanager
async def memory_bus_on_sqlite(site: Site) -> AsyncIterator[Bus]:
    async with (
        open_sqlite_store(str(site.root / f"{site.name}.sqlite3")) as store,
        open_memory_bus(FaultyStore(store, site.faults)) as bus,
    ):
        yield bus


@asynccontextmanager
async def memory_bus_on_sqlite_interval(site: Site) -> AsyncIterator[Bus]:
    path = str(site.root / f"{site.name}.sqlite3")
    async with (
        open_sqlite_store(path, durability="interval", fsync_interval=0.05) as store,
        open_memory_bus(FaultyStore(store, site.faults)) as bus,
    ):
        yield bus


BUS_FACTORIES = [
    pytest.param(memory_bus_on_sqlite, id="memory+sqlite"),
    pytest.param(memory_bus_on_sqlite_interval, id="memory+sqlite-interval"),
]


# -- fixtures ----------------------------------------------------------------------------


class Opener(Generic[T]):
    """Opens one adapter on named sites under one directory; all share ``faults``."""

    def __init__(self, factory: Factory[T], root: Path) -> None:
        self.factory = factory
        self.root = root
        self.faults = Faults()

    def site(self, name: str = "main") -> Site:
        return Site(self.root, name, self.faults)

    @asynccontextmanager
    async def open(self, name: str = "main") -> AsyncIterator[T]:
        """Open the adapter on site ``name``, in a test: it fails if it runs past DEADLINE."""
        with trio.fail_after(DEADLINE):
            async with self.factory(self.site(name)) as adapter:
                yield adapter


@pytest.fixture(params=STORE_FACTORIES)
def store_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener[MessageStore]:
    return Opener(request.param, tmp_path)


@pytest.fixture
async def store(store_opener: Opener[MessageStore]) -> AsyncIterator[MessageStore]:
    async with store_opener.factory(store_opener.site()) as s:
        yield s


@pytest.fixture(params=BUS_FACTORIES)
def bus_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener[Bus]:
    return Opener(request.param, tmp_path)


@pytest.fixture
async def bus(bus_opener: Opener[Bus]) -> AsyncIterator[Bus]:
    async with bus_opener.factory(bus_opener.site()) as b:
        yield b


@pytest.fixture
def faults(bus_opener: Opener[Bus]) -> Faults:
    return bus_opener.faults
