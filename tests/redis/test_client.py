"""RedisClient: URLs, scripts, sharded pub/sub, and routing over a real 3-master cluster."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest
import trio
from redis.crc import key_slot

from gateway.redis.client import (
    Address,
    RedisClient,
    RedisError,
    RedisUnavailable,
    Script,
    Subscription,
    open_redis,
    parse_url,
)
from tests.services import RedisCluster, RedisReplyError, RedisServer


def unique(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex}"


class Recorder:
    """Subscription callbacks that record what they got; tests wait on conditions."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed: list[str] = []
        self._changed = trio.Event()

    def on_message(self, channel: str, data: bytes) -> None:
        self.messages.append((channel, data))
        self._poke()

    def on_subscribed(self, channel: str) -> None:
        self.subscribed.append(channel)
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while not condition():
                await self._changed.wait()


async def retry(client: RedisClient, *args: str, key: str | None = None) -> object:
    """Run a command, retrying while Redis is unavailable (reconnect backoff after a restart)."""
    with trio.fail_after(5):
        while True:
            try:
                return await client.execute(*args, key=key)
            except RedisUnavailable:
                await trio.sleep(0.01)


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://127.0.0.1:6380", ("127.0.0.1", 6380)),
        ("redis://redis.internal:7000/", ("redis.internal", 7000)),
        ("redis://localhost", ("localhost", 6379)),
        ("redis://[::1]:6390", ("::1", 6390)),
    ],
)
def test_parse_url_accepts_host_and_port(url: str, address: Address) -> None:
    assert parse_url(url) == address


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("rediss://cache:6379", "expected redis://host:port, got 'rediss://cache:6379'"),
        ("http://cache:6379", "expected redis://host:port"),
        ("unix:///run/redis.sock", "expected redis://host:port"),
        ("cache:6379", "expected redis://host:port"),
        ("redis://", "expected redis://host:port"),
        ("redis://user:secret@cache:6379", "credentials and database numbers are not supported"),
        ("redis://:secret@cache:6379", "credentials and database numbers are not supported"),
        ("redis://cache:6379/0", "credentials and database numbers are not supported"),
        ("redis://cache:6379/3", "credentials and database numbers are not supported"),
        ("redis://cache:6379?db=3", "query parameters are not supported"),
        ("redis://cache:6379/?password=secret", "query parameters are not supported"),
        ("redis://cache:99999", "redis URL 'redis://cache:99999': Port out of range"),
        ("redis://cache:port", "redis URL 'redis://cache:port': Port could not be cast"),
    ],
)
def test_parse_url_refuses_what_it_cannot_honour(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_url(url)


async def test_open_redis_refuses_a_bad_url_before_connecting() -> None:
    with pytest.raises(ValueError, match="credentials"):
        async with open_redis("redis://user:pw@127.0.0.1:1"):
            pytest.fail("opened")


async def test_standalone_server_is_not_a_cluster(redis_url: str) -> None:
    async with open_redis(redis_url) as client:
        seen = [client.cluster]  # unknown until the first command
        key = unique("standalone")
        assert await client.execute("SET", key, "v", key=key) == b"OK"
        seen.append(client.cluster)
        assert seen == [None, False]
        assert client.cluster is False
        assert await client.address_of(key) == parse_url(redis_url)
        assert await client.address_of(None) == parse_url(redis_url)
        await client.execute("DEL", key)


# -- scripts ---------------------------------------------------------------------------------


def command_calls(server: RedisServer, command: str) -> tuple[int, int]:
    """(calls, failed_calls) of ``command`` from INFO commandstats."""
    info = str(server.call("INFO", "commandstats"))
    for line in info.splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            fields = dict(f.split("=") for f in line.split(":", 1)[1].split(","))
            return int(fields["calls"]), int(fields["failed_calls"])
    return 0, 0


async def test_run_script_falls_back_to_eval_on_noscript(fresh_redis: RedisServer) -> None:
    script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    async with open_redis(fresh_redis.url) as client:
        assert await client.execute("SCRIPT", "EXISTS", script.sha) == [0]
        assert await client.run_script(script, ["n"], [5]) == 5  # NOSCRIPT, then EVAL
        assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
        assert await client.run_script(script, ["n"], [2]) == 7  # EVALSHA alone
        assert command_calls(fresh_redis, "evalsha") == (2, 1)
        assert command_calls(fresh_redis, "eval") == (1, 0)

        assert await client.execute("SCRIPT", "FLUSH") == b"OK"
        assert await client.run_script(script, ["n"], [3]) == 10  # NOSCRIPT again, EVAL
        assert command_calls(fresh_redis, "evalsha") == (3, 2)
        assert command_calls(fresh_redis, "eval") == (2, 0)
        assert await client.execute("GET", "n") == b"10"

        # Other errors from a script are raised, not retried with EVAL.
        await client.execute("SET", "s", "text")
        with pytest.raises(RedisError, match="not an integer"):
            await client.run_script(script, ["s"], [1])
        assert command_calls(fresh_redis, "eval") == (2, 0)


# -- sharded pub/sub -------------------------------------------------------------------------


async def test_subscription_delivers_and_unsubscribe_stops(redis_url: str) -> None:
    channel, other, marker = unique("ch"), unique("other"), unique("marker")
    rec = Recorder()
    async with open_redis(redis_url) as client:
        sub = Subscription(client, rec.on_message, rec.on_subscribed)
        await sub.subscribe(channel)
        await rec.wait_until(lambda: rec.subscribed == [channel])
        assert sub.channels == {channel}

        for i in range(3):
            assert await client.execute("SPUBLISH", channel, f"m{i}", key=channel) == 1
        assert await client.execute("SPUBLISH", other, "not for us", key=other) == 0
        await rec.wait_until(lambda: len(rec.messages) == 3)
        assert rec.messages == [(channel, b"m0"), (channel, b"m1"), (channel, b"m2")]

        await sub.subscribe(channel)  # idempotent: no second subscription, no duplicates
        assert await client.execute("SPUBLISH", channel, "m3", key=channel) == 1
        await rec.wait_until(lambda: len(rec.messages) == 4)

        await sub.unsubscribe(channel)
        assert sub.channels == frozenset()
        # Published right away (before the server has seen SUNSUBSCRIBE) or later: once
        # unsubscribe returned, nothing more is delivered for the channel.
        await client.execute("SPUBLISH", channel, "late", key=channel)
        with trio.fail_after(5):
            while await client.execute("SPUBLISH", channel, "late", key=channel) != 0:
                await trio.sleep(0.01)
        # A message on another channel of the same connection, published after those,
        # arrives after them: when it is here, anything for `channel` would be too.
        await sub.subscribe(marker)
        await rec.wait_until(lambda: marker in rec.subscribed)
        assert await client.execute("SPUBLISH", marker, "done", key=marker) == 1
        await rec.wait_until(lambda: (marker, b"done") in rec.messages)
        assert [m for m in rec.messages if m[0] == channel] == [
            (channel, f"m{i}".encode()) for i in range(4)
        ]
        assert rec.subscribed == [channel, marker]


async def test_subscription_resubscribes_after_a_restart(fresh_redis: RedisServer) -> None:
    channel = unique("ch")
    rec = Recorder()
    async with open_redis(fresh_redis.url, max_backoff=0.5) as client:
        sub = Subscription(client, rec.on_message, rec.on_subscribed)
        await sub.subscribe(channel)
        await rec.wait_until(lambda: rec.subscribed == [channel])
        assert await client.execute("SPUBLISH", channel, "before", key=channel) == 1
        await rec.wait_until(lambda: rec.messages == [(channel, b"before")])

        await trio.to_thread.run_sync(fresh_redis.stop)
        await trio.to_thread.run_sync(fresh_redis.start)
        # Called again once the subscription is back, so the owner can catch up.
        await rec.wait_until(lambda: rec.subscribed == [channel, channel])
        assert await retry(client, "SPUBLISH", channel, "after", key=channel) == 1
        await rec.wait_until(lambda: len(rec.messages) == 2)
        assert rec.messages == [(channel, b"before"), (channel, b"after")]


@pytest.mark.parametrize("kind", ["server", "cluster"])
async def test_unsubscribe_then_subscribe_at_once_stays_subscribed(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """SUNSUBSCRIBE and SSUBSCRIBE of one channel reach the server in the order asked (a
    channel actor that stops and restarts at once must not end up silently unsubscribed)."""
    url = (
        request.getfixturevalue("redis_url")
        if kind == "server"
        else request.getfixturevalue("redis_cluster").url
    )
    channel = unique("flip")
    rec = Recorder()
    async with open_redis(url) as client:
        sub = Subscription(client, rec.on_message, rec.on_subscribed)
        await sub.subscribe(channel)
        await rec.wait_until(lambda: rec.subscribed == [channel])
        for _ in range(20):
            await sub.unsubscribe(channel)
            await sub.subscribe(channel)
        await rec.wait_until(lambda: len(rec.subscribed) == 21)
        assert await client.execute("SPUBLISH", channel, "still here", key=channel) == 1
        await rec.wait_until(lambda: rec.messages == [(channel, b"still here")])


# -- cluster ---------------------------------------------------------------------------------


def owner(cluster: RedisCluster, key: str) -> RedisServer:
    slot = key_slot(key.encode())
    port = next(p for first, last, p in cluster.slots() if first <= slot <= last)
    return next(node for node in cluster.nodes if node.port == port)


def node_at(cluster: RedisCluster, address: Address) -> RedisServer:
    return next(node for node in cluster.nodes if (node.host, node.port) == address)


async def test_cluster_routes_each_key_to_its_master(redis_cluster: RedisCluster) -> None:
    keys = [unique("route") for _ in range(60)]
    async with open_redis(redis_cluster.url) as client:
        for k in keys:
            assert await client.execute("SET", k, k, key=k) == b"OK"
        assert client.cluster is True
        masters = set()
        for k in keys:
            node = owner(redis_cluster, k)
            assert await client.address_of(k) == (node.host, node.port)
            assert node.call("GET", k) == k  # it is really stored there...
            for other in redis_cluster.nodes:
                if other is not node:  # ...and not anywhere else
                    with pytest.raises(RedisReplyError, match=r"^MOVED "):
                        other.call("GET", k)
            masters.add(node.port)
        assert masters == {node.port for node in redis_cluster.nodes}
        for k in keys:
            assert await client.execute("GET", k, key=k) == k.encode()
            assert await client.execute("DEL", k, key=k) == 1
        assert client.stats.redirects == 0


async def test_cluster_hash_tag_keys_share_one_node(redis_cluster: RedisCluster) -> None:
    tag = "{" + uuid.uuid4().hex + "}"
    keys = [f"{tag}:k{i}" for i in range(10)]
    async with open_redis(redis_cluster.url) as client:
        replies = await client.pipeline([("SET", k, i) for i, k in enumerate(keys)], key=tag)
        assert replies == [b"OK"] * 10
        address = await client.address_of(tag)
        assert {await client.address_of(k) for k in keys} == {address}
        node = node_at(redis_cluster, address)
        assert node.call("EXISTS", *keys) == 10  # a multi-key command, on that node alone
        assert await client.execute("MGET", *keys, key=tag) == [b"%d" % i for i in range(10)]
        assert await client.execute("DEL", *keys, key=tag) == 10


async def test_cluster_follows_moved_and_fixes_its_slot_map(redis_cluster: RedisCluster) -> None:
    key = unique("moved")
    slot = key_slot(key.encode())
    async with open_redis(redis_cluster.url) as client:
        assert await client.execute("SET", key, "v", key=key) == b"OK"
        right = client._slots[slot]
        wrong = next(a for a in sorted(set(client._slots)) if a != right)
        client._slots[slot] = wrong
        assert await client.execute("GET", key, key=key) == b"v"
        assert client.stats.redirects == 1
        assert client._slots[slot] == right
        assert await client.execute("GET", key, key=key) == b"v"
        assert client.stats.redirects == 1

        # A command sent without key= goes to the seed node, and is redirected from there.
        elsewhere = unique("nokey")
        while client._slots[key_slot(elsewhere.encode())] == client.seed:
            elsewhere = unique("nokey")
        assert await client.execute("SET", elsewhere, "x") == b"OK"
        assert await client.execute("GET", elsewhere) == b"x"
        assert owner(redis_cluster, elsewhere).call("GET", elsewhere) == "x"
        await client.execute("DEL", key, key=key)
        await client.execute("DEL", elsewhere, key=elsewhere)


async def test_cluster_sharded_pubsub(redis_cluster: RedisCluster) -> None:
    # Channels on every master (a channel's slot decides its node, as for keys).
    channels: dict[int, str] = {}
    while len(channels) < 3:
        ch = unique("sch")
        channels.setdefault(owner(redis_cluster, ch).port, ch)
    rec = Recorder()
    async with open_redis(redis_cluster.url) as client:
        sub = Subscription(client, rec.on_message, rec.on_subscribed)
        for ch in channels.values():
            await sub.subscribe(ch)
        await rec.wait_until(lambda: sorted(rec.subscribed) == sorted(channels.values()))
        assert {a[1] for a in sub._nodes} == set(channels)  # one connection per master
        for i, ch in enumerate(channels.values()):
            assert await client.execute("SPUBLISH", ch, f"m{i}", key=ch) == 1
        await rec.wait_until(lambda: len(rec.messages) == 3)
        assert sorted(rec.messages) == sorted(
            (ch, f"m{i}".encode()) for i, ch in enumerate(channels.values())
        )


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("own-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def private_cluster(own_cluster: RedisCluster) -> RedisCluster:
    """A cluster of this module's own, whose slots and nodes its tests may move and restart."""
    for node in own_cluster.nodes:
        if not node.running:
            node.start()
    own_cluster.wait_ok()
    return own_cluster


async def test_cluster_slot_migration_ask_then_moved(private_cluster: RedisCluster) -> None:
    cluster = private_cluster
    tag = "{" + uuid.uuid4().hex + "}"
    slot = key_slot(tag.encode())
    source = owner(cluster, tag)
    target, third = (node for node in cluster.nodes if node is not source)
    source_id, target_id = source.call("CLUSTER", "MYID"), target.call("CLUSTER", "MYID")
    assert isinstance(source_id, str) and isinstance(target_id, str)
    old, new, p1, p2 = (f"{tag}:{name}" for name in ("old", "new", "p1", "p2"))
    channel = f"{tag}:live"
    rec = Recorder()
    # Seeded by the node told last about the move, so the map it gives may be stale.
    async with open_redis(third.url) as client:
        sub = Subscription(client, rec.on_message, rec.on_subscribed)
        await sub.subscribe(channel)
        await rec.wait_until(lambda: rec.subscribed == [channel])
        assert await client.execute("SET", old, "old", key=tag) == b"OK"

        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        # While the slot migrates, keys still on the source are served there and new ones
        # are redirected with ASK (one ASKING per command, also in a pipeline).
        assert await client.execute("GET", old, key=tag) == b"old"
        assert await client.execute("SET", new, "new", key=tag) == b"OK"
        assert await client.pipeline([("SET", p1, 1), ("SET", p2, 2)], key=tag) == [b"OK"] * 2
        assert client.stats.redirects == 2
        assert client._slots[slot] == (source.host, source.port)  # ASK is one-off

        source.call("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", old)
        for node in (target, source):
            node.call("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        # Now the source answers MOVED: the client follows and fixes its slot map.
        replies = await client.pipeline([("GET", k) for k in (old, new, p1, p2)], key=tag)
        assert replies == [b"old", b"new", b"1", b"2"]
        assert client._slots[slot] == (target.host, target.port)
        assert target.call("MGET", old, new, p1, p2) == ["old", "new", "1", "2"]

        # The shard channel moved with its slot: the subscription follows it, says so
        # (on_subscribed again), and messages published on the new owner arrive.
        await rec.wait_until(lambda: rec.subscribed == [channel, channel])
        assert await client.execute("SPUBLISH", channel, "moved", key=channel) == 1
        await rec.wait_until(lambda: rec.messages == [(channel, b"moved")])
        assert {a for a, n in sub._nodes.items() if channel in n.channels} == {
            (target.host, target.port)
        }
        third.call("CLUSTER", "SETSLOT", slot, "NODE", target_id)


async def test_cluster_resubscribes_after_a_master_restarts(private_cluster: RedisCluster) -> None:
    cluster = private_cluster
    node = cluster.nodes[1]
    channel = unique("sch")
    while owner(cluster, channel) is not node:
        channel = unique("sch")
    rec = Recorder()
    async with open_redis(cluster.url, max_backoff=0.2) as client:
        sub = Subscription(client, rec.on_message, rec.on_subscribed)
        await sub.subscribe(channel)
        await rec.wait_until(lambda: rec.subscribed == [channel])

        await trio.to_thread.run_sync(node.restart)
        # A restarted master answers CLUSTERDOWN for a while (its writable delay): the
        # subscription must keep trying until it is confirmed again.
        await rec.wait_until(lambda: rec.subscribed == [channel, channel], timeout=15)
        assert await retry(client, "SPUBLISH", channel, "back", key=channel) == 1
        await rec.wait_until(lambda: rec.messages == [(channel, b"back")])
