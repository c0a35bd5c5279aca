"""Adapter factories and fixtures for the MessageStateStore contract suite.

To put a new adapter under contract, write one factory and append it to
``MESSAGE_STATE_FACTORIES``. A factory takes a :class:`StateSite` and returns an async
context manager yielding a :class:`gateway.store.message_state.MessageStateStore`, such
that:

* the same ``site.root`` and ``site.name`` open the same durable data (close + reopen);
* another ``name`` opens a fresh, empty backend.

A factory with ``needs_moto = True`` takes moto's server URL as a keyword, which
``state_opener`` binds (as ``domain_factories.py`` does).

The test module imports the fixtures below (``state_opener``, ``state_store``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from gateway.domain.errors import DomainError
from gateway.store.message_state import MessageStateStore
from gateway.store.message_state_dynamodb import open_dynamodb_message_state
from gateway.store.message_state_sqlite import open_sqlite_message_state
from gateway.store.tables import MESSAGE_STATE_TABLES, check_tables, create_tables
from tests.aws import connect, one_request_at_a_time
from tests.contract import DEADLINE


@dataclasses.dataclass(frozen=True)
class StateSite:
    root: Path
    name: str


StateFactory = Callable[[StateSite], AbstractAsyncContextManager[MessageStateStore]]

E = TypeVar("E", bound=DomainError)


def refused(exc: type[E], code: str, *, reason: str | None = None) -> pytest.RaisesExc[E]:
    """``pytest.raises(exc)`` that also checks the domain code (and reason)."""

    def check(e: E) -> bool:
        return e.domain_code == code and (reason is None or e.reason == reason)

    return pytest.RaisesExc(exc, check=check)


# -- SQLite ------------------------------------------------------------------------------


@asynccontextmanager
async def sqlite_state(site: StateSite) -> AsyncIterator[MessageStateStore]:
    path = str(site.root / f"{site.name}.message_state.sqlite3")
    async with open_sqlite_message_state(path) as store:
        yield store


@asynccontextmanager
async def sqlite_state_interval(site: StateSite) -> AsyncIterator[MessageStateStore]:
    path = str(site.root / f"{site.name}.message_state.sqlite3")
    async with open_sqlite_message_state(path, durability="interval", fsync_interval=0.05) as s:
        yield s


# -- DynamoDB (moto's server) ----------------------------------------------------------


@asynccontextmanager
async def dynamodb_state(site: StateSite, *, moto_url: str) -> AsyncIterator[MessageStateStore]:
    # Each site has its own table prefix (the tables are created here, as deployment would).
    prefix = "s" + hashlib.sha1(f"{site.root}/{site.name}".encode()).hexdigest()[:12]
    async with connect(moto_url) as aws:
        one_request_at_a_time(aws)
        if await check_tables(aws, prefix, MESSAGE_STATE_TABLES):
            await create_tables(aws, prefix, MESSAGE_STATE_TABLES)
        async with open_dynamodb_message_state(aws, prefix) as store:
            yield store


dynamodb_state.needs_moto = True  # type: ignore[attr-defined]


MESSAGE_STATE_FACTORIES = [
    pytest.param(sqlite_state, id="sqlite"),
    pytest.param(sqlite_state_interval, id="sqlite-interval"),
    pytest.param(dynamodb_state, id="dynamodb"),
]


# -- fixtures ----------------------------------------------------------------------------


class StateOpener:
    """Opens one adapter on named sites under one directory."""

    def __init__(self, factory: StateFactory, root: Path) -> None:
        self.factory = factory
        self.root = root

    @asynccontextmanager
    async def open(self, name: str = "main") -> AsyncIterator[MessageStateStore]:
        with trio.fail_after(DEADLINE):
            async with self.factory(StateSite(self.root, name)) as store:
                yield store


def _with_moto(
    factory: Callable[..., AbstractAsyncContextManager[MessageStateStore]], url: str
) -> StateFactory:
    def bound(site: StateSite) -> AbstractAsyncContextManager[MessageStateStore]:
        return factory(site, moto_url=url)

    return bound


@pytest.fixture(name="state_opener", params=MESSAGE_STATE_FACTORIES)
def state_opener_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> StateOpener:
    factory = request.param
    if getattr(factory, "needs_moto", False):  # bind the moto server's URL
        factory = _with_moto(factory, request.getfixturevalue("moto_url"))
    return StateOpener(factory, tmp_path)


@pytest.fixture(name="state_store")
async def state_store_fixture(state_opener: StateOpener) -> AsyncIterator[MessageStateStore]:
    """The adapter on site "main". Its ``trio.fail_after(DEADLINE)`` spans the test: a
    hung test crashes this fixture, which makes pytest-trio cancel and fail the test."""
    async with state_opener.open() as store:
        yield store
