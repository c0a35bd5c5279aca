"""The FileStore contract (``gateway.store.files``), on every records adapter: SQLite (both
durability modes) and DynamoDB on moto's server.

To put a new adapter under contract, write one factory below and add it to ``FACTORIES``:
it takes a :class:`Site` and returns an async context manager yielding the store, such that
the same ``site.root`` and ``site.name`` reopen the same data, and its clock is
``site.clock``. Factories with ``needs_moto = True`` get moto's URL as a keyword.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from gateway.domain.errors import AlreadyExists, Conflict, DomainError, InvalidField, NotFound
from gateway.errors import StoreUnavailable
from gateway.store.files import FileRecord, FileStore, new_file_id
from gateway.store.files_dynamodb import item_file, open_dynamodb_file_store
from gateway.store.files_sqlite import open_sqlite_file_store
from gateway.store.tables import FILES, FILES_TABLES, check_tables, create_tables
from tests.aws import connect
from tests.contract import DEADLINE

T0 = 1_700_000_000_000  # ms
TTL = 600_000  # ms a slot lives in these tests


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@dataclasses.dataclass(frozen=True)
class Site:
    root: Path
    name: str
    clock: Clock


@asynccontextmanager
async def sqlite_files(site: Site) -> AsyncIterator[FileStore]:
    path = str(site.root / f"{site.name}.files.sqlite3")
    async with open_sqlite_file_store(path, clock=site.clock) as store:
        yield store


@asynccontextmanager
async def sqlite_files_interval(site: Site) -> AsyncIterator[FileStore]:
    path = str(site.root / f"{site.name}.files.sqlite3")
    async with open_sqlite_file_store(
        path, durability="interval", fsync_interval=0.05, clock=site.clock
    ) as store:
        yield store


@asynccontextmanager
async def dynamodb_files(site: Site, *, moto_url: str) -> AsyncIterator[FileStore]:
    prefix = "f" + hashlib.sha1(f"{site.root}/{site.name}".encode()).hexdigest()[:12]
    async with connect(moto_url) as aws:
        if await check_tables(aws, prefix, FILES_TABLES):
            await create_tables(aws, prefix, FILES_TABLES)
        async with open_dynamodb_file_store(aws, prefix, clock=site.clock) as store:
            yield store


dynamodb_files.needs_moto = True  # type: ignore[attr-defined]

FACTORIES = [
    pytest.param(sqlite_files, id="sqlite"),
    pytest.param(sqlite_files_interval, id="sqlite-interval"),
    pytest.param(dynamodb_files, id="dynamodb"),
]


class Opener:
    def __init__(self, factory: Callable[[Site], AbstractAsyncContextManager[FileStore]]) -> None:
        self.factory = factory

    @asynccontextmanager
    async def open(self, site: Site) -> AsyncIterator[FileStore]:
        with trio.fail_after(DEADLINE):
            async with self.factory(site) as store:
                yield store


@pytest.fixture(params=FACTORIES)
def opener(request: pytest.FixtureRequest) -> Opener:
    factory = request.param
    if not getattr(factory, "needs_moto", False):
        return Opener(factory)
    url = request.getfixturevalue("moto_url")

    def with_moto(site: Site) -> AbstractAsyncContextManager[FileStore]:
        return factory(site, moto_url=url)  # type: ignore[no-any-return]

    return Opener(with_moto)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path, "main", Clock())


@pytest.fixture
async def store(opener: Opener, site: Site) -> AsyncIterator[FileStore]:
    async with opener.open(site) as store:
        yield store


def pending(owner: str = "alice", *, size: int = 5, **kw: Any) -> FileRecord:
    fields: dict[str, Any] = {
        "id": new_file_id(),
        "owner": owner,
        "name": "notes.txt",
        "size": size,
        "content_type": "text/plain",
        "status": "pending",
        "created_ms": T0,
        "expires_ms": T0 + TTL,
    }
    return FileRecord(**(fields | kw))


def refused(exc: type[DomainError], reason: str | None = None) -> pytest.RaisesExc[Any]:
    return pytest.RaisesExc(exc, check=lambda e: reason is None or e.reason == reason)


async def ready(store: FileStore, owner: str = "alice") -> FileRecord:
    record = await store.create(pending(owner))
    return await store.mark_ready(record.id, owner, record.size)


# -- create / get ----------------------------------------------------------------------


async def test_create_then_get_round_trips(store: FileStore) -> None:
    record = pending(name="Résumé (final) \u00e9.pdf", content_type="application/pdf; q=1")
    assert await store.create(record) == record
    assert await store.get(record.id) == record
    assert await store.get(new_file_id()) is None


async def test_an_id_is_taken_once(store: FileStore) -> None:
    record = await store.create(pending())
    with pytest.raises(AlreadyExists):
        await store.create(pending("bob", id=record.id))
    assert await store.get(record.id) == record


async def test_only_pending_records_are_created(store: FileStore) -> None:
    with pytest.raises(InvalidField):
        await store.create(pending(status="ready", expires_ms=None))
    with pytest.raises(InvalidField):
        await store.create(pending(id="not-an-id"))
    with pytest.raises(InvalidField):
        await store.get("f00")


async def test_records_survive_a_reopen(opener: Opener, site: Site) -> None:
    async with opener.open(site) as store:
        record = await store.create(pending())
        done = await store.mark_ready(record.id, "alice", 5)
    async with opener.open(site) as store:
        assert await store.get(record.id) == done
    async with opener.open(dataclasses.replace(site, name="other")) as store:
        assert await store.get(record.id) is None


# -- mark_ready ------------------------------------------------------------------------


async def test_mark_ready_turns_the_record_ready_once(store: FileStore) -> None:
    record = await store.create(pending())
    done = await store.mark_ready(record.id, "alice", 5)
    assert done == msgspec.structs.replace(record, status="ready", expires_ms=None)
    assert await store.get(record.id) == done
    assert await store.mark_ready(record.id, "alice", 5) == done  # idempotent


async def test_mark_ready_needs_the_owner_and_the_size(store: FileStore) -> None:
    record = await store.create(pending())
    with refused(NotFound, "file"):
        await store.mark_ready(record.id, "bob", 5)
    with refused(NotFound, "file"):
        await store.mark_ready(new_file_id(), "alice", 5)
    with refused(Conflict, "size"):
        await store.mark_ready(record.id, "alice", 6)
    assert (await store.get(record.id)) == record
    await store.mark_ready(record.id, "alice", 5)
    with refused(Conflict, "size"):
        await store.mark_ready(record.id, "alice", 4)


async def test_a_lapsed_slot_cannot_be_completed(store: FileStore, site: Site) -> None:
    record = await store.create(pending())
    site.clock.now = T0 + TTL
    with refused(Conflict, "expired"):
        await store.mark_ready(record.id, "alice", 5)
    assert (await store.get(record.id)) == record


# -- attach ------------------------------------------------------------------------------


async def test_attach_once_to_one_channel(store: FileStore) -> None:
    record = await ready(store)
    attached = await store.attach(record.id, "alice", "ch.general")
    assert attached == msgspec.structs.replace(record, channel="ch.general")
    assert await store.attach(record.id, "alice", "ch.general") == attached  # idempotent
    with refused(Conflict, "attached"):
        await store.attach(record.id, "alice", "ch.random")
    assert await store.get(record.id) == attached


async def test_attach_needs_a_ready_file_of_the_owner(store: FileStore) -> None:
    record = await store.create(pending())
    with refused(Conflict, "not_ready"):
        await store.attach(record.id, "alice", "ch.general")
    done = await store.mark_ready(record.id, "alice", 5)
    with refused(NotFound, "file"):
        await store.attach(record.id, "bob", "ch.general")
    with refused(NotFound, "file"):
        await store.attach(new_file_id(), "alice", "ch.general")
    assert await store.get(record.id) == done


# -- count_pending ---------------------------------------------------------------------


async def test_count_pending_counts_open_slots_of_the_owner(store: FileStore, site: Site) -> None:
    assert await store.count_pending("alice") == 0
    first = await store.create(pending())
    await store.create(pending())
    await store.create(pending("bob"))
    assert await store.count_pending("alice") == 2
    await store.mark_ready(first.id, "alice", 5)
    assert await store.count_pending("alice") == 1
    assert await store.count_pending("bob") == 1
    site.clock.now = T0 + TTL  # the slots lapse
    assert await store.count_pending("alice") == 0
    await store.create(pending(created_ms=site.clock.now, expires_ms=site.clock.now + TTL))
    assert await store.count_pending("alice") == 1


# -- DynamoDB specifics ----------------------------------------------------------------


async def test_dynamodb_items_carry_the_ttl_and_index_keys_while_pending(moto_url: str) -> None:
    prefix = f"f{uuid.uuid4().hex[:12]}"
    with trio.fail_after(DEADLINE):
        async with connect(moto_url) as aws:
            assert await check_tables(aws, prefix, FILES_TABLES) == [f"{prefix}-files: missing"]
            with pytest.raises(StoreUnavailable, match="files: missing"):
                async with open_dynamodb_file_store(aws, prefix):
                    pass
            await create_tables(aws, prefix, FILES_TABLES)
            assert await check_tables(aws, prefix, FILES_TABLES) == []
            async with open_dynamodb_file_store(aws, prefix, clock=Clock()) as store:
                record = await store.create(pending())
                key = {"id": {"S": record.id}}
                item = (await aws.dynamodb("get_item", TableName=FILES.name(prefix), Key=key))[
                    "Item"
                ]
                assert item["pending_owner"] == {"S": "alice"}
                assert int(item["expires"]["N"]) > (T0 + TTL) // 1000
                assert item_file(item) == record
                await store.mark_ready(record.id, "alice", 5)
                item = (await aws.dynamodb("get_item", TableName=FILES.name(prefix), Key=key))[
                    "Item"
                ]
                assert not {"pending_owner", "expires", "expires_ms"} & set(item)
