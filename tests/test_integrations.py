"""The integration event stream: written behind by the Redis bus, read by consumer groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import trio

from gateway.bus.redis import RedisBus, open_redis_bus
from gateway.integrations import Event, consume_events
from gateway.redis import open_redis
from gateway.store.sqlite import open_sqlite_store
from tests.conftest import SECRET

TIMEOUT = 30


@asynccontextmanager
async def bus_on(tmp_path: Path, redis_url: str, prefix: str) -> AsyncIterator[RedisBus]:
    async with (
        open_sqlite_store(str(tmp_path / "m.sqlite3")) as store,
        open_redis(redis_url) as redis,
        open_redis_bus(redis, store, prefix=prefix, persist_interval=0.01) as bus,
    ):
        yield bus


async def _read(redis_url: str, prefix: str, group: str, consumer: str, n: int) -> list[Event]:
    got: list[Event] = []
    stop = trio.Event()

    async def handle(event_id: str, event: Event) -> None:
        got.append(event)
        if len(got) >= n:
            stop.set()

    async with open_redis(redis_url) as redis:
        await consume_events(
            redis, prefix, group, consumer, handle, block_ms=100, stop=stop, claim_after=0.3
        )
    return got


async def test_every_message_is_announced_once_it_is_stored(tmp_path: Path, redis_url: str) -> None:
    prefix = "ev" + uuid.uuid4().hex[:8]
    with trio.fail_after(TIMEOUT):
        async with open_redis(redis_url) as redis:
            await redis.execute("XGROUP", "CREATE", f"{prefix}:events", "audit", "$", "MKSTREAM")
        async with bus_on(tmp_path, redis_url, prefix) as bus:
            sent = [
                (await bus.append("general", sender="alice", cmid=f"c{i}", body=f"m{i}")).record
                for i in range(10)
            ]
            await bus.append("general", sender="alice", cmid="c0", body="m0")  # a duplicate
        events = await _read(redis_url, prefix, "audit", "w1", 11)
        assert events[0]["type"] == "channel.created" and events[0]["channel"] == "general"
        created = events[1:]
        assert [e["type"] for e in created] == ["message.created"] * 10
        assert [e["id"] for e in created] == [r.id for r in sent]
        assert [e["body"] for e in created] == [f"m{i}" for i in range(10)]
        assert {e["sender"] for e in created} == {"alice"}
        async with open_redis(redis_url) as redis:
            pending = await redis.execute("XPENDING", f"{prefix}:events", "audit")
            assert pending[0] == 0  # all acknowledged
            length = await redis.execute("XLEN", f"{prefix}:events")
            assert length == 11  # the duplicate announced nothing


async def test_a_dead_consumers_events_are_claimed_by_another(
    tmp_path: Path, redis_url: str
) -> None:
    prefix = "ev" + uuid.uuid4().hex[:8]
    with trio.fail_after(TIMEOUT):
        async with open_redis(redis_url) as redis:
            await redis.execute("XGROUP", "CREATE", f"{prefix}:events", "g", "$", "MKSTREAM")
        async with bus_on(tmp_path, redis_url, prefix) as bus:
            for i in range(5):
                await bus.append("c", sender="bob", cmid=f"x{i}", body=f"b{i}")

        class Died(Exception):
            pass

        async def crash(event_id: str, event: Event) -> None:
            raise Died  # read but never acknowledged

        async with open_redis(redis_url) as redis:
            with suppress(Died):
                await consume_events(redis, prefix, "g", "dead", crash, block_ms=100)
        # w2 sees nothing new, then claims what "dead" held after claim_after
        events = await _read(redis_url, prefix, "g", "w2", 6)
        assert [e["type"] for e in events] == ["channel.created"] + ["message.created"] * 5


async def test_gateway_events_command_prints_json_lines(tmp_path: Path, redis_url: str) -> None:
    prefix = "ev" + uuid.uuid4().hex[:8]
    with trio.fail_after(TIMEOUT):
        async with bus_on(tmp_path, redis_url, prefix) as bus:
            for i in range(3):
                await bus.append("news", sender="carol", cmid=f"n{i}", body=f"hello {i}")
        env = dict(
            os.environ,
            GATEWAY_REDIS_URL=redis_url,
            GATEWAY_REDIS_PREFIX=prefix,
            GATEWAY_JWT_SECRET=SECRET,
        )
        proc = _spawn_events(env)
        try:
            assert proc.stdout is not None
            lines = [await trio.to_thread.run_sync(proc.stdout.readline) for _ in range(4)]
        finally:
            proc.kill()
            proc.wait()
        events = [json.loads(line) for line in lines]
        assert [e["type"] for e in events] == ["channel.created"] + ["message.created"] * 3
        assert [e["body"] for e in events[1:]] == ["hello 0", "hello 1", "hello 2"]
        assert all(e["event_id"] for e in events)


def _spawn_events(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "events", "--group", "cli", "--from-start"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_gateway_events_needs_redis() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "events", "--group", "x"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2 and "GATEWAY_REDIS_URL" in out.stderr
