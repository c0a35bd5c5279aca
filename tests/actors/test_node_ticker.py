"""The node's ticker: heartbeats and deadlines per connection, without scanning every
connection on every tick (a deadline heap; a full scan of 10,000 connections blocked the
event loop for 16 ms of every second on the bench VM)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import trio
from wsproto.events import Ping

from gateway.actors import connection as connection_module
from gateway.actors.connection import Connection
from gateway.app import open_gateway
from gateway.errors import CloseCode
from gateway.protocol import frames as f
from tests.conftest import make_settings, token
from tests.rawsocket import RawSocket


async def _ready(port: int, user: str) -> RawSocket:
    s = await RawSocket.connect(port)
    await s.handshake()
    await s.next_frame()  # hello
    await s.send_frame(f.Auth(token=token(user)))
    assert isinstance(await s.next_frame(), f.Ready)
    return s


class _NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


async def test_a_tick_looks_only_at_connections_with_a_deadline_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # first pings a whole interval away: with heartbeat 25 s and idle 75 s, nothing is due
    monkeypatch.setattr(connection_module, "random", _NoJitter())
    settings = make_settings(tmp_path)
    with trio.fail_after(20):
        async with open_gateway(settings) as gw:
            node = gw.node
            sockets = [await _ready(gw.ws_port, f"u{i}") for i in range(40)]
            checked: list[Connection] = []
            ticks = 0
            tick = trio.Event()
            real_check, real_reap = node._check, node.registry.reap_idle

            def check(conn: Connection, now: float, wall: float) -> None:
                checked.append(conn)
                real_check(conn, now, wall)

            def reap() -> int:
                nonlocal ticks, tick
                ticks += 1
                tick.set()
                tick = trio.Event()
                return real_reap()

            node._check = check  # type: ignore[method-assign]
            node.registry.reap_idle = reap  # type: ignore[method-assign]
            while ticks < 3:
                await tick.wait()
            assert checked == []  # a full scan would have looked at 40 connections a tick
            assert len(node.connections) == 40
            for s in sockets:
                await s.aclose()


async def test_heartbeats_go_on_every_interval_while_the_client_answers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, heartbeat_interval=0.5, idle_timeout=2.5)
    with trio.fail_after(20):
        async with open_gateway(settings) as gw:
            s = await _ready(gw.ws_port, "a")
            pings = 0
            while pings < 4:  # 4 intervals: longer than the idle timeout
                ev = await s.next_event()
                if isinstance(ev, Ping):
                    pings += 1
                    await s.send_event(ev.response())  # the pong counts as traffic
            assert len(gw.node.connections) == 1
            # then silence: closed for idleness, the deadline rescheduled after each ping
            close = await s.wait_close()
            assert close.code == CloseCode.IDLE_TIMEOUT


async def test_a_token_that_expires_sooner_than_any_other_deadline_still_ends_the_session(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, jwt_leeway=0.0)  # heartbeat 25 s, idle 75 s
    with trio.fail_after(20):
        async with open_gateway(settings) as gw:
            s = await RawSocket.connect(gw.ws_port)
            await s.handshake()
            await s.next_frame()
            await s.send_frame(f.Auth(token=token("a", ttl=1.5)))
            assert isinstance(await s.next_frame(), f.Ready)
            close = await s.wait_close()
            assert close.code == CloseCode.SESSION_EXPIRED


async def test_closed_connections_do_not_pile_up_in_the_deadline_heap(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_gateway(make_settings(tmp_path)) as gw:
            node = gw.node
            keep = await _ready(gw.ws_port, "stays")
            for i in range(1100):  # churn: each leaves a heap entry due in 25 s
                s = await _ready(gw.ws_port, f"u{i}")
                await s.aclose()
            while len(node.connections) > 1:
                await trio.sleep(0.01)
            assert len(node._due) <= 2 * len(node.connections) + 1024 + 1
            await keep.aclose()


async def test_connections_opened_together_do_not_ping_together(tmp_path: Path) -> None:
    """A reconnect storm (a deploy) would otherwise put every ping of those connections in
    the same tick, interval after interval."""
    settings = make_settings(tmp_path, heartbeat_interval=20.0)
    with trio.fail_after(20):
        async with open_gateway(settings) as gw:
            sockets = [await _ready(gw.ws_port, f"u{i}") for i in range(20)]
            pings = sorted(c.last_ping for c in gw.node.connections)
            # first pings spread over the first interval, not all due in the same second
            assert pings[-1] - pings[0] > 5.0
            for s in sockets:
                await s.aclose()


async def test_a_blocked_event_loop_shows_in_the_loop_lag_histogram(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with open_gateway(make_settings(tmp_path)) as gw:
            registry = gw.node.metrics.registry

            def lag() -> tuple[float, float]:
                count = registry.get_sample_value("gateway_event_loop_lag_seconds_count")
                total = registry.get_sample_value("gateway_event_loop_lag_seconds_sum")
                return count or 0.0, total or 0.0

            while lag()[0] < 1:  # the first tick
                await trio.sleep(0.05)
            before = lag()
            time.sleep(1.3)  # noqa: ASYNC251 - blocks the loop on purpose, across a tick
            while lag()[0] < before[0] + 1:
                await trio.sleep(0.05)
            assert lag()[1] - before[1] >= 0.25
