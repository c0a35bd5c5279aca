"""DynamoDB message-state store specifics (the contract suite covers the MessageStateStore
guarantees): the tables' checks, the item layout of ``docs/data-model.md``, the reaction
sweep of a delete, retries, and re-deciding when the item changes between the decision and
the write, on moto. No test here sends uncontrolled concurrent requests, so none needs the
contract factory's one-request-at-a-time lock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from gateway.aws import Aws
from gateway.domain.errors import Conflict
from gateway.errors import StoreUnavailable
from gateway.store.message_state import MessageState
from gateway.store.message_state_dynamodb import (
    DynamoMessageStateStore,
    open_dynamodb_message_state,
)
from gateway.store.tables import (
    MESSAGE_STATE,
    MESSAGE_STATE_TABLES,
    REACTIONS,
    TABLES,
    check_tables,
    create_tables,
)
from tests.aws import FaultProxy, Rule, connect, open_fault_proxy

T = 60  # seconds: deadline of each test body
CH = "ch.general"


def new_prefix() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[Aws]:
    async with connect(moto_url) as aws:
        yield aws


@pytest.fixture
async def prefix(aws: Aws) -> str:
    prefix = new_prefix()
    with trio.fail_after(T):
        await create_tables(aws, prefix, MESSAGE_STATE_TABLES)
    return prefix


@pytest.fixture
async def store(aws: Aws, prefix: str) -> AsyncIterator[DynamoMessageStateStore]:
    async with open_dynamodb_message_state(aws, prefix) as store:
        yield store


@pytest.fixture
async def proxy(moto_url: str) -> AsyncIterator[FaultProxy]:
    async with open_fault_proxy(moto_url) as proxy:
        yield proxy


@pytest.fixture
async def faulty(proxy: FaultProxy, prefix: str) -> AsyncIterator[DynamoMessageStateStore]:
    """A store on the same tables, reached through the fault proxy."""
    async with (
        connect(proxy.url) as aws,
        open_dynamodb_message_state(aws, prefix) as store,
    ):
        yield store


async def scan(aws: Aws, table: str) -> list[dict[str, Any]]:
    got = await aws.dynamodb("scan", TableName=table, ConsistentRead=True)
    items: list[dict[str, Any]] = got["Items"]
    return items


async def reaction_keys(aws: Aws, prefix: str) -> set[tuple[str, str]]:
    items = await scan(aws, REACTIONS.name(prefix))
    return {(item["channel"]["S"], item["rk"]["S"]) for item in items}


async def react(
    s: DynamoMessageStateStore, offset: int, user: str, emoji: str = "👍", add: bool = True
) -> tuple[bool, MessageState]:
    return await s.react(CH, offset, author="alice", user=user, emoji=emoji, add=add, max_kinds=5)


# -- the tables ----------------------------------------------------------------------------


async def test_open_names_the_missing_tables(aws: Aws) -> None:
    prefix = new_prefix()
    with trio.fail_after(T):
        assert all(t in TABLES for t in MESSAGE_STATE_TABLES)
        with pytest.raises(StoreUnavailable) as e:
            async with open_dynamodb_message_state(aws, prefix):
                pass
        assert f"{prefix}-message-state: missing" in str(e.value)
        assert f"{prefix}-reactions: missing" in str(e.value)
        await create_tables(aws, prefix, MESSAGE_STATE_TABLES)
        assert await check_tables(aws, prefix, MESSAGE_STATE_TABLES) == []
        for spec in MESSAGE_STATE_TABLES:
            ttl = await aws.dynamodb("describe_time_to_live", TableName=spec.name(prefix))
            assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
        async with open_dynamodb_message_state(aws, prefix) as s:
            assert await s.get_states(CH, [1]) == {}


async def test_a_lost_table_and_a_closed_store_are_unavailable(
    aws: Aws, store: DynamoMessageStateStore
) -> None:
    with trio.fail_after(T):
        await react(store, 1, "bob")
        await aws.dynamodb("delete_table", TableName=store.reactions_table)
        with pytest.raises(StoreUnavailable, match="is missing"):
            await react(store, 1, "carol")
        assert (await store.get_states(CH, [1]))[1].reactions == {"👍": 1}  # nothing stored
        await store.aclose()
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.get_states(CH, [1])


# -- the item layout -----------------------------------------------------------------------


async def test_items_follow_the_documented_layout(
    aws: Aws, prefix: str, store: DynamoMessageStateStore
) -> None:
    with trio.fail_after(T):
        await react(store, 3, "a#b", "#️⃣")  # '#' in the user id and in the emoji
        await react(store, 3, "a#b", ":tada:")
        await react(store, 30, "bob")
        await store.edit(CH, 3, author="alice", expected_version=1, body="new", op="e1", now_ms=5)
        await store.note_reply(CH, 3, author="alice", user="carol", reply_offset=2, reply_ms=9)
        keys = await reaction_keys(aws, prefix)
        (item,) = [
            i for i in await scan(aws, MESSAGE_STATE.name(prefix)) if i["offset"] == {"N": "3"}
        ]
        assert await store.my_reactions(CH, 3, "a#b") == {"#️⃣", ":tada:"}
        assert await store.my_reactions(CH, 3, "a") == frozenset()
    assert keys == {(CH, "3#3:a#b##️⃣"), (CH, "3#3:a#b#:tada:"), (CH, "30#3:bob#👍")}
    assert item == {
        "channel": {"S": CH},
        "offset": {"N": "3"},
        "author": {"S": "alice"},
        "version": {"N": "2"},
        "body": {"S": "new"},
        "deleted": {"BOOL": False},
        "edited_ms": {"N": "5"},
        "reactions": {"M": {"#️⃣": {"N": "1"}, ":tada:": {"N": "1"}}},
        "replies": {"N": "2"},
        "last_reply_ms": {"N": "9"},
        "participants": {"L": [{"S": "carol"}]},
        "op": {"S": "e1"},
    }


# -- the sweep of a delete -----------------------------------------------------------------


async def test_delete_sweeps_every_reaction_item(
    aws: Aws, prefix: str, store: DynamoMessageStateStore
) -> None:
    with trio.fail_after(T):
        for n in range(30):  # more than one BatchWriteItem (25)
            await react(store, 1, f"user{n:02d}")
        await react(store, 10, "user00")  # another message: "1#" is not a prefix of "10#"
        deleted, tomb = await store.delete(CH, 1, author="alice", op="d1", now_ms=1)
        assert deleted and tomb.reactions == {}
        assert await reaction_keys(aws, prefix) == {(CH, "10#6:user00#👍")}
        assert store.sweeps_failed == 0


async def test_a_failed_sweep_is_hidden_and_finished_by_a_repeated_delete(
    aws: Aws, prefix: str, proxy: FaultProxy, faulty: DynamoMessageStateStore
) -> None:
    with trio.fail_after(T):
        await react(faulty, 1, "bob")
        await react(faulty, 1, "carol", ":tada:")
        proxy.server_error(100, op="BatchWriteItem")
        deleted, tomb = await faulty.delete(CH, 1, author="alice", op="d1", now_ms=1)
        assert deleted and tomb.deleted  # the tombstone stands
        assert faulty.sweeps_failed == 1
        assert len(await reaction_keys(aws, prefix)) == 2  # left behind ...
        assert await faulty.my_reactions(CH, 1, "bob") == frozenset()  # ... and hidden
        with pytest.raises(Conflict):
            await react(faulty, 1, "bob", ":tada:")
        proxy.clear()
        assert await faulty.delete(CH, 1, author="alice", op="d2", now_ms=2) == (False, tomb)
        assert await reaction_keys(aws, prefix) == set()


# -- retries -------------------------------------------------------------------------------


async def test_throttled_reactions_are_retried_with_one_token(
    proxy: FaultProxy, faulty: DynamoMessageStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens: list[str] = []
    call = faulty.aws.call

    async def spy(service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        if operation == "transact_write_items":
            tokens.append(params["ClientRequestToken"])
        return await call(service, operation, **params)

    with trio.fail_after(T):
        await react(faulty, 1, "bob")  # the state item exists: one transaction below
        monkeypatch.setattr(faulty.aws, "call", spy)
        proxy.throttle(2, op="TransactWriteItems")
        changed, state = await react(faulty, 1, "carol")
    assert changed and state.reactions == {"👍": 2}
    assert len(tokens) == 1  # the bridge's retries sent the same request, token included
    assert faulty.transactions == 2


async def test_an_edit_whose_answer_was_lost_is_recognised_by_its_op(
    proxy: FaultProxy, faulty: DynamoMessageStateStore, store: DynamoMessageStateStore
) -> None:
    proxy.add(Rule("land_then_drop", 1, "UpdateItem"))
    with trio.fail_after(T):
        state = await faulty.edit(
            CH, 1, author="alice", expected_version=1, body="once", op="e1", now_ms=3
        )
    assert proxy.forwarded.count("UpdateItem") == 2  # landed, then retried by the bridge
    assert (state.version, state.body, state.op) == (2, "once", "e1")
    assert (await store.get_states(CH, [1]))[1] == state
    assert faulty.statistics().refusals == 0


# -- re-deciding ---------------------------------------------------------------------------


async def held(proxy: FaultProxy, op: str) -> None:
    """Wait until the proxy holds a request of ``op``."""
    while op not in proxy.seen:
        await trio.sleep(0.01)


async def test_a_delete_between_decision_and_transaction_refuses_the_reaction(
    aws: Aws,
    prefix: str,
    proxy: FaultProxy,
    faulty: DynamoMessageStateStore,
    store: DynamoMessageStateStore,
) -> None:
    outcome: list[BaseException] = []

    async def add() -> None:
        try:
            await react(faulty, 1, "carol")
        except Conflict as exc:
            outcome.append(exc)

    with trio.fail_after(T):
        await react(store, 1, "bob")
        proxy.add(Rule("hang", 1, "TransactWriteItems"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(add)
            await held(proxy, "TransactWriteItems")
            await store.delete(CH, 1, author="alice", op="d1", now_ms=1)
            proxy.release()  # the transaction asserts "not deleted": cancelled
        assert [getattr(e, "reason", None) for e in outcome] == ["deleted"]
        assert await reaction_keys(aws, prefix) == set()


async def test_a_reply_between_read_and_write_is_kept(
    proxy: FaultProxy, faulty: DynamoMessageStateStore, store: DynamoMessageStateStore
) -> None:
    async def slow() -> None:
        await faulty.note_reply(CH, 1, author="alice", user="bob", reply_offset=2, reply_ms=20)

    with trio.fail_after(T):
        await store.note_reply(CH, 1, author="alice", user="dave", reply_offset=1, reply_ms=10)
        proxy.add(Rule("hang", 1, "UpdateItem"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await held(proxy, "UpdateItem")  # bob's reply decided on replies = 1
            await store.note_reply(CH, 1, author="alice", user="carol", reply_offset=3, reply_ms=30)
            proxy.release()  # its condition (replies <= 2) fails: decided again
        state = (await store.get_states(CH, [1]))[1]
    assert (state.replies, state.last_reply_ms) == (3, 30)
    assert state.participants == ("dave", "carol", "bob")
