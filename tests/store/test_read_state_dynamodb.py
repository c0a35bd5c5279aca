"""DynamoDB read-state store specifics (the contract suite covers the ReadStateStore
guarantees): the tables' checks, the item layout of ``docs/data-model.md``, the requests
``unread`` needs, expiry before TTL, retries and re-deciding ``note_message``, cursors
shared with the SQLite adapter, on moto. No test here sends uncontrolled concurrent
requests, so none needs the contract factory's one-request-at-a-time lock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.aws import Aws
from gateway.domain.errors import Conflict, InvalidField
from gateway.errors import StoreUnavailable
from gateway.store.read_state import Notification, Unread
from gateway.store.read_state_dynamodb import DynamoReadStateStore, open_dynamodb_read_state
from gateway.store.read_state_sqlite import open_sqlite_read_state
from gateway.store.tables import (
    NOTIFICATIONS,
    READ_CURSORS,
    READ_STATE_TABLES,
    TABLES,
    UNREAD,
    check_tables,
    create_tables,
)
from tests.aws import FaultProxy, Rule, connect, open_fault_proxy

T = 60  # seconds: deadline of each test body
CH = "ch.general"
KEY = b"read-state-dynamodb-test-cursor-key"
NOW = 1_700_000_000_000
HOUR = 3_600_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


def new_prefix() -> str:
    return f"r{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[Aws]:
    async with connect(moto_url) as aws:
        yield aws


@pytest.fixture
async def prefix(aws: Aws) -> str:
    prefix = new_prefix()
    with trio.fail_after(T):
        await create_tables(aws, prefix, READ_STATE_TABLES)
    return prefix


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(aws: Aws, prefix: str, clock: Clock) -> AsyncIterator[DynamoReadStateStore]:
    async with open_dynamodb_read_state(aws, prefix, KEY, clock=clock) as store:
        yield store


@pytest.fixture
async def proxy(moto_url: str) -> AsyncIterator[FaultProxy]:
    async with open_fault_proxy(moto_url) as proxy:
        yield proxy


@pytest.fixture
async def faulty(proxy: FaultProxy, prefix: str) -> AsyncIterator[DynamoReadStateStore]:
    """A store on the same tables, reached through the fault proxy."""
    async with (
        connect(proxy.url) as aws,
        open_dynamodb_read_state(aws, prefix, KEY) as store,
    ):
        yield store


def spy(monkeypatch: pytest.MonkeyPatch, aws: Aws) -> list[tuple[str, dict[str, Any]]]:
    """Record every request ``aws`` sends from now on: ``(operation, params)``."""
    sent: list[tuple[str, dict[str, Any]]] = []
    call = aws.call

    async def recording(service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        sent.append((operation, params))
        return await call(service, operation, **params)

    monkeypatch.setattr(aws, "call", recording)
    return sent


async def scan(aws: Aws, table: str) -> list[dict[str, Any]]:
    got = await aws.dynamodb("scan", TableName=table, ConsistentRead=True)
    items: list[dict[str, Any]] = got["Items"]
    return items


def notification(nid: str, *, created: int = NOW, expires: int = NOW + HOUR) -> Notification:
    return Notification(
        id=nid,
        user="bob",
        kind="mention",
        channel=CH,
        message_id=f"m-{nid}",
        offset=1,
        sender="alice",
        created_ms=created,
        expires_ms=expires,
    )


# -- the tables ----------------------------------------------------------------------------


async def test_open_names_the_missing_tables_and_indexes(aws: Aws) -> None:
    prefix = new_prefix()
    with trio.fail_after(T):
        assert all(t in TABLES for t in READ_STATE_TABLES)
        with pytest.raises(StoreUnavailable) as e:
            async with open_dynamodb_read_state(aws, prefix, KEY):
                pass
        for suffix in ("read-cursors", "unread", "notifications"):
            assert f"{prefix}-{suffix}: missing" in str(e.value)
        # A notifications table without its LSIs is not the one the store needs.
        plain = {k: v for k, v in NOTIFICATIONS.create_params(prefix).items()}
        del plain["LocalSecondaryIndexes"]
        plain["AttributeDefinitions"] = plain["AttributeDefinitions"][:2]
        await aws.dynamodb("create_table", **plain)
        problems = await check_tables(aws, prefix, (NOTIFICATIONS,))
        assert f"{prefix}-notifications: index by_created missing" in problems
        assert f"{prefix}-notifications: index unread missing" in problems
        await aws.dynamodb("delete_table", TableName=NOTIFICATIONS.name(prefix))
        await create_tables(aws, prefix, READ_STATE_TABLES)
        assert await check_tables(aws, prefix, READ_STATE_TABLES) == []
        for spec in (UNREAD, NOTIFICATIONS):
            ttl = await aws.dynamodb("describe_time_to_live", TableName=spec.name(prefix))
            assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
        async with open_dynamodb_read_state(aws, prefix, KEY) as s:
            assert await s.unread("bob", [CH]) == {CH: Unread()}


async def test_a_lost_table_and_a_closed_store_are_unavailable(
    aws: Aws, store: DynamoReadStateStore
) -> None:
    with trio.fail_after(T):
        await store.note_message(CH, 1, sender="alice", mentions=[], everyone=False)
        await aws.dynamodb("delete_table", TableName=store.tables[1])
        with pytest.raises(StoreUnavailable, match="is missing"):
            await store.note_message(CH, 2, sender="alice", mentions=[], everyone=False)
        await store.aclose()
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.get_cursor("bob", CH)


async def test_offsets_and_times_beyond_int64_are_refused(store: DynamoReadStateStore) -> None:
    big = 2**63
    with pytest.raises(InvalidField) as e:
        await store.note_message(CH, big, sender="alice", mentions=[], everyone=False)
    assert e.value.field == "offset"
    with pytest.raises(InvalidField) as e:
        await store.mark_read("bob", CH, 1, now_ms=big)
    assert e.value.field == "now_ms"
    with pytest.raises(InvalidField) as e:
        await store.notify("bob", notification("n", created=big - 5, expires=big))
    assert e.value.field == "expires_ms"
    assert (await store.mark_read("bob", CH, big - 1, now_ms=1)).offset == big - 1


# -- the item layout -----------------------------------------------------------------------


async def test_items_follow_the_documented_layout(
    aws: Aws, prefix: str, store: DynamoReadStateStore
) -> None:
    with trio.fail_after(T):
        await store.note_message(CH, 3, sender="alice", mentions=["a#b"], everyone=True)
        await store.mark_read("a#b", CH, 3, now_ms=7)
        await store.mark_delivered("carol", CH, 2, now_ms=8)
        await store.notify("bob", notification("n1", created=NOW + 1, expires=NOW + 1500))
        unread = {i["sk"]["S"]: i for i in await scan(aws, UNREAD.name(prefix))}
        cursors = {i["user"]["S"]: i for i in await scan(aws, READ_CURSORS.name(prefix))}
        (note,) = await scan(aws, NOTIFICATIONS.name(prefix))
    pad = "0" * 18
    assert unread == {
        "H": {
            "channel": {"S": CH},
            "sk": {"S": "H"},
            "head": {"N": "3"},
            "messages": {"N": "1"},
            "everyone": {"N": "1"},
        },
        f"M#{pad}3": {
            "channel": {"S": CH},
            "sk": {"S": f"M#{pad}3"},
            "sender": {"S": "alice"},
            "seq": {"N": "1"},
            "eseq": {"N": "1"},
        },
        f"U#5:alice#{pad}3": {
            "channel": {"S": CH},
            "sk": {"S": f"U#5:alice#{pad}3"},
            "own": {"BOOL": True},
            "everyone": {"BOOL": True},
        },
        f"U#3:a#b#{pad}3": {
            "channel": {"S": CH},
            "sk": {"S": f"U#3:a#b#{pad}3"},
            "own": {"BOOL": False},
            "everyone": {"BOOL": True},
        },
        "P#5:alice": {"channel": {"S": CH}, "sk": {"S": "P#5:alice"}, "marks_head": {"N": "3"}},
        "P#3:a#b": {"channel": {"S": CH}, "sk": {"S": "P#3:a#b"}, "marks_head": {"N": "3"}},
    }
    numbers = {k: v["N"] for k, v in cursors["a#b"].items() if "N" in v}
    assert numbers == {
        "read": "3",
        "read_ms": "7",
        "delivered": "0",
        "delivered_ms": "0",
        "seq": "1",
        "eseq": "1",
        "snap_head": "3",
    }
    assert {k: v["N"] for k, v in cursors["carol"].items() if "N" in v} == {
        "read": "0",
        "read_ms": "0",
        "delivered": "2",
        "delivered_ms": "8",
    }
    ck = f"{NOW + 1:019d}#n1"
    assert (note["ck"], note["uk"], note["read"]) == ({"S": ck}, {"S": ck}, {"BOOL": False})
    assert note["expires"] == {"N": str(-(-(NOW + 1500) // 1000))}  # seconds, rounded up


# -- the requests unread needs ---------------------------------------------------------------


async def test_unread_reads_the_batch_and_only_the_queries_it_needs(
    store: DynamoReadStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def note(offset: int, sender: str, mentions: list[str] | None = None) -> None:
        await store.note_message(CH, offset, sender=sender, mentions=mentions or [], everyone=False)

    with trio.fail_after(T):
        for offset in (1, 2, 3):
            await note(offset, "alice")
        await store.mark_read("bob", CH, 3, now_ms=1)  # at a message: an exact snapshot
        await note(4, "alice")
        sent = spy(monkeypatch, store.aws)
        assert await store.unread("bob", [CH]) == {CH: Unread(messages=1)}
        assert [op for op, _ in sent] == ["batch_get_item"]

        await store.mark_read("bob", CH, 6, now_ms=2)  # beyond the head (5 is an event)
        await note(7, "carol")
        sent.clear()
        assert await store.unread("bob", [CH]) == {CH: Unread(messages=1)}
        assert [op for op, _ in sent] == ["batch_get_item", "query"]  # the counts at 6

        await note(8, "carol", ["bob"])
        await note(9, "bob")
        sent.clear()
        assert await store.unread("bob", [CH]) == {CH: Unread(messages=2, mentions=1)}
        assert [op for op, _ in sent] == ["batch_get_item", "query", "query"]  # + marks

        channels = [f"ch{n}" for n in range(100)]
        sent.clear()
        assert set((await store.unread("bob", channels)).values()) == {Unread()}
        assert [op for op, _ in sent] == ["batch_get_item"] * 3  # 300 keys


# -- expiry before TTL ------------------------------------------------------------------------


async def test_expired_notifications_are_stored_but_never_returned(
    aws: Aws, prefix: str, store: DynamoReadStateStore, clock: Clock
) -> None:
    with trio.fail_after(T):
        # Newest first: 120 that expire soon (more than one refill) between two that stay.
        await store.notify("bob", notification("old", created=NOW))
        for n in range(120):
            await store.notify(
                "bob", notification(f"x{n:03d}", created=NOW + 10 + n, expires=NOW + 500)
            )
        await store.notify("bob", notification("new", created=NOW + 200))
        clock.now = NOW + 500
        first = await store.list_notifications("bob", limit=1)
        assert [n.id for n in first.items] == ["new"]
        assert first.cursor is not None
        second = await store.list_notifications("bob", limit=1, cursor=first.cursor)
        assert ([n.id for n in second.items], second.cursor) == (["old"], None)
        assert len(await scan(aws, NOTIFICATIONS.name(prefix))) == 122  # TTL has not run
        assert await store.mark_notifications_read("bob", ["x000", "old"], now_ms=1) == 1
        assert await store.mark_notifications_read("bob", "all", now_ms=2) == 1
        assert await store.notify("bob", notification("x001", created=NOW + 500)) is True
        listed = await store.list_notifications("bob", limit=10, unread_only=True)
        assert [n.id for n in listed.items] == ["x001"]


async def test_cursors_are_the_sqlite_adapters(store: DynamoReadStateStore, tmp_path: Path) -> None:
    ids = [f"n{n}" for n in range(5)]
    with trio.fail_after(T):
        async with open_sqlite_read_state(
            str(tmp_path / "r.sqlite3"), KEY, clock=lambda: NOW
        ) as lite:
            for n, nid in enumerate(ids):
                await lite.notify("bob", notification(nid, created=NOW + n))
                await store.notify("bob", notification(nid, created=NOW + n))
            cursor = (await lite.list_notifications("bob", limit=2)).cursor
            assert cursor is not None
            expected = await lite.list_notifications("bob", limit=2, cursor=cursor)
        got = await store.list_notifications("bob", limit=2, cursor=cursor)
    assert got == expected
    assert [n.id for n in got.items] == ["n2", "n1"]


# -- retries and re-deciding ----------------------------------------------------------------


async def test_a_throttled_note_is_retried_with_one_token(
    proxy: FaultProxy, faulty: DynamoReadStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(T):
        sent = spy(monkeypatch, faulty.aws)
        proxy.throttle(2, op="TransactWriteItems")
        assert await faulty.note_message(CH, 1, sender="a", mentions=["b"], everyone=False)
    tokens = [params["ClientRequestToken"] for op, params in sent if op == "transact_write_items"]
    assert len(tokens) == 1  # the bridge's retries sent the same request, token included
    assert proxy.forwarded.count("TransactWriteItems") == 1
    assert faulty.transactions == 1


async def held(proxy: FaultProxy, op: str) -> None:
    """Wait until the proxy holds a request of ``op``."""
    while op not in proxy.seen:
        await trio.sleep(0.01)


@pytest.mark.parametrize(
    ("slow", "fast", "outcome"),
    [(3, 2, True), (2, 2, False), (2, 3, "order")],
    ids=["head-moved", "repeat", "overtaken"],
)
async def test_a_note_between_read_and_transaction_is_decided_again(
    proxy: FaultProxy,
    faulty: DynamoReadStateStore,
    store: DynamoReadStateStore,
    slow: int,
    fast: int,
    outcome: object,
) -> None:
    results: list[object] = []

    async def note_slowly() -> None:
        try:
            results.append(
                await faulty.note_message(CH, slow, sender="alice", mentions=[], everyone=False)
            )
        except Conflict as exc:
            results.append(exc.reason)

    with trio.fail_after(T):
        await store.note_message(CH, 1, sender="alice", mentions=[], everyone=False)
        proxy.add(Rule("hang", 1, "TransactWriteItems"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(note_slowly)
            await held(proxy, "TransactWriteItems")  # decided on head = 1
            await store.note_message(CH, fast, sender="alice", mentions=[], everyone=False)
            proxy.release()
        assert results == [outcome]
        noted = 3 if slow == 3 else 2
        assert await store.unread("bob", [CH]) == {CH: Unread(messages=noted)}
