"""Channel actors over real sockets: fan-out order, catch-up, slow consumers, crashes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from gateway.actors.channel import ChannelActor
from gateway.app import Gateway, open_gateway
from gateway.config import Limits
from gateway.errors import CloseCode
from gateway.model import Position, Record
from gateway.protocol import MSGPACK
from gateway.protocol import frames as f
from tests.conftest import make_settings, token
from tests.rawclient import Raw, raw_client
from tests.rawsocket import RawSocket


async def _collect(c: Raw, channel: str, n: int, out: list[f.MessageEvent]) -> None:
    while len(out) < n:
        fr = await c.recv()
        if isinstance(fr, f.MessageEvent) and fr.channel == channel:
            out.append(fr)


async def test_many_clients_order_and_monotonic_acks(gateway: Gateway) -> None:
    url = gateway.ws_url
    n_subs, n_pubs, per_pub = 12, 4, 25
    total = n_pubs * per_pub
    received: list[list[f.MessageEvent]] = [[] for _ in range(n_subs)]
    acks: list[list[int]] = [[] for _ in range(n_pubs)]

    async def subscriber(i: int, ready: trio.Event) -> None:
        codec = MSGPACK if i % 2 else None
        kw = {"codec": codec} if codec else {}
        async with raw_client(url, token=token(f"sub{i}"), **kw) as c:
            await c.subscribe("room")
            ready.set()
            await _collect(c, "room", total, received[i])

    async def publisher(j: int) -> None:
        async with raw_client(url, token=token(f"pub{j}")) as c:
            await c.subscribe("room")
            for k in range(per_pub):
                await c.send(f.Publish(channel="room", cmid=f"{j}-{k}", body=f"{j}:{k}"))
                ack = await c.expect(f.Ack, skip=(f.MessageEvent,))
                acks[j].append(ack.offset)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(n_subs):
                ready = trio.Event()
                nursery.start_soon(subscriber, i, ready)
                await ready.wait()
            async with trio.open_nursery() as pubs:
                for j in range(n_pubs):
                    pubs.start_soon(publisher, j)
    for got in received:
        assert [m.offset for m in got] == list(range(1, total + 1))
        assert [m.body for m in got] == [m.body for m in received[0]]
    for j, offsets in enumerate(acks):
        assert offsets == sorted(offsets) and len(set(offsets)) == per_pub
        # A publisher's messages appear in its own send order.
        mine = [m.body for m in received[0] if m.sender == f"pub{j}"]
        assert mine == [f"{j}:{k}" for k in range(per_pub)]


@pytest.mark.parametrize("hot_window", [1000, 3])
async def test_catch_up_after_disconnect_returns_exactly_the_missed(
    tmp_path: Path, hot_window: int
) -> None:
    settings = make_settings(tmp_path, hot_window=hot_window)
    with trio.fail_after(20):
        async with open_gateway(settings) as gw:
            async with raw_client(gw.ws_url, token=token("pub")) as pub:
                await pub.subscribe("c")
                for i in range(5):
                    await pub.send(f.Publish(channel="c", cmid=f"a{i}", body=f"a{i}"))
                    await pub.expect(f.Ack, skip=(f.MessageEvent,))
                async with raw_client(gw.ws_url, token=token("reader")) as r:
                    replay, sub = await r.subscribe("c", since=Position("", 0))
                    # a since position from another epoch is a reset, not a replay
                    assert sub.reset and replay == []
                    last = Position(sub.epoch, sub.offset)
                for i in range(7):
                    await pub.send(f.Publish(channel="c", cmid=f"b{i}", body=f"b{i}"))
                    await pub.expect(f.Ack, skip=(f.MessageEvent,))
                async with raw_client(gw.ws_url, token=token("reader")) as r:
                    replay, sub = await r.subscribe("c", since=last)
                    assert [m.body for m in replay] == [f"b{i}" for i in range(7)]
                    assert [m.offset for m in replay] == list(range(6, 13))
                    assert sub.replayed == 7 and not sub.reset and sub.offset == 12
                    # And live continues right after, with no duplicate.
                    await pub.send(f.Publish(channel="c", cmid="live", body="live"))
                    live = await r.expect(f.MessageEvent)
                    assert live.offset == 13


async def test_resume_frame_resubscribes_all_positions(gateway: Gateway) -> None:
    url = gateway.ws_url
    with trio.fail_after(20):
        async with raw_client(url, token=token("pub")) as pub:
            positions = {}
            for ch in ("x", "y"):
                _, sub = await pub.subscribe(ch)
                positions[ch] = Position(sub.epoch, sub.offset)
            for ch in ("x", "y"):
                for i in range(3):
                    await pub.send(f.Publish(channel=ch, cmid=f"{ch}{i}", body=f"{ch}{i}"))
                    await pub.expect(f.Ack, skip=(f.MessageEvent,))
            async with raw_client(url) as c:
                await c.send(f.Resume(token=token("u"), session="old", positions=positions))
                await c.expect(f.Ready)
                got: dict[str, list[int]] = {"x": [], "y": []}
                subscribed = 0
                while subscribed < 2:
                    fr = await c.recv()
                    if isinstance(fr, f.MessageEvent):
                        got[fr.channel].append(fr.offset)
                    elif isinstance(fr, f.Subscribed):
                        subscribed += 1
                assert got == {"x": [1, 2, 3], "y": [1, 2, 3]}


async def test_restart_keeps_history(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with trio.fail_after(20):
        async with open_gateway(settings) as gw, raw_client(gw.ws_url, token=token("a")) as c:
            _, sub = await c.subscribe("keep")
            for i in range(5):
                await c.send(f.Publish(channel="keep", cmid=f"k{i}", body=f"k{i}"))
                await c.expect(f.Ack, skip=(f.MessageEvent,))
            epoch = sub.epoch
        async with open_gateway(settings) as gw, raw_client(gw.ws_url, token=token("a")) as c:
            replay, sub = await c.subscribe("keep", since=Position(epoch, 0))
            assert sub.epoch == epoch and sub.offset == 5
            assert [m.body for m in replay] == [f"k{i}" for i in range(5)]
            # cmids are remembered across the restart too
            await c.send(f.Publish(channel="keep", cmid="k0", body="again"))
            ack = await c.expect(f.Ack)
            assert ack.duplicate and ack.offset == 1


async def test_slow_consumer_is_shed_without_stalling_others(tmp_path: Path) -> None:
    limits = Limits(outbox_max_bytes=64 * 1024, rate_per_second=10_000, rate_burst=10_000)
    settings = make_settings(tmp_path, limits=limits)
    n = 600
    body = "z" * 8000
    with trio.fail_after(60):
        async with open_gateway(settings) as gw:
            slow = await RawSocket.connect(gw.ws_port, rcvbuf=4096)
            await slow.handshake()
            await slow.next_frame()
            await slow.send_frame(f.Auth(token=token("slow")))
            await slow.next_frame()
            await slow.send_frame(f.Subscribe(channel="busy"))
            assert isinstance(await slow.next_frame(), f.Subscribed)
            fast_got: list[f.MessageEvent] = []
            async with (
                raw_client(gw.ws_url, token=token("fast")) as fast,
                raw_client(gw.ws_url, token=token("pub")) as pub,
            ):
                await fast.subscribe("busy")
                await pub.subscribe("busy")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_collect, fast, "busy", n, fast_got)
                    for i in range(n):
                        await pub.send(f.Publish(channel="busy", cmid=str(i), body=body))
                        await pub.expect(f.Ack, skip=(f.MessageEvent,))
            assert [m.offset for m in fast_got] == list(range(1, n + 1))
            # The slow reader now reads what it was sent: a gap-free prefix, then 4101.
            offsets = []
            while True:
                try:
                    fr = await slow.next_frame()
                except ConnectionError as exc:
                    assert str(CloseCode.SLOW_CONSUMER.value) in str(exc)
                    break
                if isinstance(fr, f.MessageEvent):
                    offsets.append(fr.offset)
            assert offsets == list(range(1, len(offsets) + 1)) and len(offsets) < n
            text = gw.node.metrics.render().decode()
            assert 'gateway_drops_total{reason="slow_consumer"} 1.0' in text


async def test_crashing_channel_actor_is_contained(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = gateway.ws_url
    original = ChannelActor._fanout

    def explode(self: ChannelActor, batch: Sequence[Record]) -> None:
        if self.name == "doomed" and any(r.body == "boom" for r in batch):
            raise RuntimeError("injected fault")
        original(self, batch)

    monkeypatch.setattr(ChannelActor, "_fanout", explode)
    with trio.fail_after(20):
        async with (
            raw_client(url, token=token("a")) as c,
            raw_client(url, token=token("b")) as other,
        ):
            _, sub = await c.subscribe("doomed")
            await other.subscribe("fine")
            await c.send(f.Publish(channel="doomed", cmid="1", body="boom"))
            ack = await c.expect(f.Ack)
            gone = await c.expect(f.Unsubscribed)
            assert (gone.channel, gone.reason) == ("doomed", "restart")
            # The node is fine; resubscribing from the last position replays the message.
            monkeypatch.setattr(ChannelActor, "_fanout", original)
            replay, _ = await c.subscribe("doomed", since=Position(sub.epoch, sub.offset))
            assert [m.offset for m in replay] == [ack.offset]
            await other.send(f.Publish(channel="fine", cmid="2", body="still here"))
            assert (await other.expect(f.MessageEvent, skip=(f.Ack,))).body == "still here"
            text = gateway.node.metrics.render().decode()
            assert "gateway_actor_failures_total 1.0" in text


async def test_typing_reaches_others_only_and_is_throttled(gateway: Gateway) -> None:
    url = gateway.ws_url
    with trio.fail_after(10):
        async with raw_client(url, token=token("a")) as a, raw_client(url, token=token("b")) as b:
            await a.subscribe("t")
            await b.subscribe("t")
            await a.send(f.Typing(channel="t"))
            await a.send(f.Typing(channel="t"))  # throttled: dropped
            await a.send(f.Publish(channel="t", cmid="1", body="after typing"))
            typed = await b.expect(f.TypingEvent)
            assert (typed.channel, typed.user) == ("t", "a") and typed.expires_ms > 0
            assert (await b.expect(f.MessageEvent)).body == "after typing"
            # a never sees its own typing event
            assert isinstance(await a.recv(), f.Ack | f.MessageEvent)
            assert isinstance(await a.recv(), f.Ack | f.MessageEvent)


async def test_idle_channel_actor_stops(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, channel_idle_timeout=0.1)
    with trio.fail_after(10):
        async with open_gateway(settings) as gw:
            async with raw_client(gw.ws_url, token=token("a")) as c:
                await c.subscribe("brief")
                assert gw.node.registry.get("brief") is not None
            while gw.node.registry.get("brief") is not None:
                await trio.sleep(0.05)


async def test_long_resume_from_the_hot_window_is_paced_not_shed(tmp_path: Path) -> None:
    limits = Limits(outbox_max_bytes=512 * 1024, rate_per_second=10_000, rate_burst=10_000)
    settings = make_settings(tmp_path, limits=limits)
    n, body = 400, "q" * 16_000
    with trio.fail_after(60):
        async with open_gateway(settings) as gw:
            async with raw_client(gw.ws_url, token=token("pub")) as pub:
                _, sub = await pub.subscribe("big")
                for i in range(n):
                    await pub.send(f.Publish(channel="big", cmid=str(i), body=body))
                    await pub.expect(f.Ack, skip=(f.MessageEvent,))
            async with raw_client(gw.ws_url, token=token("late")) as late:
                replay, done = await late.subscribe("big", since=Position(sub.epoch, 0))
                assert [m.offset for m in replay] == list(range(1, n + 1))
                assert done.replayed == n and not done.truncated
            assert 'reason="slow_consumer"' not in gw.node.metrics.render().decode()
