"""DynamoDB faults under a node on Redis: realtime goes on while the store is down or
throttling, the write-behind backlog shows in /metrics, and everything lands later.

DynamoDB is moto's server behind :class:`tests.aws.FaultProxy`, so the node's requests
really fail (dropped connections, throttling answers) on the wire."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from gateway.app import open_gateway
from gateway.aws import Aws
from gateway.model import Record
from gateway.protocol import frames as f
from gateway.store.dynamodb import DynamoStore
from gateway.store.tables import TABLES, create_bucket, create_tables
from tests.aws import DYNAMO_ERROR, FaultProxy, Rule, connect, open_fault_proxy
from tests.conftest import token
from tests.rawclient import LOG_EVENTS, Raw, raw_client
from tests.routes.domain_helpers import (
    auth,
    http_client,
    make_channel,
    make_user,
    make_workspace,
)
from tests.test_app_aws import aws_env, on_aws

__all__ = ["aws_env"]  # the fixture: botocore's credentials from the environment only

T = 90  # seconds: deadline of each test body


@pytest.fixture
async def proxy(moto_url: str) -> AsyncIterator[FaultProxy]:
    async with open_fault_proxy(moto_url) as proxy:
        yield proxy


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def wait_metric(http: httpx.AsyncClient, name: str, ok: object) -> float:
    while True:
        value = await metric(http, name)
        if ok(value):  # type: ignore[operator]
            return value
        await trio.sleep(0.1)


async def publish(client: Raw, channel: str, cmid: str, body: str) -> f.Ack:
    await client.send(f.Publish(channel=channel, cmid=cmid, body=body))
    ack: f.Ack = await client.expect(f.Ack, skip=(f.MessageEvent, *LOG_EVENTS))
    return ack


async def stored(aws: Aws, prefix: str, channel: str) -> list[Record]:
    store = DynamoStore(aws, prefix)
    return [r for r in await store.read(channel, 0, 1000) if not r.kind]


@pytest.mark.parametrize("fault", ["unreachable", "throttling"])
async def test_realtime_goes_on_while_dynamodb_fails_and_the_backlog_lands_later(
    tmp_path: Path, moto_url: str, redis_url: str, proxy: FaultProxy, fault: str
) -> None:
    settings = on_aws(
        tmp_path, proxy.url, redis_url=redis_url, redis_prefix=f"f{uuid.uuid4().hex[:8]}"
    )
    prefix = settings.dynamodb_prefix
    with trio.fail_after(T):
        async with connect(moto_url) as aws:
            await create_tables(aws, prefix, TABLES)
            await create_bucket(aws, settings.s3_bucket)
        async with open_gateway(settings) as gw, http_client(gw) as http:
            await make_user(http, "alice")
            ws = await make_workspace(http, "alice", {"bob": "member"})
            channel = (await make_channel(http, ws, "alice", "general"))["id"]
            r = await http.put(f"/v1/channels/{channel}/members/bob", headers=auth("bob"))
            assert r.status_code == 201, r.text
            async with (
                raw_client(gw.ws_url, token=token("alice")) as alice,
                raw_client(gw.ws_url, token=token("bob")) as bob,
            ):
                await alice.subscribe(channel)
                await bob.subscribe(channel)
                first = await publish(alice, channel, "before", "before the fault")
                await wait_metric(http, "gateway_bus_persist_backlog", lambda v: v == 0)

                if fault == "unreachable":  # every request: the connection drops
                    proxy.add(Rule("drop", 10**6))
                else:  # the write-behind's writes: throttled
                    body = {"__type": DYNAMO_ERROR + "ProvisionedThroughputExceededException"}
                    proxy.add(Rule("reply", 10**6, "BatchWriteItem", 400, body))
                    proxy.add(Rule("reply", 10**6, "TransactWriteItems", 400, body))
                acks = [await publish(alice, channel, f"m{i}", f"during {i}") for i in range(20)]
                got: list[f.MessageEvent] = []
                while len(got) < 21:  # bob gets every message at once, the store down or not
                    event = await bob.expect(f.MessageEvent, skip=LOG_EVENTS)
                    got.append(event)
                assert [e.offset for e in got] == [first.offset, *(a.offset for a in acks)]
                # the audit (every second) counts the 20 held back
                await wait_metric(http, "gateway_bus_persist_backlog", lambda v: v >= 20)
                await wait_metric(http, "gateway_bus_persist_failures_total", lambda v: v > 0)

                proxy.clear()  # DynamoDB is back
                await wait_metric(http, "gateway_bus_persist_backlog", lambda v: v == 0)
        async with connect(moto_url) as aws:
            history = await stored(aws, prefix, channel)
    assert [(r.offset, r.cmid, r.body) for r in history] == [
        (first.offset, "before", "before the fault"),
        *((a.offset, f"m{i}", f"during {i}") for i, a in enumerate(acks)),
    ]
