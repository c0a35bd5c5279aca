"""Several gateway nodes against one Redis behave as one: clients of a channel on
different nodes see the same messages, in the same order, with the same offsets.

Nodes here run in this process (one trio loop, separate nodes, separate Redis clients,
one shared message store); tests/test_multinode_faults.py kills real node processes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.app import Gateway, open_gateway
from gateway.client import (
    MessageEvent,
    Position,
    SubscribeError,
    TypingEvent,
    Unsubscribed,
    open_client,
)
from tests.client.test_sdk import FAST, next_event, next_message
from tests.conftest import make_settings, token

TIMEOUT = 30


@pytest.fixture(params=["server", "cluster"])
def any_redis(request: pytest.FixtureRequest) -> str:
    """Every test here runs against one Redis server and against a 3-master cluster."""
    if request.param == "server":
        url: str = request.getfixturevalue("redis_url")
        return url
    return str(request.getfixturevalue("redis_cluster").url)


@asynccontextmanager
async def open_nodes(
    tmp_path: Path, redis_url: str, n: int = 2, **kw: Any
) -> AsyncIterator[list[Gateway]]:
    """``n`` nodes sharing one Redis (a fresh key prefix) and one message store."""
    prefix = "mn" + uuid.uuid4().hex[:10]
    async with AsyncExitStack() as stack:
        nodes = []
        for _ in range(n):
            settings = make_settings(tmp_path, redis_url=redis_url, redis_prefix=prefix, **kw)
            nodes.append(await stack.enter_async_context(open_gateway(settings)))
        yield nodes


async def test_clients_on_different_nodes_share_one_log(tmp_path: Path, any_redis: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_nodes(tmp_path, any_redis, 3) as (a, b, c),
            open_client(a.ws_url, token("alice")) as alice,
            open_client(b.ws_url, token("bob"), codec="json") as bob,
            open_client(c.ws_url, token("carol")) as carol,
        ):
            subs = [await x.subscribe("general") for x in (alice, bob, carol)]
            assert len({s.epoch for s in subs}) == 1
            acks = []
            for i in range(30):
                sender = (alice, bob, carol)[i % 3]
                acks.append(await sender.publish("general", f"m{i}", cmid=f"c{i}"))
            assert [a.offset for a in acks] == list(range(1, 31))
            for client in (alice, bob, carol):
                got = [await next_message(client) for _ in range(30)]
                assert [m.body for m in got] == [f"m{i}" for i in range(30)]
                assert [m.offset for m in got] == list(range(1, 31))
                assert [m.id for m in got] == [a.id for a in acks]
            # a retry on another node is the same message, not a second one
            again = await carol.publish("general", "m0", cmid="c0")
            assert again.duplicate is False or again.offset == 1  # cmid is per sender
            dup = await alice.publish("general", "m0", cmid="c0")
            assert (dup.duplicate, dup.offset, dup.id) == (True, 1, acks[0].id)


async def test_concurrent_publishers_on_all_nodes_agree_on_order(
    tmp_path: Path, any_redis: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_nodes(tmp_path, any_redis, 3) as nodes, AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(open_client(n.ws_url, token(f"u{i}")))
                for i, n in enumerate(nodes)
            ]
            for cl in clients:
                await cl.subscribe("busy")

            async def publish_many(i: int) -> None:
                for j in range(40):
                    await clients[i].publish("busy", f"{i}:{j}")

            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(publish_many, i)
            views = []
            for cl in clients:
                got = [await next_message(cl) for _ in range(120)]
                assert [m.offset for m in got] == list(range(1, 121))
                views.append([(m.offset, m.body) for m in got])
            assert views[0] == views[1] == views[2]  # one order everywhere
            for i in range(3):  # each publisher's own order is kept
                mine = [b for _, b in views[0] if b.startswith(f"{i}:")]
                assert mine == [f"{i}:{j}" for j in range(40)]


async def test_catch_up_on_another_node(tmp_path: Path, any_redis: str) -> None:
    """Bob reads on node A, drops, and resubscribes on node B from his position."""
    with trio.fail_after(TIMEOUT):
        async with (
            open_nodes(tmp_path, any_redis, 2) as (a, b),
            open_client(a.ws_url, token("alice")) as alice,
        ):
            await alice.subscribe("general")
            async with open_client(a.ws_url, token("bob")) as bob:
                await bob.subscribe("general")
                for i in range(5):
                    await alice.publish("general", f"m{i}")
                seen = [await next_message(bob) for _ in range(5)]
                pos = bob.positions["general"]
            assert pos.offset == 5
            for i in range(5, 15):
                await alice.publish("general", f"m{i}")
            async with open_client(b.ws_url, token("bob")) as bob:
                sub = await bob.subscribe("general", since=pos)
                assert (sub.replayed, sub.reset, sub.truncated) == (10, False, False)
                missed = [await next_message(bob) for _ in range(10)]
                assert [m.body for m in seen + missed] == [f"m{i}" for i in range(15)]
                await alice.publish("general", "live")
                assert (await next_message(bob)).body == "live"


async def test_catch_up_from_the_store_after_the_stream_was_trimmed(
    tmp_path: Path, any_redis: str
) -> None:
    """With a hot window of 5, older history comes from the message store."""
    with trio.fail_after(TIMEOUT):
        async with (
            open_nodes(tmp_path, any_redis, 2, hot_window=5) as (a, b),
            open_client(a.ws_url, token("alice")) as alice,
        ):
            await alice.subscribe("general")
            epoch = ""
            for i in range(60):
                epoch = (await alice.publish("general", f"m{i}")).epoch
            # wait until node A has written behind and trimmed its stream
            while a.node.bus.statistics().persist_backlog or not await _trimmed(a):
                await trio.sleep(0.05)
            async with open_client(b.ws_url, token("bob")) as bob:
                sub = await bob.subscribe("general", since=Position(epoch, 3))
                assert sub.replayed == 57
                got = [await next_message(bob) for _ in range(57)]
                assert [m.body for m in got] == [f"m{i}" for i in range(3, 60)]
            async with httpx.AsyncClient() as http:
                page = await http.get(
                    f"{b.http_url}/v1/channels/general/messages",
                    params={"after": "0", "limit": "20"},
                    headers={"authorization": f"Bearer {token('bob')}"},
                )
            assert page.status_code == 200
            assert [m["body"] for m in page.json()["messages"]] == [f"m{i}" for i in range(20)]


async def _trimmed(gw: Gateway) -> bool:
    bus: Any = gw.node.bus
    ch = bus._chans.get("general")
    if ch is None:
        return False
    trimmed = await bus.redis.execute("HGET", ch.meta, "trimmed", key=ch.meta)
    return int(trimmed) > 0


async def test_a_node_reads_only_channels_it_has_subscribers_for(
    tmp_path: Path, any_redis: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_nodes(tmp_path, any_redis, 2, channel_idle_timeout=0.2) as (a, b),
            open_client(a.ws_url, token("alice")) as alice,
        ):
            await alice.subscribe("only-a")
            await alice.publish("only-a", "x")
            assert a.node.bus.statistics().tails_open == 1
            assert b.node.bus.statistics().tails_open == 0
            async with open_client(b.ws_url, token("bob")) as bob:
                await bob.subscribe("only-a")
                assert b.node.bus.statistics().tails_open == 1
            # bob left: node B's channel actor stops after its idle timeout and its tail
            # (and shard subscription) closes
            while b.node.bus.statistics().tails_open:
                await trio.sleep(0.05)


async def test_typing_is_not_replayed_across_nodes(tmp_path: Path, any_redis: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_nodes(tmp_path, any_redis, 2) as (a, b),
            open_client(a.ws_url, token("alice")) as alice,
            open_client(b.ws_url, token("bob"), **FAST) as bob,
        ):
            await alice.subscribe("general")
            await bob.subscribe("general")
            await alice.typing("general")
            event = await next_event(bob, TypingEvent, MessageEvent)
            assert isinstance(event, TypingEvent)
            assert (event.channel, event.user) == ("general", "alice") and event.expires_ms > 0
            await alice.publish("general", "after typing")
            assert (await next_message(bob)).body == "after typing"
            async with open_client(b.ws_url, token("carol")) as carol:
                await carol.subscribe("general", since=Position(bob.positions["general"].epoch, 0))
                first = await next_event(carol, TypingEvent, MessageEvent)
                assert isinstance(first, MessageEvent)  # history only: typing is not stored


async def test_readyz_reports_redis(tmp_path: Path, any_redis: str) -> None:
    async with open_nodes(tmp_path, any_redis, 2) as nodes, httpx.AsyncClient() as http:
        for gw in nodes:
            r = await http.get(f"{gw.http_url}/readyz")
            assert r.status_code == 200 and r.json()["status"] == "ready"


async def test_revocation_reaches_every_node(tmp_path: Path, any_redis: str) -> None:
    """An admin revokes bob on node A; bob's subscription on node B ends at once, and
    neither node lets him back in (WebSocket or REST) while the revocation lasts."""
    with trio.fail_after(TIMEOUT):
        async with (
            open_nodes(tmp_path, any_redis, 2) as (a, b),
            open_client(b.ws_url, token("bob")) as bob,
            httpx.AsyncClient() as http,
        ):
            await bob.subscribe("secret")
            await bob.subscribe("general")
            r = await http.post(
                f"{a.http_url}/v1/revocations",
                json={"user": "bob", "channel": "secret"},
                headers={"authorization": f"Bearer {token('root', admin=True)}"},
            )
            assert r.status_code == 202, r.text
            assert r.json()["connections_here"] == 0  # bob is on node B
            ended = await next_event(bob, Unsubscribed)
            assert ended == Unsubscribed(channel="secret", reason="forbidden")
            for url in (a.ws_url, b.ws_url):
                async with open_client(url, token("bob")) as again:
                    with pytest.raises(SubscribeError) as refused:
                        await again.subscribe("secret")
                    assert refused.value.code == "forbidden"
                    await again.subscribe("general")  # other channels are untouched
            page = await http.get(
                f"{a.http_url}/v1/channels/secret/messages",
                headers={"authorization": f"Bearer {token('bob')}"},
            )
            assert page.status_code == 403
            # only admins revoke, and the body is checked
            r = await http.post(
                f"{b.http_url}/v1/revocations",
                json={"user": "alice", "channel": "general"},
                headers={"authorization": f"Bearer {token('bob')}"},
            )
            assert r.status_code == 403
            for bad in ({"user": "", "channel": "x"}, {"user": "a", "channel": "bad name"}, {}):
                r = await http.post(
                    f"{b.http_url}/v1/revocations",
                    json=bad,
                    headers={"authorization": f"Bearer {token('root', admin=True)}"},
                )
                assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_field"
