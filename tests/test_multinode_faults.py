"""Faults with real processes: gateway nodes killed with SIGKILL, Redis stopped and
started again. Every acknowledged message reaches every subscriber exactly once."""

from __future__ import annotations

import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from gateway.client import Client, MessageEvent, PresenceEvent, PublishError, open_client
from tests.client.test_sdk import FAST, next_message
from tests.conftest import SECRET, token
from tests.services import RedisServer

TIMEOUT = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    """One ``gateway serve`` process on Redis."""

    def __init__(self, proc: trio.Process, ws_url: str, http_url: str) -> None:
        self.proc = proc
        self.ws_url = ws_url
        self.http_url = http_url

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)


@asynccontextmanager
async def run_nodes(
    tmp_path: Path, redis_url: str, n: int, prefix: str, **env: str
) -> AsyncIterator[list[NodeProcess]]:
    nodes: list[NodeProcess] = []
    try:
        for i in range(n):
            nodes.append(await _start(tmp_path, redis_url, prefix, i, env))
        yield nodes
    finally:
        for node in nodes:
            if node.proc.returncode is None:
                node.proc.send_signal(signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await node.proc.wait()


async def _start(
    tmp_path: Path, redis_url: str, prefix: str, i: int, extra: dict[str, str]
) -> NodeProcess:
    ws, http = _free_port(), _free_port()
    env = dict(os.environ)
    env.update(extra)
    env.update(
        GATEWAY_WS_PORT=str(ws),
        GATEWAY_HTTP_PORT=str(http),
        GATEWAY_DATA_DIR=str(tmp_path),  # one message store shared by the nodes
        GATEWAY_JWT_SECRET=SECRET,
        GATEWAY_REDIS_URL=redis_url,
        GATEWAY_REDIS_PREFIX=prefix,
        GATEWAY_REDIS_TIMEOUT="1",
        GATEWAY_DRAIN_TIMEOUT="2",
        GATEWAY_LOG_LEVEL="WARNING",
    )
    log = (tmp_path / f"node{i}.log").open("ab")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "gateway", "serve"], env=env, stdout=log, stderr=log
    )
    http_url = f"http://127.0.0.1:{http}"
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"{http_url}/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, f"node {i} exited at start: see {tmp_path}/node{i}.log"
            await trio.sleep(0.05)
    return NodeProcess(proc, f"ws://127.0.0.1:{ws}/ws", http_url)


async def _collect(client: Client, out: list[MessageEvent], stop: trio.Event) -> None:
    async for event in client.events():
        if isinstance(event, MessageEvent):
            out.append(event)
        if stop.is_set():
            return


async def _publish_with_retry(client: Client, channel: str, body: str, cmid: str) -> int:
    """Publish until acked (the same cmid each time); return the acked offset."""
    while True:
        try:
            return (await client.publish(channel, body, cmid=cmid)).offset
        except PublishError as exc:
            assert exc.retryable, exc  # never a permanent refusal for a valid message
            await trio.sleep(0.05)


def _check_exactly_once(got: list[MessageEvent], acked: dict[str, int]) -> None:
    offsets = [m.offset for m in got]
    assert offsets == sorted(set(offsets)), "a subscriber saw a message twice or out of order"
    by_offset = {m.offset: m.body for m in got}
    for body, offset in acked.items():
        assert by_offset.get(offset) == body, f"acked {body!r} at {offset} not delivered"
    assert offsets == list(range(1, len(offsets) + 1)), "a gap in the delivered offsets"


@pytest.fixture(params=["server", "cluster"])
def any_redis(request: pytest.FixtureRequest) -> str:
    if request.param == "server":
        url: str = request.getfixturevalue("redis_url")
        return url
    return str(request.getfixturevalue("redis_cluster").url)


async def test_kill_9_a_node_under_load(tmp_path: Path, any_redis: str) -> None:
    """Publisher and subscribers spread over three nodes; node A dies by SIGKILL in the
    middle. Clients of A reconnect to the others and resume; every acked message is
    delivered exactly once to every subscriber, in order."""
    prefix = "k9" + uuid.uuid4().hex[:8]
    total = 300
    with trio.fail_after(TIMEOUT):
        async with run_nodes(tmp_path, any_redis, 3, prefix) as (a, b, c):
            urls = [a.ws_url, b.ws_url, c.ws_url]
            rotations = [urls, urls[1:] + urls[:1], urls[2:] + urls[:2]]
            acked: dict[str, int] = {}
            received: list[list[MessageEvent]] = [[] for _ in range(4)]
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                subs = []
                for i in range(4):
                    # subscribers 0 and 1 start on node A (which dies), 2 on B, 3 on C
                    order = rotations[0] if i < 2 else rotations[i - 1]
                    sub = await nursery.start(_subscriber, order, f"s{i}", received[i], stop)
                    subs.append(sub)
                async with open_client(urls, token("pub"), **FAST) as pub:
                    await pub.subscribe("load")
                    for k in range(total):
                        if k == total // 3:
                            a.kill()
                        body = f"m{k}"
                        acked[body] = await _publish_with_retry(pub, "load", body, f"c{k}")
                    assert pub.statistics().connects >= 2  # it moved off node A
                # wait until every subscriber has the last acked offset
                last = max(acked.values())
                while any(not r or r[-1].offset < last for r in received):
                    await trio.sleep(0.05)
                stats = [sub.statistics() for sub in subs]
                stop.set()
                nursery.cancel_scope.cancel()
            assert [s.connects >= 2 for s in stats] == [True, True, False, False]
            # the server itself sent nothing twice (the SDK would drop and count it)
            assert [s.duplicates_dropped for s in stats] == [0, 0, 0, 0]
            assert sorted(acked.values()) == list(range(1, total + 1))
            for got in received:
                _check_exactly_once(got, acked)


async def _subscriber(
    urls: list[str],
    user: str,
    out: list[MessageEvent],
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[Client],
) -> None:
    async with open_client(urls, token(user), **FAST) as client:
        await client.subscribe("load")
        task_status.started(client)
        await _collect(client, out, stop)


async def test_redis_outage_gives_retryable_errors_then_recovers(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """Redis stops for a few seconds: sends get a retryable error (never a false ack),
    nodes reconnect with backoff by themselves, realtime resumes, nothing acked is lost."""
    prefix = "ro" + uuid.uuid4().hex[:8]
    with trio.fail_after(TIMEOUT):
        async with run_nodes(tmp_path, fresh_redis.url, 2, prefix) as (a, b):
            async with (
                open_client(a.ws_url, token("alice"), **FAST) as alice,
                open_client(b.ws_url, token("bob"), **FAST) as bob,
            ):
                await alice.subscribe("general")
                await bob.subscribe("general")
                acked: dict[str, int] = {}
                for k in range(5):
                    acked[f"before{k}"] = (await alice.publish("general", f"before{k}")).offset
                fresh_redis.stop()
                refused = 0
                for k in range(5):
                    try:
                        ack = await alice.publish("general", f"during{k}", cmid=f"d{k}")
                        acked[f"during{k}"] = ack.offset  # accepted before Redis was gone
                    except PublishError as exc:
                        assert exc.retryable and exc.code == "unavailable", exc
                        refused += 1
                assert refused >= 4
                async with httpx.AsyncClient() as http:
                    ready = await http.get(f"{a.http_url}/readyz")
                    assert ready.status_code == 503 and "Redis" in ready.json()["reason"]
                fresh_redis.start()
                for k in range(5):  # the retries, with the same cmids, once Redis is back
                    acked[f"during{k}"] = await _publish_with_retry(
                        alice, "general", f"during{k}", f"d{k}"
                    )
                for k in range(5):
                    acked[f"after{k}"] = await _publish_with_retry(
                        bob, "general", f"after{k}", f"a{k}"
                    )
                last = max(acked.values())
                assert sorted(acked.values()) == list(range(1, last + 1))
                for client in (alice, bob):
                    got: list[MessageEvent] = []
                    while not got or got[-1].offset < last:
                        got.append(await next_message(client))
                    _check_exactly_once(got, acked)
                    assert client.statistics().duplicates_dropped == 0
                async with httpx.AsyncClient() as http:
                    assert (await http.get(f"{b.http_url}/readyz")).status_code == 200


async def test_a_node_that_falls_behind_catches_up_without_blocking_others(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """Node B is frozen (SIGSTOP) while node A's clients keep chatting. Redis drops B's
    pub/sub connection once its output buffer overflows (a tiny limit here); A's clients
    are not held up, and when B wakes it refills from the stream: bob gets everything,
    once, in order."""
    fresh_redis.command("CONFIG", "SET", "client-output-buffer-limit", "pubsub 1mb 1mb 0")
    prefix = "sl" + uuid.uuid4().hex[:8]
    fast = {"GATEWAY_RATE_PER_SECOND": "100000", "GATEWAY_RATE_BURST": "100000"}
    n = 1000
    async with run_nodes(tmp_path, fresh_redis.url, 2, prefix, **fast) as (a, b):
        with trio.fail_after(TIMEOUT):
            async with (
                open_client(a.ws_url, token("alice"), **FAST) as alice,
                open_client(b.ws_url, token("bob"), **FAST) as bob,
            ):
                await alice.subscribe("general")
                await bob.subscribe("general")
                # both nodes' shard subscriptions (control + general) are live
                while fresh_redis.command("CLIENT", "LIST").count("ssub=2") < 2:
                    await trio.sleep(0.02)
                acked: dict[str, int] = {}
                b.proc.send_signal(signal.SIGSTOP)
                try:
                    filler = "x" * 8000  # 8 MB: more than kernel buffers and the limit
                    for k in range(n):
                        body = f"{k}:{filler}"
                        acked[body] = (await alice.publish("general", body)).offset
                        got = await next_message(alice)  # A delivers while B is frozen
                        assert got.offset == acked[body]
                finally:
                    b.proc.send_signal(signal.SIGCONT)
                got_b: list[MessageEvent] = []
                while len(got_b) < n:
                    got_b.append(await next_message(bob))
                _check_exactly_once(got_b, acked)
                assert bob.statistics().duplicates_dropped == 0
                # the overflow did cut B's subscription: the refill path was exercised
                assert "output buffer limits" in fresh_redis.log_tail(200)


async def test_a_dead_nodes_users_go_offline_by_themselves(tmp_path: Path, redis_url: str) -> None:
    """Bob's only node dies by SIGKILL: nobody announces it, yet alice (on another node)
    sees him offline once his presence lease lapses (GATEWAY_PRESENCE_TTL=3 here)."""
    prefix = "pd" + uuid.uuid4().hex[:8]
    async with run_nodes(tmp_path, redis_url, 2, prefix, GATEWAY_PRESENCE_TTL="3") as (a, b):
        with trio.fail_after(TIMEOUT):
            async with (
                open_client(a.ws_url, token("alice"), **FAST) as alice,
                open_client(b.ws_url, token("bob"), reconnect=False),
            ):
                await alice.watch_presence(["bob"])
                first = await _presence(alice)
                assert first.status == "online"
                b.kill()
                start = trio.current_time()
                gone = await _presence(alice)
                waited = trio.current_time() - start
                assert gone.status == "offline" and gone.last_seen > 0
                assert waited < 3 * 3 + 2  # within about the lease, not forever


async def _presence(client: Client) -> PresenceEvent:
    async for event in client.events():
        if isinstance(event, PresenceEvent):
            return event
    raise AssertionError("events() ended")
