"""ChannelActor.attach without sockets: positions ahead of this node, resets."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio

from gateway.actors.channel import ChannelActor
from gateway.bus import Appended, BusStatistics
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.model import Position, Record
from gateway.protocol import JSON
from gateway.protocol import frames as f


def rec(offset: int) -> Record:
    return Record("c", offset, "E", f"E-{offset}", "u", f"m{offset}", "b", 0)


class LogOnly:
    """A bus whose log is ahead of what the actor has fanned out."""

    def __init__(self, head: int) -> None:
        self.records = [rec(i) for i in range(1, head + 1)]

    async def head(self, channel: str) -> Position:
        return Position("E", len(self.records))

    async def read(self, channel: str, after: int, limit: int) -> Sequence[Record]:
        return self.records[after : after + limit]

    async def append(self, *a: object, **k: object) -> Appended:
        raise NotImplementedError

    @asynccontextmanager
    async def open_tail(
        self, channel: str, after: int, on_ephemeral: object = None
    ) -> AsyncIterator[AsyncIterator[Sequence[Record]]]:
        async def nothing() -> AsyncIterator[Sequence[Record]]:
            # sleep(inf), not sleep_forever(): the same wait, but not NoReturn, so the
            # yield that makes this an async generator is not unreachable code
            await trio.sleep(math.inf)
            yield []

        yield nothing()

    def ephemeral(self, channel: str, kind: str, user: str) -> None:
        return None

    def statistics(self) -> BusStatistics:
        return BusStatistics()

    async def aclose(self) -> None:
        return None


class Sub:
    codec = JSON
    outbox_bytes = 0

    def __init__(self) -> None:
        self.frames: list[f.ServerFrame] = []

    def send_frame(self, data: bytes) -> None:
        self.frames.append(JSON.decode_server(data[2:] if data[1] < 126 else data[4:]))

    def send_ephemeral(self, data: bytes) -> None:
        self.send_frame(data)

    async def wait_outbox_below(self, nbytes: int) -> None:
        return None

    def channel_failed(self, channel: str) -> None:
        raise AssertionError


def actor_at(offset: int, head: int) -> ChannelActor:
    actor = ChannelActor("c", LogOnly(head), Metrics(), hot_window=100)  # type: ignore[arg-type]
    actor.epoch = "E"
    actor._fanout([rec(i) for i in range(1, offset + 1)])
    return actor


async def test_position_ahead_of_this_node_waits_for_the_fan_out() -> None:
    actor = actor_at(3, head=5)
    sub = Sub()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor.attach, sub, Position("E", 5), 100)
            await trio.testing.wait_all_tasks_blocked()
            assert sub.frames == []  # waiting, not reset
            actor._fanout([rec(4), rec(5)])
    assert sub.frames == [f.Subscribed(channel="c", epoch="E", offset=5)]


async def test_position_beyond_the_log_is_a_reset() -> None:
    actor = actor_at(3, head=3)
    sub = Sub()
    with trio.fail_after(5):
        await actor.attach(sub, Position("E", 9), 100)
    assert sub.frames == [f.Subscribed(channel="c", epoch="E", offset=3, reset=True)]


async def test_node_that_never_catches_up_is_a_retryable_error(autojump_clock: object) -> None:
    actor = actor_at(3, head=5)
    with pytest.raises(StoreUnavailable):
        await actor.attach(Sub(), Position("E", 5), 100)


async def test_replay_max_truncates() -> None:
    actor = ChannelActor("c", LogOnly(50), Metrics(), hot_window=10)  # type: ignore[arg-type]
    actor.epoch = "E"
    actor._fanout([rec(i) for i in range(1, 51)])
    sub = Sub()
    with trio.fail_after(5):
        await actor.attach(sub, Position("E", 0), 20)
    msgs = [m for m in sub.frames if isinstance(m, f.MessageEvent)]
    assert [m.offset for m in msgs] == list(range(1, 21))
    assert sub.frames[-1] == f.Subscribed(
        channel="c", epoch="E", offset=50, replayed=20, truncated=True
    )
