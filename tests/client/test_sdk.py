"""The client SDK against the fake gateway in ``fake_gateway.py``."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import gateway.client._conn as client_conn
from gateway.client import (
    Ack,
    ChannelReset,
    Client,
    ConnectionClosed,
    Disconnected,
    Event,
    MessageEvent,
    Position,
    PublishError,
    Reconnected,
    SubscribeError,
    TypingEvent,
    Unsubscribed,
    open_client,
)
from gateway.client._util import backoff_delay
from gateway.protocol import frames as f
from tests.client.fake_gateway import FakeGateway

TIMEOUT = 10
FAST: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.05}


async def next_event(client: Client, *kinds: type[Any]) -> Event:
    """The next event of one of ``kinds`` (any kind if none), skipping the others."""
    async for event in client.events():
        if not kinds or isinstance(event, kinds):
            return event
    raise AssertionError("events() ended")


async def next_message(client: Client) -> MessageEvent:
    event = await next_event(client, MessageEvent)
    assert isinstance(event, MessageEvent)
    return event


def bodies(fake: FakeGateway, channel: str = "general") -> list[str]:
    return [m.body for m in fake.messages(channel)]


# ------------------------------------------------------------------ basics


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_subscribe_publish_receive(fake: FakeGateway, codec: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", codec=codec) as client:
            assert client.user == "alice"
            assert client.session == "s1"
            sub = await client.subscribe("general")
            assert (sub.channel, sub.epoch, sub.offset) == ("general", "e1", 0)
            assert client.positions == {"general": Position("e1", 0)}
            ack = await client.publish("general", "hello", cmid="c1")
            assert isinstance(ack, Ack)
            assert (ack.cmid, ack.offset, ack.epoch, ack.duplicate) == ("c1", 1, "e1", False)
            message = await next_message(client)
            assert (message.sender, message.body, message.offset) == ("alice", "hello", 1)
            assert message.thread is None
            assert client.positions["general"] == Position("e1", 1)
        conn = fake.conns[0]
        expected = "gateway.v1.msgpack" if codec == "msgpack" else "gateway.v1.json"
        assert conn.codec.subprotocol == expected


async def test_two_clients_messages_and_typing(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_client(fake.url, "tok:alice") as alice,
            open_client(fake.url, "tok:bob", codec="json") as bob,
        ):
            await alice.subscribe("general")
            await bob.subscribe("general")
            await alice.typing("general")
            typing = await next_event(bob)
            assert typing == TypingEvent(channel="general", user="alice")
            await alice.publish("general", "hi bob")
            message = await next_message(bob)
            assert (message.sender, message.body) == ("alice", "hi bob")
            # alice does not get her own typing event: her first event is the message
            assert isinstance(await next_event(alice), MessageEvent)


async def test_ping_measures_round_trip(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            rtt = await client.ping()
            assert 0 < rtt < TIMEOUT
            assert [fr.nonce for fr in fake.frames(f.Ping)] == [1]  # type: ignore[attr-defined]


async def test_statistics_snapshot(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", max_events=7) as client:
            await client.subscribe("general")
            await client.publish("general", "x")
            await next_message(client)
            stats = client.statistics()
            assert stats.connected and stats.session == "s1"
            assert stats.connects == 1 and stats.subscriptions == 1
            assert stats.pending_publishes == 0 and stats.events_capacity == 7
            assert stats.messages_delivered == 1 and stats.publishes_sent == 1
            assert stats.frames_sent == 3  # auth, subscribe, publish
            assert stats.frames_received == 5  # hello, ready, subscribed, ack, message
            assert stats.bytes_sent > 0 and stats.bytes_received > 0
            assert stats.last_close_code is None


async def test_leaving_the_block_closes_with_1000_and_ends_events(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            pass
        await fake.wait_for(lambda: fake.conns[0].closed)
        assert fake.conns[0].close_code == 1000
        assert [event async for event in client.events()] == []
        with pytest.raises(ConnectionClosed) as info:
            await client.publish("general", "late")
        assert info.value.code == 1000


async def test_user_exception_is_not_wrapped(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(KeyError):
        async with open_client(fake.url, "tok:alice"):
            raise KeyError("mine")


async def test_outer_cancel_leaves_promptly(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        with trio.move_on_after(0.05) as scope:
            async with open_client(fake.url, "tok:alice") as client:
                await client.subscribe("general")
                await trio.sleep_forever()
        assert scope.cancelled_caught


async def test_arguments_are_validated(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            with pytest.raises(ValueError, match="channel"):
                await client.subscribe("bad channel")
            with pytest.raises(ValueError, match="channel"):
                await client.publish("general\n", "x")
            with pytest.raises(ValueError, match="body"):
                await client.publish("general", "")
            with pytest.raises(ValueError, match="cmid"):
                await client.publish("general", "x", cmid="c" * 65)
            with pytest.raises(PublishError) as info:
                await client.publish("general", "é" * 9000)  # 18000 bytes > 16384
            assert info.value.code == "too_large"
        with pytest.raises(ValueError, match="codec"):
            async with open_client(fake.url, "tok:alice", codec="xml"):
                pass


# ------------------------------------------------------------------ errors


async def test_bad_token_raises_from_open_client(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed) as info:
        async with open_client(fake.url, "nope"):
            raise AssertionError("unreachable")
    assert info.value.code == 4001
    assert info.value.may_resume is False
    assert info.value.reason == "bad token"


async def test_nothing_listening_raises_1006() -> None:
    with trio.fail_after(TIMEOUT):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        await listener.aclose()
        with pytest.raises(ConnectionClosed) as info:
            async with open_client(f"ws://127.0.0.1:{port}/ws", "tok:alice"):
                raise AssertionError("unreachable")
        assert info.value.code == 1006
        assert info.value.may_resume is True


async def test_publish_refused_raises_publish_error(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            with pytest.raises(PublishError) as info:
                await client.publish("general", "not subscribed", cmid="c9")
            assert (info.value.code, info.value.retryable) == ("not_subscribed", False)
            assert (info.value.cmid, info.value.channel) == ("c9", "general")
            assert client.statistics().pending_publishes == 0


async def test_subscribe_refused_raises_subscribe_error(fake: FakeGateway) -> None:
    fake.forbidden.add("secret")
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            with pytest.raises(SubscribeError) as info:
                await client.subscribe("secret")
            assert (info.value.code, info.value.channel) == ("forbidden", "secret")
            assert "secret" not in client.positions
            assert client.statistics().subscriptions == 0


# ------------------------------------------------------------------ reconnect and resume


async def test_resume_replays_missed_messages_exactly_once(fake: FakeGateway) -> None:
    fake.replay_overlap = 2  # the server re-sends two messages the client already has
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            await client.subscribe("general")
            for i in range(3):
                await fake.append("general", f"m{i}")
            assert [(await next_message(client)).body for _ in range(3)] == ["m0", "m1", "m2"]
            fake.reject_next = 10**6
            await fake.close_all(4101, "slow consumer")
            await fake.wait_for(lambda: fake.rejected > 0)
            for i in range(3, 6):
                await fake.append("general", f"m{i}")  # missed while disconnected
            fake.reject_next = 0
            assert await next_event(client) == Disconnected(4101, "slow consumer", True)
            reconnected = await next_event(client)
            assert isinstance(reconnected, Reconnected)
            assert reconnected.resumed == ("general",)
            assert reconnected.attempts == fake.rejected + 1
            await fake.append("general", "live")
            got = [(await next_message(client)).body for _ in range(4)]
            assert got == ["m3", "m4", "m5", "live"]
            resume = fake.frames(f.Resume)
            assert len(resume) == 1
            assert resume[0].positions == {"general": Position("e1", 3)}  # type: ignore[attr-defined]
            assert resume[0].session == "s1"  # type: ignore[attr-defined]
            stats = client.statistics()
            assert stats.duplicates_dropped == 2
            assert stats.connect_failures == fake.rejected
            assert client.session == f"s{len(fake.conns)}"


async def test_tcp_drop_resumes(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            await client.subscribe("general")
            await fake.live()[0].abort()
            disconnected = await next_event(client)
            assert isinstance(disconnected, Disconnected)
            assert (disconnected.code, disconnected.will_reconnect) == (1006, True)
            assert isinstance(await next_event(client), Reconnected)
            assert (await client.publish("general", "after")).offset == 1


async def test_unacked_publish_is_resent_with_same_cmid(fake: FakeGateway) -> None:
    fake.drop_publishes = 1  # the first publish frame vanishes
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            await client.subscribe("general")
            acks: list[Ack] = []

            async def publish() -> None:
                acks.append(await client.publish("general", "survivor"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                await fake.wait_for(lambda: len(fake.frames(f.Publish)) == 1)
                await fake.close_all(4100, "draining")
            publishes = fake.frames(f.Publish)
            assert len(publishes) == 2
            assert publishes[0].cmid == publishes[1].cmid == acks[0].cmid  # type: ignore[attr-defined]
            assert acks[0].duplicate is False
            assert bodies(fake) == ["survivor"]
            assert client.statistics().publishes_resent == 1


async def test_lost_ack_gives_duplicate_ack_and_one_message(fake: FakeGateway) -> None:
    fake.store_without_ack = 1  # stored, but the ack is lost with the connection
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            await client.subscribe("general")
            acks: list[Ack] = []

            async def publish() -> None:
                acks.append(await client.publish("general", "once", cmid="only-once"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                await fake.wait_for(lambda: len(fake.logs.get("general", [])) == 1)
                await fake.close_all(4104, "actor failed")
            assert (acks[0].cmid, acks[0].offset, acks[0].duplicate) == ("only-once", 1, True)
            assert bodies(fake) == ["once"]
            # the message itself is delivered exactly once
            assert (await next_message(client)).body == "once"
            await fake.append("general", "next")
            assert (await next_message(client)).body == "next"


async def test_publishes_wait_for_a_slot(fake: FakeGateway) -> None:
    fake.drop_publishes = 2
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", max_pending=2, **FAST) as client:
            await client.subscribe("general")
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(client.publish, "general", f"p{i}")
                await fake.wait_for(lambda: len(fake.frames(f.Publish)) == 2)
                await trio.testing.wait_all_tasks_blocked(cushion=0.02)
                assert client.statistics().pending_publishes == 2
                assert len(fake.frames(f.Publish)) == 2
                await fake.close_all(4100, "draining")
            assert sorted(bodies(fake)) == ["p0", "p1", "p2"]


async def test_rate_limited_drop_is_resent(
    fake: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_conn, "RESEND_DELAY", 0.01)
    fake.rate_drop_publishes = 1  # refused with a rate_limited error that has no ref
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            await client.subscribe("general")
            ack = await client.publish("general", "eventually")
            assert ack.offset == 1
            assert len(fake.frames(f.Publish)) == 2


async def test_rate_limited_nack_is_resent(
    fake: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_conn, "RESEND_DELAY", 0.01)
    fake.rate_nack_publishes = 2  # refused with rate_limited, ref = cmid
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            await client.subscribe("general")
            ack = await client.publish("general", "persistent", cmid="p1")
            assert (ack.cmid, ack.offset) == ("p1", 1)
            assert len(fake.frames(f.Publish)) == 3
            assert client.statistics().publishes_resent == 2


async def test_unavailable_nack_raises_retryable_publish_error(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            await client.subscribe("general")
            conn = fake.live()[0]
            fake.drop_publishes = 1
            async with trio.open_nursery() as nursery:

                async def publish() -> None:
                    with pytest.raises(PublishError) as info:
                        await client.publish("general", "x", cmid="u1")
                    assert (info.value.code, info.value.retryable) == ("unavailable", True)

                nursery.start_soon(publish)
                await fake.wait_for(lambda: len(fake.frames(f.Publish)) == 1)
                await conn.send(
                    f.Error(code="unavailable", message="store down", ref="u1", retryable=True)
                )


@pytest.mark.parametrize(("status", "retried"), [(503, True), (429, True), (403, False)])
async def test_http_refusal_on_reconnect(fake: FakeGateway, status: int, retried: bool) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            fake.reject_status = status
            fake.reject_next = 2
            await fake.close_all(4100, "draining")
            assert await next_event(client) == Disconnected(4100, "draining", True)
            last = await next_event(client)
            if retried:
                assert isinstance(last, Reconnected)
                assert last.attempts == 3
                assert client.statistics().connect_failures == 2
            else:
                assert last == Disconnected(1002, f"handshake refused with HTTP {status}", False)
                assert fake.rejected == 1


async def test_callable_token_is_called_per_connection(fake: FakeGateway) -> None:
    calls = 0

    async def token() -> str:
        nonlocal calls
        calls += 1
        await trio.lowlevel.checkpoint()
        return "tok:alice" if calls < 3 else "expired"

    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, token, **FAST) as client:
            await fake.close_all(4103, "idle")
            assert isinstance(await next_event(client, Reconnected), Reconnected)
            assert calls == 2
            await fake.close_all(4100, "draining")
            # the third token is refused: 4001 ends the client for good
            assert await next_event(client) == Disconnected(4100, "draining", True)
            assert await next_event(client) == Disconnected(4001, "bad token", False)
            assert [event async for event in client.events()] == []
            with pytest.raises(ConnectionClosed) as info:
                await client.ping()
            assert info.value.code == 4001


async def test_failing_token_callable(fake: FakeGateway) -> None:
    calls = 0

    async def token() -> str:
        nonlocal calls
        calls += 1
        await trio.lowlevel.checkpoint()
        if calls in (1, 3):
            raise OSError(f"token service down ({calls})")
        return "tok:alice"

    with trio.fail_after(TIMEOUT):
        # first connection: the callable's own exception reaches the caller
        with pytest.raises(OSError, match=r"down \(1\)"):
            async with open_client(fake.url, token, **FAST):
                raise AssertionError("unreachable")
        # on a reconnect it is one more failed attempt, retried with backoff
        async with open_client(fake.url, token, **FAST) as client:
            await fake.close_all(4105, "session expired")
            reconnected = await next_event(client, Reconnected)
            assert isinstance(reconnected, Reconnected)
            assert (reconnected.attempts, calls) == (2, 4)


async def test_non_resumable_close_fails_pending_calls(fake: FakeGateway) -> None:
    fake.drop_publishes = 1
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            await client.subscribe("general")
            errors: list[ConnectionClosed] = []

            async def publish() -> None:
                with pytest.raises(ConnectionClosed) as info:
                    await client.publish("general", "doomed")
                errors.append(info.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish)
                await fake.wait_for(lambda: len(fake.frames(f.Publish)) == 1)
                await fake.close_all(4003, "forbidden")
            assert (errors[0].code, errors[0].may_resume) == (4003, False)
            assert [event async for event in client.events()] == [
                Disconnected(4003, "forbidden", False)
            ]
            with pytest.raises(ConnectionClosed):
                await client.subscribe("other")
            assert len(fake.conns) == 1  # never reconnected
            assert client.statistics().last_close_code == 4003


async def test_reconnect_false_stops_on_resumable_close(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", reconnect=False) as client:
            await fake.close_all(4100, "draining")
            assert [event async for event in client.events()] == [
                Disconnected(4100, "draining", False)
            ]
            with pytest.raises(ConnectionClosed) as info:
                await client.ping()
            assert (info.value.code, info.value.may_resume) == (4100, True)


async def test_epoch_change_on_resume_gives_reset_notice(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            await client.subscribe("general")
            await client.publish("general", "old")
            await next_message(client)
            fake.reject_next = 10**6
            await fake.close_all(4100, "draining")
            await fake.wait_for(lambda: fake.rejected > 0)
            fake.new_epoch("general", "e2")  # the log is lost while the client is away
            await fake.append("general", "new-1")
            fake.reject_next = 0
            reset = await next_event(client, ChannelReset)
            assert reset == ChannelReset(
                "general", Position("e1", 1), Position("e2", 1), reset=True, truncated=False
            )
            assert client.positions["general"] == Position("e2", 1)
            await fake.append("general", "new-2")  # offset 2 of e2: delivered
            message = await next_message(client)
            assert (message.body, message.epoch, message.offset) == ("new-2", "e2", 2)


async def test_live_message_of_new_epoch_gives_reset_notice(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            await client.subscribe("general")
            await fake.append("general", "old")
            fake.new_epoch("general", "e9")
            await fake.append("general", "new")
            assert (await next_message(client)).body == "old"
            assert await next_event(client) == ChannelReset(
                "general", Position("e1", 1), Position("e9", 1), reset=True, truncated=False
            )
            assert (await next_message(client)).body == "new"


async def test_restart_resubscribes_from_last_position(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            await client.subscribe("general")
            await client.publish("general", "before")
            await next_message(client)
            conn = fake.live()[0]
            conn.subs.discard("general")
            await fake.append("general", "missed")  # while the channel restarts
            await conn.send(f.Unsubscribed(channel="general", reason="restart"))
            assert await next_event(client) == Unsubscribed(channel="general", reason="restart")
            assert (await next_message(client)).body == "missed"
            subscribes = fake.frames(f.Subscribe)
            assert subscribes[-1].since == Position("e1", 1)  # type: ignore[attr-defined]
            assert (await client.publish("general", "after")).offset == 3


async def test_forbidden_unsubscribe_is_final(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            await client.subscribe("general")
            conn = fake.live()[0]
            conn.subs.discard("general")
            await conn.send(f.Unsubscribed(channel="general", reason="forbidden"))
            assert await next_event(client) == Unsubscribed(channel="general", reason="forbidden")
            assert "general" not in client.positions
            await client.ping()  # a resubscribe would have been sent before this ping
            assert len(fake.frames(f.Subscribe)) == 1


async def test_unsubscribe_stops_delivery_and_resume(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            await client.subscribe("general")
            await client.subscribe("random")
            await client.unsubscribe("general")
            assert list(client.positions) == ["random"]
            await fake.append("general", "unseen")
            await fake.append("random", "seen")
            assert (await next_message(client)).body == "seen"
            await fake.close_all(4100, "draining")
            reconnected = await next_event(client, Reconnected)
            assert isinstance(reconnected, Reconnected)
            assert reconnected.resumed == ("random",)


async def test_subscribe_while_disconnected_completes_after_reconnect(
    fake: FakeGateway,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            fake.reject_next = 10**6
            await fake.close_all(4100, "draining")
            await fake.wait_for(lambda: fake.rejected > 0)
            assert not client.statistics().connected
            subscribed: list[f.Subscribed] = []

            async def subscribe() -> None:
                subscribed.append(await client.subscribe("late"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(subscribe)
                await trio.testing.wait_all_tasks_blocked()
                fake.reject_next = 0
            assert subscribed[0].channel == "late"
            assert fake.frames(f.Resume)[0].positions == {}  # type: ignore[attr-defined]


async def test_heartbeat_detects_a_dead_server(nursery: trio.Nursery) -> None:
    fake = FakeGateway(heartbeat_ms=50)
    await fake.start(nursery)
    fake.ignore_pings = True  # alive at TCP level, but answers nothing
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            disconnected = await next_event(client)
            fake.ignore_pings = False
            assert disconnected == Disconnected(1006, "heartbeat timeout", True)
            assert isinstance(await next_event(client), Reconnected)
            assert await client.ping() > 0


# ------------------------------------------------------------------ backpressure


async def test_full_event_buffer_stops_reading_without_loss(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", max_events=5) as client:
            await client.subscribe("general")
            for i in range(5):
                await fake.append("general", f"m{i}")
            # the buffer is full: an ephemeral event is dropped rather than waited for
            await fake.live()[0].send(f.TypingEvent(channel="general", user="bob"))
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            assert client.statistics().ephemeral_dropped == 1
            assert not client.statistics().reader_blocked
            for i in range(5, 30):
                await fake.append("general", f"m{i}")
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            stats = client.statistics()
            assert stats.events_buffered == 5
            assert stats.reader_blocked
            got = [await next_message(client) for _ in range(30)]
            assert [m.offset for m in got] == list(range(1, 31))
            assert not client.statistics().reader_blocked


async def test_writer_paces_to_announced_rate(nursery: trio.Nursery) -> None:
    limits = f.LimitsInfo(
        max_message_bytes=65536,
        max_body_bytes=16384,
        max_subscriptions=500,
        rate_per_second=100.0,
        rate_burst=3,
    )
    fake = FakeGateway(limits=limits)
    await fake.start(nursery)
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            await client.subscribe("general")
            start = trio.current_time()
            async with trio.open_nursery() as inner:
                for i in range(12):
                    inner.start_soon(client.publish, "general", f"p{i}")
            elapsed = trio.current_time() - start
            # burst 3 (two left after auth and subscribe): at least 10 frames paced at ~95/s
            assert elapsed >= 9 / 100
            assert len(bodies(fake)) == 12


def test_backoff_is_full_jitter_and_capped() -> None:
    assert backoff_delay(0, 0.2, 10.0, rand=lambda: 0.999) == pytest.approx(0.2, rel=0.01)
    assert backoff_delay(3, 0.2, 10.0, rand=lambda: 1.0) == pytest.approx(1.6)
    assert backoff_delay(50, 0.2, 10.0, rand=lambda: 1.0) == 10.0
    assert backoff_delay(5, 0.2, 10.0, rand=lambda: 0.0) == 0.0
