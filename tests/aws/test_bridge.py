"""The AWS bridge under trio, against a real moto server (and a fault proxy in front of it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from botocore.exceptions import ClientError

from gateway.aws import Aws, AwsError, AwsUnavailable, RetryPolicy
from gateway.aws.bridge import classify
from gateway.errors import StoreUnavailable
from tests.aws import FAST, FaultProxy, Rule, connect, open_fault_proxy
from tests.services import MotoServer, free_port


def key(k: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": k}}


async def make_table(aws: Aws) -> str:
    name = f"bridge-{uuid.uuid4().hex[:12]}"
    await aws.dynamodb(
        "create_table",
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[Aws]:
    async with connect(moto_url) as aws:
        yield aws


@pytest.fixture
async def proxy(moto_url: str) -> AsyncIterator[FaultProxy]:
    async with open_fault_proxy(moto_url) as proxy:
        yield proxy


@pytest.fixture
async def proxied(proxy: FaultProxy) -> AsyncIterator[Aws]:
    async with connect(proxy.url) as aws:
        yield aws


@pytest.fixture
def private_moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A moto server of this test's own, to pause and kill."""
    server = MotoServer(tmp_path / "moto")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- calls -------------------------------------------------------------------------------


async def test_calls_return_the_response_without_metadata(aws: Aws) -> None:
    with trio.fail_after(30):
        table = await make_table(aws)
        item = key("a") | {"v": {"N": "1"}}
        assert await aws.dynamodb("put_item", TableName=table, Item=item) == {}
        got = await aws.dynamodb("get_item", TableName=table, Key=key("a"), ConsistentRead=True)
    assert got == {"Item": item}
    stats = aws.statistics()
    assert stats.requests == 3
    assert stats.retries == stats.errors == stats.unavailable == 0


async def test_many_concurrent_calls(aws: Aws) -> None:
    with trio.fail_after(60):
        table = await make_table(aws)

        async def one(i: int) -> None:
            item = key(f"k{i}") | {"v": {"N": str(i)}}
            await aws.dynamodb("put_item", TableName=table, Item=item)
            got = await aws.dynamodb("get_item", TableName=table, Key=key(f"k{i}"))
            assert got["Item"]["v"] == {"N": str(i)}

        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(one, i)
        scan = await aws.dynamodb("scan", TableName=table, Select="COUNT")
    assert scan["Count"] == 60


# -- errors ------------------------------------------------------------------------------


async def test_refusals_are_aws_errors_not_unavailable(aws: Aws) -> None:
    with trio.fail_after(30):
        table = await make_table(aws)
        with pytest.raises(AwsError) as missing:
            await aws.dynamodb("get_item", TableName="no-such-table", Key=key("a"))
        await aws.dynamodb("put_item", TableName=table, Item=key("a"))
        with pytest.raises(AwsError) as failed:
            await aws.dynamodb(
                "put_item",
                TableName=table,
                Item=key("a"),
                ConditionExpression="attribute_not_exists(pk)",
            )
        with pytest.raises(AwsError) as invalid:
            await aws.dynamodb("get_item", TableName=table)  # no Key: client-side
        with pytest.raises(AwsError) as unknown:
            await aws.dynamodb("drop_everything", TableName=table)
    assert missing.value.aws_code == "ResourceNotFoundException"
    assert failed.value.aws_code == "ConditionalCheckFailedException"
    assert invalid.value.aws_code == "ParamValidationError"
    assert unknown.value.aws_code == "UnknownOperation"
    for exc in (missing, failed, invalid, unknown):
        assert not isinstance(exc.value, StoreUnavailable)  # a bug or a deployment problem
    assert aws.statistics().retries == 0
    assert aws.statistics().errors == 4


async def test_throttling_is_retried_with_backoff(proxy: FaultProxy, proxied: Aws) -> None:
    with trio.fail_after(30):
        table = await make_table(proxied)
        proxy.throttle(2, op="PutItem")
        await proxied.dynamodb("put_item", TableName=table, Item=key("a"))
        got = await proxied.dynamodb("get_item", TableName=table, Key=key("a"))
    assert got["Item"] == key("a")
    assert proxy.seen[-4:] == ["PutItem", "PutItem", "PutItem", "GetItem"]
    stats = proxied.statistics()
    assert (stats.retries, stats.throttled, stats.unavailable) == (2, 2, 0)


async def test_throttling_on_every_try_raises_unavailable(proxy: FaultProxy, proxied: Aws) -> None:
    with trio.fail_after(30):
        table = await make_table(proxied)
        proxy.throttle(100, op="PutItem")
        with pytest.raises(AwsUnavailable) as caught:
            await proxied.dynamodb("put_item", TableName=table, Item=key("a"))
    assert isinstance(caught.value, StoreUnavailable)
    assert caught.value.retryable
    assert caught.value.aws_code == "ThrottlingException"
    assert proxy.seen.count("PutItem") == FAST.attempts
    assert "PutItem" not in proxy.forwarded


async def test_server_errors_and_dropped_connections_are_retried(
    proxy: FaultProxy, proxied: Aws
) -> None:
    with trio.fail_after(30):
        table = await make_table(proxied)
        proxy.server_error(1, op="PutItem")
        proxy.add(Rule("drop", 1, op="PutItem"))
        await proxied.dynamodb("put_item", TableName=table, Item=key("a"))
    assert proxy.forwarded.count("PutItem") == 1
    assert proxied.statistics().retries == 2


async def test_unreachable_endpoint_raises_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with connect(url) as aws:
        with trio.fail_after(30), pytest.raises(AwsUnavailable) as caught:
            await aws.dynamodb("list_tables")
    assert caught.value.aws_code == "EndpointConnectionError"
    assert aws.statistics().requests == FAST.attempts


def test_classify_transaction_cancellation_reasons() -> None:
    def cancelled(*codes: str) -> ClientError:
        reasons = [{"Code": c} for c in codes]
        error = {"Code": "TransactionCanceledException", "Message": "cancelled"}
        response = {"Error": error, "CancellationReasons": reasons}
        return ClientError(response, "TransactWriteItems")

    conflict = classify(cancelled("None", "TransactionConflict"))
    throttled = classify(cancelled("ThrottlingError", "None"))
    refused = classify(cancelled("ConditionalCheckFailed", "TransactionConflict"))
    assert conflict is not None and conflict.retryable
    assert throttled is not None and throttled.retryable
    assert throttled.aws_code == "ThrottlingError"
    assert refused is not None and not refused.retryable
    assert classify(ValueError("not the SDK's")) is None


# -- cancellation and hangs ----------------------------------------------------------------


async def test_cancellation_is_prompt_and_leaks_nothing(proxy: FaultProxy, proxied: Aws) -> None:
    with trio.fail_after(60):
        table = await make_table(proxied)
        await proxied.dynamodb("get_item", TableName=table, Key=key("warm"))
        baseline = open_fds()

        async def get(k: str) -> None:
            await proxied.dynamodb("get_item", TableName=table, Key=key(k))

        cancelled = False
        for _ in range(5):
            proxy.add(Rule("hang", 1000, op="GetItem"))
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(get, str(i))
                await trio.sleep(0.3)  # every call is now waiting on the proxy
                nursery.cancel_scope.cancel()
            assert trio.current_time() - started < 2.0
            # the cancelled calls' connections are closed, not parked half-read in the pool
            while proxy.connections > 1:
                await trio.sleep(0.01)
            proxy.clear()
            got = await proxied.dynamodb("get_item", TableName=table, Key=key("warm"))
            assert got == {}
        assert open_fds() <= baseline + 4
        proxy.add(Rule("hang", 1, op="GetItem"))
        with trio.move_on_after(0.2):
            try:
                await proxied.dynamodb("get_item", TableName=table, Key=key("x"))
            except trio.Cancelled:  # trio's own, not wrapped in a group
                cancelled = True
                raise
        assert cancelled
    assert proxied.statistics().unavailable == 0


async def test_a_hung_request_times_out_per_try(proxy: FaultProxy, moto_url: str) -> None:
    policy = RetryPolicy(attempts=2, base=0.01, cap=0.01, timeout=0.5)
    async with connect(proxy.url, policy) as aws:
        proxy.add(Rule("hang", 10, op="ListTables"))
        started = trio.current_time()
        with trio.fail_after(10), pytest.raises(AwsUnavailable) as caught:
            await aws.dynamodb("list_tables")
        assert trio.current_time() - started < 3.0
        assert caught.value.aws_code == "Timeout"
        proxy.release()
        with trio.fail_after(10):
            assert "TableNames" in await aws.dynamodb("list_tables")


async def test_a_paused_then_killed_server(private_moto: MotoServer) -> None:
    policy = RetryPolicy(attempts=2, base=0.01, cap=0.01, timeout=0.5)
    async with connect(private_moto.url, policy) as aws:
        with trio.fail_after(30):
            await aws.dynamodb("list_tables")
            private_moto.pause()
            with pytest.raises(AwsUnavailable):
                await aws.dynamodb("list_tables")
            private_moto.resume()
            await aws.dynamodb("list_tables")
            private_moto.kill()
            with pytest.raises(AwsUnavailable):
                await aws.dynamodb("list_tables")
            private_moto.start()  # empty again, same URL
            assert (await aws.dynamodb("list_tables"))["TableNames"] == []


async def test_a_closed_bridge_refuses_calls(moto_url: str) -> None:
    async with connect(moto_url) as aws:
        with trio.fail_after(30):
            await aws.dynamodb("list_tables")
    with pytest.raises(AwsError) as caught:
        await aws.dynamodb("list_tables")
    assert caught.value.aws_code == "Closed"


async def test_a_client_that_cannot_be_made_is_an_aws_error(moto_url: str) -> None:
    async with connect(moto_url) as aws:
        with trio.fail_after(30), pytest.raises(AwsError) as caught:
            await aws.call("no-such-service", "list_things")
    assert caught.value.aws_code == "UnknownServiceError"
