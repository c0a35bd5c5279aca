"""The Redis test infrastructure itself (tests/services.py) against real redis-server processes."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest
import redis
import redis.cluster

from tests.services import (
    CLUSTER_SLOTS,
    RedisCluster,
    RedisServer,
    find_binary,
    free_port,
    ping,
)


def unique(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex}"


def test_standalone_ping_set_get(redis_url: str, redis_server: RedisServer) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}"
    assert redis_server.running
    assert redis_server.command("PING") == "PONG"
    key = unique("svc")
    assert redis_server.command("SET", key, "hello world") == "OK"
    assert redis_server.command("GET", key) == "hello world"
    assert redis_server.call("GET", key) == "hello world"
    assert redis_server.call("CONFIG", "GET", "appendfsync") == ["appendfsync", "always"]


def test_redis_url_works_with_redis_py(redis_url: str) -> None:
    key = unique("svc")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.ping()
        client.set(key, "v")
        assert client.get(key) == "v"
    finally:
        client.close()


def test_stop_and_restart_keeps_data(fresh_redis: RedisServer) -> None:
    port, url = fresh_redis.port, fresh_redis.url
    assert fresh_redis.command("SET", "k", "survives-sigterm") == "OK"
    fresh_redis.stop()
    assert not fresh_redis.running
    assert not ping("127.0.0.1", port)
    fresh_redis.restart()
    assert (fresh_redis.port, fresh_redis.url) == (port, url)
    assert fresh_redis.command("GET", "k") == "survives-sigterm"


def test_kill_9_keeps_acknowledged_writes(fresh_redis: RedisServer) -> None:
    for i in range(50):
        assert fresh_redis.command("SET", f"k{i}", f"v{i}") == "OK"
    assert fresh_redis.call("INCRBY", "counter", 7) == 7
    fresh_redis.kill()
    assert not fresh_redis.running
    assert not fresh_redis.ping()
    fresh_redis.restart()
    assert fresh_redis.command("GET", "k49") == "v49"
    assert fresh_redis.call("DBSIZE") == 51
    assert fresh_redis.call("GET", "counter") == "7"


def test_pause_and_resume(fresh_redis: RedisServer) -> None:
    fresh_redis.pause()
    assert fresh_redis.running and fresh_redis.paused
    assert not fresh_redis.ping(timeout=0.3)
    fresh_redis.resume()
    assert fresh_redis.ping()
    fresh_redis.pause()
    fresh_redis.stop()  # stopping a paused server works (SIGCONT, then SIGTERM)
    assert not fresh_redis.running


def test_flushall(fresh_redis: RedisServer) -> None:
    fresh_redis.command("SET", "a", "1")
    fresh_redis.flushall()
    assert fresh_redis.call("DBSIZE") == 0


def test_explicit_port_and_context_manager(tmp_path: Path) -> None:
    port = free_port()
    with RedisServer(tmp_path, port) as server:
        assert server.port == port
        assert ping("127.0.0.1", port)
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
    assert not server.running
    assert not ping("127.0.0.1", port)


def test_start_failure_reports_log(tmp_path: Path) -> None:
    first = RedisServer(tmp_path / "a")
    with first:
        clash = RedisServer(tmp_path / "b", first.port)
        with pytest.raises(RuntimeError, match=f"redis-server on port {first.port}") as info:
            clash.start()
        assert "redis.log" in str(info.value)
        assert not clash.running


def test_cluster_covers_all_slots_with_three_masters(redis_cluster: RedisCluster) -> None:
    assert len(redis_cluster.nodes) == 3
    assert redis_cluster.url == redis_cluster.nodes[0].url
    assert redis_cluster.urls == [node.url for node in redis_cluster.nodes]
    for node in redis_cluster.nodes:
        info = node.command("CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert "cluster_slots_assigned:16384" in info
        assert "cluster_known_nodes:3" in info
        assert redis_cluster.slots(node) == redis_cluster.slots()
    ranges = redis_cluster.slots()
    assert sum(last - first + 1 for first, last, _ in ranges) == CLUSTER_SLOTS
    assert {port for _, _, port in ranges} == {node.port for node in redis_cluster.nodes}
    # contiguous, no overlap
    assert ranges[0][0] == 0 and ranges[-1][1] == CLUSTER_SLOTS - 1
    for (_, last, _), (first, _, _) in itertools.pairwise(ranges):
        assert first == last + 1


def owner(ranges: list[tuple[int, int, int]], slot: int) -> int:
    return next(port for first, last, port in ranges if first <= slot <= last)


def test_cluster_redirects_across_slots(redis_cluster: RedisCluster) -> None:
    seed = redis_cluster.nodes[0]
    ranges = redis_cluster.slots()
    # find one key per master
    keys: dict[int, str] = {}
    while len(keys) < len(redis_cluster.nodes):
        key = unique("svc")
        slot = seed.call("CLUSTER", "KEYSLOT", key)
        assert isinstance(slot, int)
        keys.setdefault(owner(ranges, slot), key)
    for port, key in keys.items():
        assert seed.command("-c", "SET", key, f"on-{port}") == "OK"
    for port, key in keys.items():
        assert seed.command("-c", "GET", key) == f"on-{port}"
        node = next(n for n in redis_cluster.nodes if n.port == port)
        assert node.call("GET", key) == f"on-{port}"  # really stored on its owner
    # without -c a node refuses keys it does not own
    foreign = next(key for port, key in keys.items() if port != seed.port)
    assert seed.command("GET", foreign).startswith("MOVED")


def test_cluster_url_works_with_redis_py(redis_cluster: RedisCluster) -> None:
    client = redis.cluster.RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    try:
        keys = [unique(f"svc{i}") for i in range(20)]
        for key in keys:
            client.set(key, key[::-1])
        assert [client.get(key) for key in keys] == [key[::-1] for key in keys]
        assert len(client.get_primaries()) == 3  # type: ignore[no-untyped-call]
    finally:
        client.close()


def test_missing_binary_raises_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    message = r"redis-server not found on PATH: \./scripts/test installs it \(apt-get install"
    with pytest.raises(RuntimeError, match=message):
        find_binary("redis-server")
    with pytest.raises(RuntimeError, match=message):
        RedisServer(tmp_path).start()
    with pytest.raises(RuntimeError, match=r"redis-cli not found on PATH: \./scripts/test"):
        find_binary("redis-cli")
    with pytest.raises(RuntimeError, match=message):
        RedisCluster(tmp_path / "cluster").start()
