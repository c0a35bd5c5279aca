"""DynamoDB domain store specifics (the contract suites cover the DomainStore guarantees):
the domain table's checks, the item layout of ``docs/data-model.md``, retries, and
re-deciding when a fact changes between the reads and the transaction, on moto."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from gateway.aws import Aws
from gateway.domain.errors import Forbidden, StaleVersion
from gateway.domain.model import ChannelKind, Role, dm_channel_id
from gateway.errors import StoreUnavailable
from gateway.store.domain_dynamodb import DynamoDomainStore, open_dynamodb_domain_store
from gateway.store.tables import (
    DOMAIN,
    DOMAIN_TABLES,
    MESSAGE_TABLES,
    TABLES,
    check_tables,
    create_tables,
)
from tests.aws import FaultProxy, Rule, connect, open_fault_proxy
from tests.contract.domain_factories import CURSOR_KEY, populate

T = 60  # seconds: deadline of each test body


def new_prefix() -> str:
    return f"d{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[Aws]:
    async with connect(moto_url) as aws:
        yield aws


@pytest.fixture
async def prefix(aws: Aws) -> str:
    prefix = new_prefix()
    with trio.fail_after(T):
        await create_tables(aws, prefix, DOMAIN_TABLES)
    return prefix


@pytest.fixture
async def store(aws: Aws, prefix: str) -> AsyncIterator[DynamoDomainStore]:
    async with open_dynamodb_domain_store(aws, prefix, CURSOR_KEY) as store:
        yield store


@pytest.fixture
async def proxy(moto_url: str) -> AsyncIterator[FaultProxy]:
    async with open_fault_proxy(moto_url) as proxy:
        yield proxy


@pytest.fixture
async def faulty(proxy: FaultProxy, prefix: str) -> AsyncIterator[DynamoDomainStore]:
    """A store on the same table, reached through the fault proxy."""
    async with (
        connect(proxy.url) as aws,
        open_dynamodb_domain_store(aws, prefix, CURSOR_KEY) as store,
    ):
        yield store


# -- the table -----------------------------------------------------------------------------


async def test_check_tables_names_the_missing_domain_table(aws: Aws) -> None:
    prefix = new_prefix()
    with trio.fail_after(T):
        assert await check_tables(aws, prefix, TABLES) == [
            f"{prefix}-{t.suffix}: missing" for t in TABLES
        ]
        assert f"{prefix}-domain: missing" not in await check_tables(aws, prefix)  # messages
        with pytest.raises(StoreUnavailable, match=f"{prefix}-domain: missing"):
            async with open_dynamodb_domain_store(aws, prefix, CURSOR_KEY):
                pass
        await create_tables(aws, prefix, DOMAIN_TABLES)
        assert await check_tables(aws, prefix, DOMAIN_TABLES) == []
        assert await check_tables(aws, prefix) == [
            f"{prefix}-{t.suffix}: missing" for t in MESSAGE_TABLES
        ]  # only the domain table was asked for
        await create_tables(aws, prefix, TABLES)  # idempotent for the existing one
        assert await check_tables(aws, prefix, TABLES) == []
        backups = await aws.dynamodb("describe_continuous_backups", TableName=DOMAIN.name(prefix))
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"


async def test_check_tables_names_a_wrong_domain_key_schema(aws: Aws) -> None:
    prefix = new_prefix()
    with trio.fail_after(T):
        await aws.dynamodb(
            "create_table",
            TableName=DOMAIN.name(prefix),
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        problems = await check_tables(aws, prefix, DOMAIN_TABLES)
        assert problems and problems[0].startswith(f"{prefix}-domain: key schema")
        with pytest.raises(StoreUnavailable, match=f"{prefix}-domain: key schema"):
            async with open_dynamodb_domain_store(aws, prefix, CURSOR_KEY):
                pass


async def test_a_table_lost_at_run_time_is_unavailable(aws: Aws, store: DynamoDomainStore) -> None:
    with trio.fail_after(T):
        await store.create_user("u1", "u1@example.com", "U1")
        await aws.dynamodb("delete_table", TableName=store.table)
        with pytest.raises(StoreUnavailable, match=f"table {store.table} is missing"):
            await store.get_user("u1")
        with pytest.raises(StoreUnavailable, match=store.table):
            await store.create_user("u2", "u2@example.com", "U2")


# -- the item layout -----------------------------------------------------------------------


async def scan_keys(aws: Aws, table: str) -> set[tuple[str, str]]:
    got = await aws.dynamodb("scan", TableName=table, ConsistentRead=True)
    return {(item["pk"]["S"], item["sk"]["S"]) for item in got["Items"]}


async def test_items_follow_the_documented_layout(aws: Aws, store: DynamoDomainStore) -> None:
    with trio.fail_after(T):
        await store.create_user("alice", "Alice@Example.com", "Alice")
        await store.create_user("bob", "bob@example.com", "Bob")
        await store.create_workspace("Acme", owner="alice", workspace_id="acme")
        await store.add_member("acme", "bob", Role.MEMBER, actor="alice")
        general = await store.create_channel(
            "acme", "general", ChannelKind.PUBLIC, actor="bob", position=12
        )
        dm = await store.open_dm("acme", ["bob"], actor="alice")
        keys = await scan_keys(aws, store.table)
    g, d = general.id, dm.id
    assert d == dm_channel_id("acme", ["alice", "bob"])
    assert keys == {
        ("U#alice", "#U"), ("U#bob", "#U"),
        ("E#alice@example.com", "#E"), ("E#bob@example.com", "#E"),
        ("W#acme", "#W"),
        ("W#acme", "M#alice"), ("U#alice", "W#acme"),
        ("W#acme", "M#bob"), ("U#bob", "W#acme"),
        ("W#acme", "N#general"), ("W#acme", "P#0000012#general"), (f"C#{g}", "#C"),
        (f"C#{g}", "M#bob"), ("U#bob", f"C#acme#{g}"),
        (f"C#{d}", "#C"),
        (f"C#{d}", "M#alice"), ("U#alice", f"C#acme#{d}"),
        (f"C#{d}", "M#bob"), ("U#bob", f"C#acme#{d}"),
    }  # fmt: skip


async def test_moving_a_channel_moves_its_listing_entry(aws: Aws, store: DynamoDomainStore) -> None:
    with trio.fail_after(T):
        await store.create_user("alice", "alice@example.com", "Alice")
        await store.create_workspace("Acme", owner="alice", workspace_id="acme")
        c = await store.create_channel("acme", "news", ChannelKind.PRIVATE, actor="alice")
        await store.update_channel(c.id, actor="alice", expected_version=1, position=7)
        keys = await scan_keys(aws, store.table)
        (listed,) = (await store.list_channels("acme", limit=10)).items
    assert ("W#acme", "P#0000007#news") in keys and ("W#acme", "P#0000000#news") not in keys
    assert (listed.position, listed.version) == (7, 2)


# -- retries -------------------------------------------------------------------------------


async def test_throttled_transactions_are_retried_with_one_token(
    proxy: FaultProxy, faulty: DynamoDomainStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens: list[str] = []
    call = faulty.aws.call

    async def spy(service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        if operation == "transact_write_items":
            tokens.append(params["ClientRequestToken"])
        return await call(service, operation, **params)

    monkeypatch.setattr(faulty.aws, "call", spy)
    proxy.throttle(2, op="TransactWriteItems")
    with trio.fail_after(T):
        await faulty.create_user("u1", "u1@example.com", "U1")
        assert await faulty.get_user("u1") is not None
    assert proxy.seen.count("TransactWriteItems") == 3  # two throttled, then applied
    assert len(tokens) == 1  # the bridge's retries sent the same request, token included


async def test_throttled_on_every_try_stores_nothing(
    proxy: FaultProxy, faulty: DynamoDomainStore, store: DynamoDomainStore
) -> None:
    proxy.throttle(100, op="TransactWriteItems")
    with trio.fail_after(T):
        with pytest.raises(StoreUnavailable):
            await faulty.create_user("u1", "u1@example.com", "U1")
        assert await store.get_user("u1") is None
        assert await store.get_user_by_email("u1@example.com") is None


# -- re-deciding ---------------------------------------------------------------------------


async def held_transaction(proxy: FaultProxy) -> None:
    """Wait until the proxy holds a TransactWriteItems request."""
    while "TransactWriteItems" not in proxy.seen:
        await trio.sleep(0.01)


async def test_a_demotion_between_read_and_write_is_seen(
    proxy: FaultProxy, faulty: DynamoDomainStore, store: DynamoDomainStore
) -> None:
    w = await populate(store)
    outcome: list[BaseException] = []

    async def add() -> None:
        try:
            await faulty.add_member(w.ws, "frank", Role.MEMBER, actor="bob")
        except Forbidden as exc:
            outcome.append(exc)

    proxy.add(Rule("hang", 1, "TransactWriteItems"))
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(add)
            await held_transaction(proxy)  # bob was an admin when the rule was decided
            await store.set_role(w.ws, "bob", Role.MEMBER, actor="alice")
            proxy.release()  # the transaction asserts bob's role: cancelled, re-decided
    assert len(outcome) == 1
    assert await store.get_member(w.ws, "frank") is None
    assert faulty.statistics().refusals == 1


async def test_a_concurrent_update_makes_the_version_stale(
    proxy: FaultProxy, faulty: DynamoDomainStore, store: DynamoDomainStore
) -> None:
    await store.create_user("u1", "u1@example.com", "U1")
    stale: list[StaleVersion] = []

    async def update() -> None:
        try:
            await faulty.update_user("u1", expected_version=1, display_name="Slow")
        except StaleVersion as exc:
            stale.append(exc)

    proxy.add(Rule("hang", 1, "TransactWriteItems"))
    with trio.fail_after(T):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(update)
            await held_transaction(proxy)
            await store.update_user("u1", expected_version=1, display_name="Fast")
            proxy.release()
    assert [e.current for e in stale] == [2]
    user = await store.get_user("u1")
    assert user is not None and (user.display_name, user.version) == ("Fast", 2)
