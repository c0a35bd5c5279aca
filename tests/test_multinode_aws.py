"""A write-behind writer killed mid-batch, with real processes: two ``gateway serve`` nodes
on one Redis and DynamoDB (moto's server behind :class:`tests.aws.FaultProxy`).

Node A accepts the messages and starts writing them behind: its first ``BatchWriteItem``
lands but the answer is lost, its retries and later batches hang. ``kill -9`` A. Node B,
which never had the channel loaded, finds it in the dirty registry once A's marks and
lease lapse, takes the batch over, and writes it: every message exactly once, the cmid
index and the log's head complete, the backlog back to zero."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import trio

from gateway.aws import Aws
from gateway.model import Record
from gateway.store.dynamodb import DynamoStore
from gateway.store.tables import MESSAGES, TABLES, create_bucket, create_tables
from tests.aws import Rule, connect, open_fault_proxy
from tests.conftest import token
from tests.rawclient import raw_client
from tests.routes.domain_helpers import make_channel, make_user, make_workspace
from tests.test_app_aws_faults import publish, stored, wait_metric
from tests.test_multinode_faults import run_nodes

T = 120  # seconds: deadline of the test body
N = 60  # messages


async def test_a_writer_killed_mid_batch_leaves_it_to_another_that_writes_it_once(
    tmp_path: Path, moto_url: str, redis_url: str
) -> None:
    prefix = f"k{uuid.uuid4().hex[:10]}"
    bucket = f"files-{uuid.uuid4().hex[:12]}"
    with trio.fail_after(T):
        async with connect(moto_url) as aws:
            await create_tables(aws, prefix, TABLES)
            await create_bucket(aws, bucket)
        async with open_fault_proxy(moto_url) as proxy:
            env = {
                "GATEWAY_STORE": "dynamodb",
                "GATEWAY_DYNAMODB_PREFIX": prefix,
                "GATEWAY_S3_BUCKET": bucket,
                "GATEWAY_AWS_ENDPOINT_URL": proxy.url,
                "GATEWAY_AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_EC2_METADATA_DISABLED": "true",
            }
            async with run_nodes(tmp_path, redis_url, 2, f"r{prefix}", **env) as (a, b):
                async with httpx.AsyncClient(base_url=a.http_url, timeout=10) as http:
                    await make_user(http, "alice")  # all of it on A: B never loads the channel
                    ws = await make_workspace(http, "alice")
                    channel = (await make_channel(http, ws, "alice", "general"))["id"]
                    await wait_metric(http, "gateway_bus_persist_backlog", lambda v: v == 0)
                    # the write-behind's puts of this channel's records only (other logs,
                    # such as alice's own, are written behind too)
                    ours = (MESSAGES.name(prefix).encode(), f'"{channel}"'.encode())
                    land = proxy.add(Rule("land_then_drop", 1, op="BatchWriteItem", contains=ours))
                    hang = proxy.add(Rule("hang", 10**6, op="BatchWriteItem", contains=ours))
                    async with raw_client(a.ws_url, token=token("alice")) as alice:
                        await alice.subscribe(channel)
                        acks = []
                        for i in range(N):
                            acks.append(await publish(alice, channel, f"m{i}", f"body {i}"))
                    while land.times or hang.times == 10**6:  # one landed, the next hangs
                        await trio.sleep(0.05)
                    async with connect(moto_url) as aws:
                        landed = await stored(aws, prefix, channel)
                    assert 0 < len(landed) < N  # mid-batch: part of it is in DynamoDB
                a.kill()
                await a.proc.wait()
                proxy.clear()
                proxy.release()

                async with httpx.AsyncClient(base_url=b.http_url, timeout=10) as http:
                    async with connect(moto_url) as aws:
                        while len(await stored(aws, prefix, channel)) < N:
                            await trio.sleep(0.2)
                        await wait_metric(http, "gateway_bus_persist_backlog", lambda v: v == 0)
                        history = await stored(aws, prefix, channel)
                        await check_cmids_and_head(aws, prefix, channel, history)
    assert [(r.offset, r.cmid, r.body) for r in history] == [
        (ack.offset, f"m{i}", f"body {i}") for i, ack in enumerate(acks)
    ]


async def check_cmids_and_head(aws: Aws, prefix: str, channel: str, history: list[Record]) -> None:
    store = DynamoStore(aws, prefix)
    for r in history:
        assert await store.find_cmid(channel, r.sender, r.cmid) == r
    assert (await store.open_log(channel)).offset >= history[-1].offset
