"""Adapter factories and fixtures for the DomainStore contract suites.

To put a new adapter under contract, write one factory and append it to
``DOMAIN_FACTORIES``. A factory takes a :class:`DomainSite` and returns an async context
manager yielding a :class:`DomainHandle`, such that:

* the same ``site.root`` and ``site.name`` open the same durable data (close + reopen);
* another ``name`` opens a fresh, empty backend;
* ``site.cursor_key`` is the key the store signs cursors with;
* ``handle.faults`` can make the backend refuse writes of one kind of item, so that a
  call writing several kinds fails midway (for the "no partial writes" tests).

A factory with ``needs_moto = True`` takes moto's server URL as a keyword, which
``domain_opener`` binds (as ``tests/contract/conftest.py`` does for the message stores).

The test modules import the fixtures below (``domain_opener``, ``domain``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import pytest
import trio

from gateway.domain.errors import DomainError
from gateway.domain.model import Channel, ChannelKind, Role
from gateway.errors import StoreUnavailable
from gateway.store.domain import MAX_PAGE, DomainStore
from gateway.store.domain_dynamodb import open_dynamodb_domain_store
from gateway.store.domain_sqlite import open_sqlite_domain_store
from gateway.store.tables import DOMAIN_TABLES, check_tables, create_tables
from tests.aws import connect, one_request_at_a_time
from tests.contract import DEADLINE

CURSOR_KEY = b"contract-suite-cursor-key-0123456789"
OTHER_CURSOR_KEY = b"another-deployment-cursor-key-987654"

# What a fault can target: memberships of a workspace, of a channel, DM records.
FAULT_KINDS = ("workspace_member", "channel_member", "conversation")


@dataclasses.dataclass(frozen=True)
class DomainSite:
    root: Path
    name: str
    cursor_key: bytes = CURSOR_KEY


class DomainFaults(Protocol):
    async def fail_writes(self, kind: str) -> None:
        """From now on, writing an item of ``kind`` (one of FAULT_KINDS) fails as if the
        backend were unavailable, until :meth:`heal`."""

    async def heal(self) -> None: ...


@dataclasses.dataclass
class DomainHandle:
    store: DomainStore
    faults: DomainFaults


DomainFactory = Callable[[DomainSite], AbstractAsyncContextManager[DomainHandle]]


# -- helpers ---------------------------------------------------------------------------

E = TypeVar("E", bound=DomainError)


def refused(exc: type[E], code: str, *, reason: str | None = None) -> pytest.RaisesExc[E]:
    """``pytest.raises(exc)`` that also checks the domain code (and reason)."""

    def check(e: E) -> bool:
        return e.domain_code == code and (reason is None or e.reason == reason)

    return pytest.RaisesExc(exc, check=check)


# -- SQLite ------------------------------------------------------------------------------


class SqliteFaults:
    """Faults by triggers that abort inserts, created from a second connection to the file:
    the store's own transaction then fails after its earlier statements ran."""

    TABLES = {
        "workspace_member": "members",
        "channel_member": "channel_members",
        "conversation": "conversations",
    }

    def __init__(self, path: str) -> None:
        self.path = path

    def _execute(self, sql: str) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            conn.execute(sql)
        finally:
            conn.close()

    async def fail_writes(self, kind: str) -> None:
        table = self.TABLES[kind]
        sql = (
            f"CREATE TRIGGER IF NOT EXISTS inject_{table} BEFORE INSERT ON {table}"
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        await trio.to_thread.run_sync(self._execute, sql)

    async def heal(self) -> None:
        for table in self.TABLES.values():
            await trio.to_thread.run_sync(self._execute, f"DROP TRIGGER IF EXISTS inject_{table}")


@asynccontextmanager
async def sqlite_domain(site: DomainSite) -> AsyncIterator[DomainHandle]:
    path = str(site.root / f"{site.name}.domain.sqlite3")
    async with open_sqlite_domain_store(path, site.cursor_key) as store:
        yield DomainHandle(store, SqliteFaults(path))


@asynccontextmanager
async def sqlite_domain_interval(site: DomainSite) -> AsyncIterator[DomainHandle]:
    path = str(site.root / f"{site.name}.domain.sqlite3")
    async with open_sqlite_domain_store(
        path, site.cursor_key, durability="interval", fsync_interval=0.05
    ) as store:
        yield DomainHandle(store, SqliteFaults(path))


# -- DynamoDB (moto's server) ----------------------------------------------------------


class DynamoFaults:
    """Faults by the store's ``before_transaction`` hook: a transaction that would write an
    item of a failing kind raises StoreUnavailable instead of being sent (a transaction is
    all or nothing, so this is what a failure midway looks like)."""

    def __init__(self) -> None:
        self.failing: set[str] = set()

    def check(self, kinds: frozenset[str]) -> None:
        if hit := kinds & self.failing:
            raise StoreUnavailable(f"injected: writes of {sorted(hit)} fail")

    async def fail_writes(self, kind: str) -> None:
        assert kind in FAULT_KINDS, kind
        self.failing.add(kind)

    async def heal(self) -> None:
        self.failing.clear()


@asynccontextmanager
async def dynamodb_domain(site: DomainSite, *, moto_url: str) -> AsyncIterator[DomainHandle]:
    # Each site has its own table prefix (the table is created here, as deployment would).
    prefix = "d" + hashlib.sha1(f"{site.root}/{site.name}".encode()).hexdigest()[:12]
    async with connect(moto_url) as aws:
        one_request_at_a_time(aws)  # moto applies requests non-atomically
        if await check_tables(aws, prefix, DOMAIN_TABLES):
            await create_tables(aws, prefix, DOMAIN_TABLES)
        faults = DynamoFaults()
        async with open_dynamodb_domain_store(
            aws, prefix, site.cursor_key, before_transaction=faults.check
        ) as store:
            yield DomainHandle(store, faults)


dynamodb_domain.needs_moto = True  # type: ignore[attr-defined]


DOMAIN_FACTORIES = [
    pytest.param(sqlite_domain, id="sqlite"),
    pytest.param(sqlite_domain_interval, id="sqlite-interval"),
    pytest.param(dynamodb_domain, id="dynamodb"),
]


# -- fixtures ----------------------------------------------------------------------------


class DomainOpener:
    """Opens one adapter on named sites under one directory."""

    def __init__(self, factory: DomainFactory, root: Path) -> None:
        self.factory = factory
        self.root = root

    @asynccontextmanager
    async def open(
        self, name: str = "main", *, cursor_key: bytes = CURSOR_KEY
    ) -> AsyncIterator[DomainHandle]:
        with trio.fail_after(DEADLINE):
            async with self.factory(DomainSite(self.root, name, cursor_key)) as handle:
                yield handle


def _with_moto(
    factory: Callable[..., AbstractAsyncContextManager[DomainHandle]], url: str
) -> DomainFactory:
    def bound(site: DomainSite) -> AbstractAsyncContextManager[DomainHandle]:
        return factory(site, moto_url=url)

    return bound


@pytest.fixture(name="domain_opener", params=DOMAIN_FACTORIES)
def domain_opener_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> DomainOpener:
    factory = request.param
    if getattr(factory, "needs_moto", False):  # bind the moto server's URL
        factory = _with_moto(factory, request.getfixturevalue("moto_url"))
    return DomainOpener(factory, tmp_path)


@pytest.fixture(name="domain")
async def domain_fixture(domain_opener: DomainOpener) -> AsyncIterator[DomainHandle]:
    """The adapter on site "main". Its ``trio.fail_after(DEADLINE)`` spans the test: a
    hung test crashes this fixture, which makes pytest-trio cancel and fail the test."""
    async with domain_opener.open() as handle:
        yield handle


# -- a populated workspace ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class World:
    """Workspace ``acme``: alice (owner), bob (admin), carol and erin (members), dave
    (guest). Workspace ``other``: owen (owner), zed (member). frank is in no workspace."""

    ws: str = "acme"
    ws2: str = "other"


async def populate(store: DomainStore) -> World:
    world = World()
    for user in ("alice", "bob", "carol", "dave", "erin", "frank", "owen", "zed"):
        await store.create_user(user, f"{user}@example.com", user.title())
    await store.create_workspace("Acme", owner="alice", workspace_id=world.ws)
    await store.create_workspace("Other", owner="owen", workspace_id=world.ws2)
    for user, role in (
        ("bob", Role.ADMIN),
        ("carol", Role.MEMBER),
        ("erin", Role.MEMBER),
        ("dave", Role.GUEST),
    ):
        assert await store.add_member(world.ws, user, role, actor="alice")
    assert await store.add_member(world.ws2, "zed", Role.MEMBER, actor="owen")
    return world


async def channel_names(s: DomainStore, ws: str) -> list[str]:
    return [c.name for c in (await s.list_channels(ws, limit=MAX_PAGE)).items]


async def members_of(s: DomainStore, channel: str) -> list[str]:
    return [m.user for m in (await s.list_channel_members(channel, limit=MAX_PAGE)).items]


async def setup(s: DomainStore) -> tuple[World, Channel, Channel]:
    """The world plus #general (public, by carol) and #secret (private, by bob)."""
    w = await populate(s)
    general = await s.create_channel(w.ws, "general", ChannelKind.PUBLIC, actor="carol")
    secret = await s.create_channel(w.ws, "secret", ChannelKind.PRIVATE, actor="bob")
    return w, general, secret
