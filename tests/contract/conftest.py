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
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
import trio

from gateway.aws import open_aws
from gateway.bus.base import Bus
from gateway.bus.memory import open_memory_bus
from gateway.bus.redis import open_redis_bus
from gateway.bus.redis_scripts import APPEND
from gateway.redis.client import RedisClient, RedisUnavailable, Script, open_redis
from gateway.redis.connection import Arg
from gateway.store.base import MessageStore
from gateway.store.dynamodb import open_dynamo_store
from gateway.store.sqlite import open_sqlite_store
from gateway.store.tables import check_tables, create_tables
from tests.aws import one_request_at_a_time
from tests.contract import DEADLINE, Faults, FaultyStore

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Site:
    """Where an adapter keeps its data in one test: a directory, a name, its faults."""

    root: Path
    name: str
    faults: Faults
    redis_url: str = ""  # a running Redis, for adapters that need one


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


# DynamoDB on moto's server: a factory with ``needs_moto = True`` takes the server's URL as a
# keyword, which ``store_opener`` binds. Each site gets its own table prefix (the tables are
# created here, as deployment would), so sites are independent and a site reopens its tables.


def dynamo_prefix(site: Site) -> str:
    return "t" + hashlib.sha1(f"{site.root}/{site.name}".encode()).hexdigest()[:12]


@asynccontextmanager
async def dynamodb_store(site: Site, *, moto_url: str) -> AsyncIterator[MessageStore]:
    prefix = dynamo_prefix(site)
    async with open_aws(moto_url, "us-east-1", access_key="testing", secret_key="testing") as aws:
        one_request_at_a_time(aws)  # moto applies requests non-atomically
        if await check_tables(aws, prefix):
            await create_tables(aws, prefix)
        async with open_dynamo_store(aws, prefix) as store:
            yield FaultyStore(store, site.faults)


dynamodb_store.needs_moto = True  # type: ignore[attr-defined]


def _with_moto(factory: Callable[..., AbstractAsyncContextManager[T]], url: str) -> Factory[T]:
    def bound(site: Site) -> AbstractAsyncContextManager[T]:
        return factory(site, moto_url=url)

    return bound


STORE_FACTORIES = [
    pytest.param(sqlite_store, id="sqlite"),
    pytest.param(sqlite_store_interval, id="sqlite-interval"),
    pytest.param(dynamodb_store, id="dynamodb"),
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


class FaultyRedis:
    """Makes the next ``faults.fail_writes`` appends fail as if Redis were unreachable."""

    def __init__(self, client: RedisClient, faults: Faults) -> None:
        self.client = client
        self.faults = faults
        self.run_script_inner = client.run_script

    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        if script is APPEND:
            self.faults.calls["append"] += 1
            if self.faults.fail_writes > 0:
                self.faults.fail_writes -= 1
                raise RedisUnavailable("injected: Redis is unreachable")
        return await self.run_script_inner(script, keys, args)


@asynccontextmanager
async def redis_bus_on_sqlite(site: Site) -> AsyncIterator[Bus]:
    # The same root and name reopen the same keys and store; another name is a fresh log.
    prefix = "t" + hashlib.sha1(f"{site.root}/{site.name}".encode()).hexdigest()[:12]
    async with (
        open_sqlite_store(str(site.root / f"{site.name}.sqlite3")) as store,
        open_redis(site.redis_url) as redis,
    ):
        faulty = FaultyRedis(redis, site.faults)
        redis.run_script = faulty.run_script  # type: ignore[method-assign]
        async with open_redis_bus(redis, FaultyStore(store, site.faults), prefix=prefix) as bus:
            yield bus


redis_bus_on_sqlite.needs_redis = "server"  # type: ignore[attr-defined]


@asynccontextmanager
async def redis_cluster_bus_on_sqlite(site: Site) -> AsyncIterator[Bus]:
    async with redis_bus_on_sqlite(site) as bus:
        yield bus


redis_cluster_bus_on_sqlite.needs_redis = "cluster"  # type: ignore[attr-defined]

BUS_FACTORIES = [
    pytest.param(memory_bus_on_sqlite, id="memory+sqlite"),
    pytest.param(memory_bus_on_sqlite_interval, id="memory+sqlite-interval"),
    pytest.param(redis_bus_on_sqlite, id="redis+sqlite"),
    pytest.param(redis_cluster_bus_on_sqlite, id="redis-cluster+sqlite"),
]


# -- fixtures ----------------------------------------------------------------------------


class Opener(Generic[T]):
    """Opens one adapter on named sites under one directory; all share ``faults``."""

    def __init__(self, factory: Factory[T], root: Path, redis_url: str = "") -> None:
        self.factory = factory
        self.root = root
        self.faults = Faults()
        self.redis_url = redis_url

    def site(self, name: str = "main") -> Site:
        return Site(self.root, name, self.faults, self.redis_url)

    @asynccontextmanager
    async def open(self, name: str = "main") -> AsyncIterator[T]:
        """Open the adapter on site ``name``, in a test: it fails if it runs past DEADLINE."""
        with trio.fail_after(DEADLINE):
            async with self.factory(self.site(name)) as adapter:
                yield adapter


@pytest.fixture(params=STORE_FACTORIES)
def store_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener[MessageStore]:
    factory = request.param
    if getattr(factory, "needs_moto", False):  # bind the moto server's URL
        factory = _with_moto(factory, request.getfixturevalue("moto_url"))
    return Opener(factory, tmp_path)


@pytest.fixture
async def store(store_opener: Opener[MessageStore]) -> AsyncIterator[MessageStore]:
    async with store_opener.factory(store_opener.site()) as s:
        yield s


@pytest.fixture(params=BUS_FACTORIES)
def bus_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener[Bus]:
    url = ""
    needs = getattr(request.param, "needs_redis", "")
    if needs == "server":
        url = request.getfixturevalue("redis_url")
    elif needs == "cluster":
        url = request.getfixturevalue("redis_cluster").url
    return Opener(request.param, tmp_path, url)


@pytest.fixture
async def bus(bus_opener: Opener[Bus]) -> AsyncIterator[Bus]:
    async with bus_opener.factory(bus_opener.site()) as b:
        yield b


@pytest.fixture
def faults(bus_opener: Opener[Bus]) -> Faults:
    return bus_opener.faults


# -- presence ----------------------------------------------------------------------------
# A presence factory opens one *node*: on a shared backend, two opens of the same site are
# two nodes of one deployment (the same keys), and another site name is another deployment.
# Factories with ``shared = True`` support that; the others are one process only.

from gateway.presence.base import Presence  # noqa: E402
from gateway.presence.memory import open_memory_presence  # noqa: E402
from gateway.presence.redis import open_redis_presence  # noqa: E402

PRESENCE_TTL = 1.0  # seconds: small, so leases lapse within a test


@asynccontextmanager
async def memory_presence(site: Site) -> AsyncIterator[Presence]:
    async with open_memory_presence(ttl=PRESENCE_TTL) as presence:
        yield presence


@asynccontextmanager
async def redis_presence(site: Site) -> AsyncIterator[Presence]:
    prefix = "p" + hashlib.sha1(f"{site.root}/{site.name}".encode()).hexdigest()[:12]
    async with (
        open_redis(site.redis_url) as redis,
        open_redis_presence(redis, prefix=prefix, ttl=PRESENCE_TTL) as presence,
    ):
        yield presence


redis_presence.needs_redis = "server"  # type: ignore[attr-defined]
redis_presence.shared = True  # type: ignore[attr-defined]


@asynccontextmanager
async def redis_cluster_presence(site: Site) -> AsyncIterator[Presence]:
    async with redis_presence(site) as presence:
        yield presence


redis_cluster_presence.needs_redis = "cluster"  # type: ignore[attr-defined]
redis_cluster_presence.shared = True  # type: ignore[attr-defined]

SHARED_PRESENCE_FACTORIES = [
    pytest.param(redis_presence, id="redis"),
    pytest.param(redis_cluster_presence, id="redis-cluster"),
]
PRESENCE_FACTORIES = [pytest.param(memory_presence, id="memory"), *SHARED_PRESENCE_FACTORIES]


def _redis_url_for(request: pytest.FixtureRequest) -> str:
    needs = getattr(request.param, "needs_redis", "")
    if needs == "server":
        return str(request.getfixturevalue("redis_url"))
    if needs == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return ""


@pytest.fixture(params=PRESENCE_FACTORIES)
def presence_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener[Presence]:
    """Every presence adapter; ``factory.shared`` says whether a second open is a node."""
    return Opener(request.param, tmp_path, _redis_url_for(request))


@pytest.fixture(params=SHARED_PRESENCE_FACTORIES)
def shared_presence_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener[Presence]:
    """Adapters shared by several nodes: each ``open()`` of one site is another node."""
    return Opener(request.param, tmp_path, _redis_url_for(request))
