"""Adapter factories and fixtures for the ReadStateStore contract suite.

To put a new adapter under contract, write one factory and append it to
``READ_STATE_FACTORIES``. A factory takes a :class:`ReadSite` and returns an async
context manager yielding a :class:`gateway.store.read_state.ReadStateStore`, such that:

* the same ``site.root`` and ``site.name`` open the same durable data (close + reopen);
* another ``name`` opens a fresh, empty backend;
* the store signs cursors with ``site.cursor_key`` and reads the time from
  ``site.clock`` (milliseconds; tests move it to expire notifications).

A factory with ``needs_moto = True`` takes moto's server URL as a keyword, which
``read_opener`` binds (as ``message_state_factories.py`` does).

The test module imports the fixtures below (``read_opener``, ``read_store``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import trio

from gateway.store.read_state import ReadStateStore
from gateway.store.read_state_dynamodb import open_dynamodb_read_state
from gateway.store.read_state_sqlite import open_sqlite_read_state
from gateway.store.tables import READ_STATE_TABLES, check_tables, create_tables
from tests.aws import connect, one_request_at_a_time
from tests.contract import DEADLINE

CURSOR_KEY = b"contract-suite-read-state-cursor-key"
START_MS = 1_700_000_000_000  # the fake clock's start


class FakeClock:
    """Milliseconds that move only when a test says so."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclasses.dataclass(frozen=True)
class ReadSite:
    root: Path
    name: str
    clock: Callable[[], int]
    cursor_key: bytes = CURSOR_KEY


ReadFactory = Callable[[ReadSite], AbstractAsyncContextManager[ReadStateStore]]


# -- SQLite ------------------------------------------------------------------------------


@asynccontextmanager
async def sqlite_read_state(site: ReadSite) -> AsyncIterator[ReadStateStore]:
    path = str(site.root / f"{site.name}.read_state.sqlite3")
    async with open_sqlite_read_state(path, site.cursor_key, clock=site.clock) as store:
        yield store


@asynccontextmanager
async def sqlite_read_state_interval(site: ReadSite) -> AsyncIterator[ReadStateStore]:
    path = str(site.root / f"{site.name}.read_state.sqlite3")
    async with open_sqlite_read_state(
        path, site.cursor_key, durability="interval", fsync_interval=0.05, clock=site.clock
    ) as store:
        yield store


# -- DynamoDB (moto's server) ----------------------------------------------------------


@asynccontextmanager
async def dynamodb_read_state(site: ReadSite, *, moto_url: str) -> AsyncIterator[ReadStateStore]:
    # Each site has its own table prefix (the tables are created here, as deployment would).
    prefix = "r" + hashlib.sha1(f"{site.root}/{site.name}".encode()).hexdigest()[:12]
    async with connect(moto_url) as aws:
        one_request_at_a_time(aws)  # moto applies requests non-atomically
        if await check_tables(aws, prefix, READ_STATE_TABLES):
            await create_tables(aws, prefix, READ_STATE_TABLES)
        async with open_dynamodb_read_state(
            aws, prefix, site.cursor_key, clock=site.clock
        ) as store:
            yield store


dynamodb_read_state.needs_moto = True  # type: ignore[attr-defined]


READ_STATE_FACTORIES = [
    pytest.param(sqlite_read_state, id="sqlite"),
    pytest.param(sqlite_read_state_interval, id="sqlite-interval"),
    pytest.param(dynamodb_read_state, id="dynamodb"),
]


# -- fixtures ----------------------------------------------------------------------------


class ReadOpener:
    """Opens one adapter on named sites under one directory, all on one :class:`FakeClock`."""

    def __init__(self, factory: ReadFactory, root: Path) -> None:
        self.factory = factory
        self.root = root
        self.clock = FakeClock()

    @asynccontextmanager
    async def open(
        self, name: str = "main", *, cursor_key: bytes = CURSOR_KEY
    ) -> AsyncIterator[ReadStateStore]:
        with trio.fail_after(DEADLINE):
            site = ReadSite(self.root, name, self.clock, cursor_key)
            async with self.factory(site) as store:
                yield store


def _with_moto(
    factory: Callable[..., AbstractAsyncContextManager[ReadStateStore]], url: str
) -> ReadFactory:
    def bound(site: ReadSite) -> AbstractAsyncContextManager[ReadStateStore]:
        return factory(site, moto_url=url)

    return bound


@pytest.fixture(name="read_opener", params=READ_STATE_FACTORIES)
def read_opener_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> ReadOpener:
    factory = request.param
    if getattr(factory, "needs_moto", False):  # bind the moto server's URL
        factory = _with_moto(factory, request.getfixturevalue("moto_url"))
    return ReadOpener(factory, tmp_path)


@pytest.fixture(name="read_store")
async def read_store_fixture(read_opener: ReadOpener) -> AsyncIterator[ReadStateStore]:
    """The adapter on site "main". Its ``trio.fail_after(DEADLINE)`` spans the test: a
    hung test crashes this fixture, which makes pytest-trio cancel and fail the test."""
    async with read_opener.open() as store:
        yield store
