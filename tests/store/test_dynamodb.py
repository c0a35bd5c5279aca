"""DynamoDB store specifics (the contract suite covers the MessageStore guarantees): table
checks, retries, idempotent rewrites and writes larger than one transaction, on moto."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import trio

from gateway.aws import Aws, AwsError
from gateway.errors import StoreUnavailable
from gateway.model import Record
from gateway.store.base import WriteBehindResult
from gateway.store.dynamodb import DynamoStore, open_dynamo_store
from gateway.store.tables import LOGS, MESSAGE_TABLES, MESSAGES, check_tables, create_tables
from tests.aws import FaultProxy, Rule, connect, open_fault_proxy
from tests.contract.test_store_contract import rec

T = 60  # seconds: deadline of each test body


def new_prefix() -> str:
    return f"s{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[Aws]:
    async with connect(moto_url) as aws:
        yield aws


@pytest.fixture
async def prefix(aws: Aws) -> str:
    prefix = new_prefix()
    with trio.fail_after(T):
        await create_tables(aws, prefix)
    return prefix


@pytest.fixture
async def store(aws: Aws, prefix: str) -> AsyncIterator[DynamoStore]:
    async with open_dynamo_store(aws, prefix) as store:
        yield store


@pytest.fixture
async def proxy(moto_url: str) -> AsyncIterator[FaultProxy]:
    async with open_fault_proxy(moto_url) as proxy:
        yield proxy


@pytest.fixture
async def faulty(proxy: FaultProxy, prefix: str) -> AsyncIterator[DynamoStore]:
    """A store on the same tables, reached through the fault proxy."""
    async with (
        connect(proxy.url) as aws,
        open_dynamo_store(aws, prefix) as store,
    ):
        yield store


async def records(store: DynamoStore, channel: str, first: int, last: int) -> list[Record]:
    epoch = (await store.open_log(channel)).epoch
    return [rec(channel, i, epoch) for i in range(first, last + 1)]


# -- tables ------------------------------------------------------------------------------


async def test_check_tables_names_what_is_missing(aws: Aws) -> None:
    prefix = new_prefix()
    with trio.fail_after(T):
        missing = await check_tables(aws, prefix)
        assert missing == [f"{prefix}-{t.suffix}: missing" for t in MESSAGE_TABLES]
        with pytest.raises(StoreUnavailable, match=f"{prefix}-logs: missing"):
            async with open_dynamo_store(aws, prefix):
                pass
        await create_tables(aws, prefix)
        assert await check_tables(aws, prefix) == []
        await create_tables(aws, prefix)  # idempotent
        ttl = await aws.dynamodb("describe_time_to_live", TableName=MESSAGES.name(prefix))
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires"


async def test_check_tables_names_a_wrong_key_schema(aws: Aws) -> None:
    prefix = new_prefix()
    with trio.fail_after(T):
        await aws.dynamodb(
            "create_table",
            TableName=LOGS.name(prefix),
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
            BillingMode="PAY_PER_REQUEST",
        )
        problems = await check_tables(aws, prefix)
    assert problems[0].startswith(f"{prefix}-logs: key schema")
    assert f"{prefix}-messages: missing" in problems


async def test_a_table_lost_at_run_time_is_unavailable(aws: Aws, store: DynamoStore) -> None:
    with trio.fail_after(T):
        batch = await records(store, "general", 1, 3)
        await aws.dynamodb("delete_table", TableName=store.messages)
        with pytest.raises(StoreUnavailable, match="a table is missing"):
            await store.write(batch)
        with pytest.raises(StoreUnavailable, match=store.messages):
            await store.read("general", 0, 10)


# -- retries and idempotency ---------------------------------------------------------------


async def test_throttled_writes_are_retried(
    proxy: FaultProxy, faulty: DynamoStore, store: DynamoStore
) -> None:
    with trio.fail_after(T):
        batch = await records(faulty, "general", 1, 5)
        proxy.throttle(2, op="TransactWriteItems")
        await faulty.write(batch)
        assert list(await store.read("general", 0, 10)) == batch
    assert faulty.aws.statistics().throttled == 2
    assert proxy.forwarded.count("TransactWriteItems") == 1


async def test_throttled_on_every_try_stores_nothing(
    proxy: FaultProxy, faulty: DynamoStore, store: DynamoStore
) -> None:
    with trio.fail_after(T):
        batch = await records(faulty, "general", 1, 5)
        proxy.throttle(100, op="TransactWriteItems")
        with pytest.raises(StoreUnavailable):
            await faulty.write(batch)
        assert list(await store.read("general", 0, 10)) == []
        assert (await store.open_log("general")).offset == 0


async def test_a_write_whose_answer_was_lost_is_retried_idempotently(
    proxy: FaultProxy, faulty: DynamoStore, store: DynamoStore
) -> None:
    with trio.fail_after(T):
        batch = await records(faulty, "general", 1, 5)
        proxy.add(Rule("land_then_drop", 1, op="TransactWriteItems"))
        await faulty.write(batch)  # landed, answer lost, sent again: accepted, no change
        assert proxy.forwarded.count("TransactWriteItems") == 2
        assert list(await store.read("general", 0, 10)) == batch
        assert (await store.open_log("general")).offset == 5


async def test_rewrites_below_the_head_from_a_fresh_handle(
    aws: Aws, prefix: str, store: DynamoStore
) -> None:
    with trio.fail_after(T):
        batch = await records(store, "general", 1, 10)
        await store.write(batch)
        fresh = DynamoStore(aws, prefix)  # knows no head: tries to raise it, then checks only
        await fresh.write(batch[2:4])
        await fresh.write(batch[2:4])  # now it knows: one transaction
        assert fresh.transactions == 2
        assert (await fresh.open_log("general")).offset == 10
        assert list(await fresh.read("general", 0, 100)) == batch


async def test_a_record_of_another_epoch_is_refused(store: DynamoStore) -> None:
    with trio.fail_after(T):
        batch = await records(store, "general", 1, 2)
        await store.write(batch)
        with pytest.raises(StoreUnavailable, match="epoch"):
            await store.write([rec("general", 3, "0123456789abcdef")])
        assert (await store.open_log("general")).offset == 2


async def test_cmids_of_look_alike_senders_stay_apart(store: DynamoStore) -> None:
    with trio.fail_after(T):
        epoch = (await store.open_log("general")).epoch
        one = rec("general", 1, epoch, sender="ab", cmid="c")
        two = rec("general", 2, epoch, sender="a", cmid="bc")
        await store.write([one, two])
        assert await store.find_cmid("general", "ab", "c") == one
        assert await store.find_cmid("general", "a", "bc") == two
        with pytest.raises(StoreUnavailable, match="another offset"):
            await store.write([rec("general", 3, epoch, sender="a", cmid="bc")])


async def test_a_validation_error_is_a_bug_not_unavailable(store: DynamoStore) -> None:
    with trio.fail_after(T), pytest.raises(AwsError) as caught:
        await store.write([rec("", 1, "e")])  # an empty key value
    assert not isinstance(caught.value, StoreUnavailable)


# -- writes larger than one transaction --------------------------------------------------


async def test_a_big_write_is_split_into_transactions(store: DynamoStore) -> None:
    with trio.fail_after(T):
        a = await records(store, "a", 1, 130)
        b = await records(store, "b", 1, 20)
        await store.write(b[10:] + a + b[:10])
        assert store.transactions == 4  # 150 records, 2 items each + 1 per channel
        assert list(await store.read("a", 0, 1000)) == a
        assert list(await store.read("b", 0, 1000)) == b
        assert (await store.open_log("a")).offset == 130
        await store.write(a)  # all again: idempotent
        assert list(await store.read("a", 0, 1000)) == a


async def test_a_big_write_with_a_conflict_stores_nothing(store: DynamoStore) -> None:
    with trio.fail_after(T):
        batch = await records(store, "general", 1, 150)
        other = rec("general", 140, batch[0].epoch, body="changed")
        await store.write([other])
        with pytest.raises(StoreUnavailable, match="offset 140 holds another record"):
            await store.write(batch)
        assert list(await store.read("general", 0, 1000)) == [other]
        assert store.transactions == 1
        stolen = rec("general", 1, batch[0].epoch, sender="alice", cmid="c149")
        await store.write([stolen])  # cmid c149 is now stored at offset 1
        with pytest.raises(StoreUnavailable, match="another offset than 149"):
            await store.write([*batch[40:139], batch[148]])  # 100 records, 3 transactions
        assert [r.offset for r in await store.read("general", 0, 1000)] == [1, 140]


async def test_a_big_write_failing_midway_leaves_a_prefix_that_a_retry_completes(
    proxy: FaultProxy, faulty: DynamoStore, store: DynamoStore
) -> None:
    with trio.fail_after(T):
        batch = await records(faulty, "general", 1, 150)
        proxy.add(Rule("pass", 2, op="TransactWriteItems"))  # then throttled for good:
        proxy.throttle(100, op="TransactWriteItems")
        with pytest.raises(StoreUnavailable):
            await faulty.write(batch)
        stored = list(await store.read("general", 0, 1000))
        assert stored == batch[:98]  # two transactions of 49 records, lowest offsets first
        assert (await store.open_log("general")).offset == 98
        proxy.clear()
        await faulty.write(batch)
        assert list(await store.read("general", 0, 1000)) == batch


async def test_reads_follow_pages_past_one_megabyte(store: DynamoStore) -> None:
    with trio.fail_after(T):
        epoch = (await store.open_log("general")).epoch
        batch = [rec("general", i, epoch, body=f"{i:05d}" * 3000) for i in range(1, 91)]
        await store.write(batch)  # ~1.35 MB of bodies
        assert list(await store.read("general", 0, 1000)) == batch
        assert list(await store.read_before("general", 1000, 90)) == batch


# -- write_behind: BatchWriteItem, cmid claims, heads ---------------------------------------


async def test_write_behind_puts_messages_in_batches_and_claims_cmids(
    proxy: FaultProxy, faulty: DynamoStore, store: DynamoStore
) -> None:
    with trio.fail_after(T):
        batch = await records(faulty, "general", 1, 120)
        await faulty.write_behind(batch)
        assert proxy.forwarded.count("BatchWriteItem") == 5  # 120 puts, 25 per request
        assert proxy.forwarded.count("TransactWriteItems") == 2  # 120 claims, 100 per call
        assert proxy.forwarded.count("UpdateItem") == 1  # the head, once, at the end
        assert list(await store.read("general", 0, 1000)) == batch
        assert await store.find_cmid("general", "alice", "c77") == batch[76]
        assert (await store.open_log("general")).offset == 120


async def test_write_behind_sends_unprocessed_items_again(
    proxy: FaultProxy, faulty: DynamoStore, store: DynamoStore
) -> None:
    with trio.fail_after(T):
        batch = await records(faulty, "general", 1, 25)
        proxy.add(Rule("partial", 3, op="BatchWriteItem"))  # 13 stored, 6, 3, then the rest
        await faulty.write_behind(batch)
        assert faulty.unprocessed == 12 + 6 + 3
        assert proxy.forwarded.count("BatchWriteItem") == 4
        assert list(await store.read("general", 0, 100)) == batch


async def test_write_behind_gives_up_when_nothing_gets_through_then_a_retry_completes(
    proxy: FaultProxy, faulty: DynamoStore, store: DynamoStore
) -> None:
    with trio.fail_after(T):
        batch = await records(faulty, "general", 1, 60)
        proxy.add(Rule("pass", 1, op="BatchWriteItem"))  # 25 puts land, then throttled:
        proxy.throttle(1000, op="BatchWriteItem")
        with pytest.raises(StoreUnavailable):
            await faulty.write_behind(batch)
        assert faulty.aws.statistics().throttled >= faulty.aws.retry.attempts
        stored = [r.offset for r in await store.read("general", 0, 100)]
        assert set(stored) < set(range(1, 61)) and stored  # some landed, not all
        # the head was not raised, but open_log still covers every stored message
        assert (await store.open_log("general")).offset == max(stored)
        proxy.clear()
        assert await faulty.write_behind(batch) == WriteBehindResult()
        assert list(await store.read("general", 0, 100)) == batch
        assert (await store.open_log("general")).offset == 60


async def test_write_behind_throttled_claims_are_retried(
    proxy: FaultProxy, faulty: DynamoStore, store: DynamoStore
) -> None:
    with trio.fail_after(T):
        batch = await records(faulty, "general", 1, 5)
        proxy.throttle(2, op="TransactWriteItems")
        proxy.throttle(2, op="BatchWriteItem")
        assert await faulty.write_behind(batch) == WriteBehindResult()
        assert faulty.aws.statistics().throttled == 4
        assert list(await store.read("general", 0, 100)) == batch


async def test_write_behind_claims_left_over_after_a_late_duplicate(store: DynamoStore) -> None:
    with trio.fail_after(T):
        batch = await records(store, "general", 1, 130)
        await store.write_behind(batch[:10])
        late = [rec("general", 130 + i, batch[0].epoch, cmid=f"c{i}") for i in (3, 7)]
        result = await store.write_behind([*batch[10:], *late])
        assert result == WriteBehindResult(duplicates=late)
        assert list(await store.read("general", 0, 1000)) == batch
        assert (await store.open_log("general")).offset == 137  # past the empty offsets
