"""The SDK and the log events that are not messages (edits, deletes, reactions, threads,
member and channel events), against the fake gateway in ``fake_gateway.py``."""

from __future__ import annotations

import pytest
import trio

from gateway.client import (
    Ack,
    ChannelEvent,
    ChannelInfo,
    ChannelReset,
    Disconnected,
    LogEvent,
    MemberEvent,
    MessageDeleted,
    MessageEvent,
    MessageUpdated,
    Position,
    PublishError,
    ReactionEvent,
    Reconnected,
    ThreadEvent,
    open_client,
    thread_channel,
    thread_of,
)
from gateway.client import Client as SDKClient
from gateway.protocol import frames as f
from tests.client.fake_gateway import FakeGateway
from tests.client.test_sdk import FAST, TIMEOUT, next_event

LOG_EVENTS = (
    MessageEvent,
    MessageUpdated,
    MessageDeleted,
    ReactionEvent,
    ThreadEvent,
    MemberEvent,
    ChannelEvent,
)


async def next_entry(client: SDKClient) -> LogEvent:
    event = await next_event(client, *LOG_EVENTS)
    assert isinstance(event, LOG_EVENTS)
    return event


def member(channel: str, user: str, joined: bool = True) -> MemberEvent:
    return MemberEvent(channel=channel, offset=0, epoch="", user=user, joined=joined, by=user, ts=1)


# ------------------------------------------------------------------ calls and acks


async def test_edit_delete_react_are_acked_and_delivered(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            await client.subscribe("general")
            posted = await client.publish("general", "helo")
            edited = await client.edit("general", posted.id, "hello", version=1, cmid="e1")
            assert (edited.cmid, edited.offset, edited.version, edited.duplicate) == (
                "e1",
                2,
                2,
                False,
            )
            reacted = await client.react("general", posted.id, ":tada:")
            assert (reacted.offset, reacted.version) == (3, 2)
            unreacted = await client.react("general", posted.id, ":tada:", add=False)
            deleted = await client.delete("general", posted.id)
            assert (unreacted.offset, deleted.offset, deleted.version) == (4, 5, 3)
            again = await client.edit("general", posted.id, "hello", version=1, cmid="e1")
            assert (again.offset, again.version, again.duplicate) == (2, 2, True)
            got = [await next_entry(client) for _ in range(5)]
            assert [type(e) for e in got] == [
                MessageEvent,
                MessageUpdated,
                ReactionEvent,
                ReactionEvent,
                MessageDeleted,
            ]
            assert [e.offset for e in got] == [1, 2, 3, 4, 5]
            update, plus, minus = got[1], got[2], got[3]
            assert isinstance(update, MessageUpdated) and (update.body, update.version) == (
                "hello",
                2,
            )
            assert isinstance(plus, ReactionEvent) and (plus.added, plus.count) == (True, 1)
            assert isinstance(minus, ReactionEvent) and (minus.added, minus.count) == (False, 0)
            assert client.positions["general"] == Position("e1", 5)
            stats = client.statistics()
            assert (stats.messages_delivered, stats.changes_delivered) == (1, 4)
            assert stats.publishes_sent == 6 and stats.pending_publishes == 0


async def test_refused_changes_raise_publish_error(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            with pytest.raises(PublishError) as info:
                await client.react("general", "e1-1", "+1", cmid="r0")
            assert (info.value.code, info.value.cmid) == ("not_subscribed", "r0")
            await client.subscribe("general")
            posted = await client.publish("general", "x")
            with pytest.raises(PublishError) as info:
                await client.edit("general", posted.id, "y", version=2, cmid="stale")
            assert (info.value.code, info.value.channel) == ("stale_version", "general")
            with pytest.raises(PublishError) as info:
                await client.delete("general", "e1-99")
            assert info.value.code == "not_found"
            assert client.statistics().pending_publishes == 0


async def test_change_arguments_are_validated(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            with pytest.raises(ValueError, match="version"):
                await client.edit("general", "e1-1", "x", version=0)
            with pytest.raises(ValueError, match="version"):
                await client.edit("general", "e1-1", "x", version=True)
            with pytest.raises(ValueError, match="body"):
                await client.edit("general", "e1-1", "", version=1)
            with pytest.raises(ValueError, match="message_id"):
                await client.delete("general", "")
            with pytest.raises(ValueError, match="emoji"):
                await client.react("general", "e1-1", "")
            with pytest.raises(ValueError, match="cmid"):
                await client.react("general", "e1-1", "+1", cmid="~mine")
            with pytest.raises(ValueError, match="channel"):
                await client.react("bad channel", "e1-1", "+1")
            with pytest.raises(PublishError) as info:
                await client.edit("general", "e1-1", "é" * 9000, version=1)
            assert info.value.code == "too_large"
            assert fake.frames(f.Edit) == fake.frames(f.React) == []


# ------------------------------------------------------------------ exactly once


async def test_resume_replays_changes_once_from_the_last_entry(fake: FakeGateway) -> None:
    """Positions advance on every log entry: the resume starts after the last change seen,
    and changes re-sent by the server are dropped like messages."""
    fake.replay_overlap = 3  # the server re-sends three entries the client already has
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            await client.subscribe("general")
            posted = await client.publish("general", "m1")
            await client.react("general", posted.id, "+1")
            await client.edit("general", posted.id, "m1!", version=1)
            await fake.append_entry(member("general", "carol"))
            seen = [await next_entry(client) for _ in range(4)]
            assert [e.offset for e in seen] == [1, 2, 3, 4]
            fake.reject_next = 10**6
            await fake.close_all(4101, "slow consumer")
            await fake.wait_for(lambda: fake.rejected > 0)
            await fake.append_entry(member("general", "carol", joined=False))  # 5, missed
            await fake.append("general", "m6")  # missed
            fake.reject_next = 0
            assert isinstance(await next_event(client), Disconnected)
            assert isinstance(await next_event(client), Reconnected)
            info = ChannelInfo(
                id="general",
                name="general",
                kind="public",
                topic="t",
                archived=False,
                position=0,
                version=2,
            )
            await fake.append_entry(
                ChannelEvent(
                    channel="general", offset=0, epoch="", what="updated", info=info, by="x", ts=1
                )
            )
            after = [await next_entry(client) for _ in range(3)]
            assert [(type(e), e.offset) for e in after] == [
                (MemberEvent, 5),
                (MessageEvent, 6),
                (ChannelEvent, 7),
            ]
            resume = fake.frames(f.Resume)
            assert resume[0].positions == {"general": Position("e1", 4)}  # type: ignore[attr-defined]
            stats = client.statistics()
            assert stats.duplicates_dropped == 3
            assert (stats.messages_delivered, stats.changes_delivered) == (2, 5)


async def test_change_of_a_new_epoch_gives_reset_notice(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            await client.subscribe("general")
            await fake.append("general", "old")
            fake.new_epoch("general", "e2")
            await fake.append_entry(member("general", "dave"))
            assert isinstance(await next_entry(client), MessageEvent)
            assert await next_event(client) == ChannelReset(
                "general", Position("e1", 1), Position("e2", 1), reset=True, truncated=False
            )
            joined = await next_entry(client)
            assert isinstance(joined, MemberEvent) and joined.epoch == "e2"
            assert client.positions["general"] == Position("e2", 1)


async def test_unacked_edit_is_resent_with_same_cmid_and_applied_once(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            await client.subscribe("general")
            posted = await client.publish("general", "helo")
            fake.store_without_ack = 1  # applied, but the ack is lost with the connection
            acks: list[Ack] = []

            async def edit() -> None:
                acks.append(await client.edit("general", posted.id, "hello", version=1))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(edit)
                await fake.wait_for(lambda: len(fake.logs["general"]) == 2)
                await fake.close_all(4104, "actor failed")
            edits = fake.frames(f.Edit)
            assert len(edits) == 2 and edits[0] == edits[1]
            assert (acks[0].cmid, acks[0].offset, acks[0].version) == (edits[0].cmid, 2, 2)  # type: ignore[attr-defined]
            assert acks[0].duplicate is True
            got = [await next_entry(client) for _ in range(2)]
            assert [type(e) for e in got] == [MessageEvent, MessageUpdated]
            await fake.append("general", "next")
            assert (await next_entry(client)).offset == 3  # the update came once
            assert client.statistics().publishes_resent == 1


async def test_dropped_react_and_delete_are_resent(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice", **FAST) as client:
            await client.subscribe("general")
            posted = await client.publish("general", "x")
            fake.drop_publishes = 2  # both frames vanish with the connection
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.react, "general", posted.id, "+1")
                nursery.start_soon(client.delete, "general", posted.id)
                await fake.wait_for(lambda: len(fake.frames(f.React) + fake.frames(f.Delete)) == 2)
                await fake.close_all(4100, "draining")
            assert len(fake.frames(f.React)) == len(fake.frames(f.Delete)) == 2
            kinds = sorted(type(e).__name__ for e in fake.logs["general"][1:])
            assert kinds == ["MessageDeleted", "ReactionEvent"]


# ------------------------------------------------------------------ threads


async def test_thread_reply_is_acked_on_the_thread_log(fake: FakeGateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(fake.url, "tok:alice") as client:
            await client.subscribe("general")
            parent = await client.publish("general", "topic")
            reply = await client.publish("general", "a reply", thread=parent.id, cmid="t1")
            assert (reply.channel, reply.offset, reply.cmid) == ("general:t1", 1, "t1")
            assert thread_of(parent) == thread_of(reply) == "general:t1"
            again = await client.publish("general", "a reply", thread=parent.id, cmid="t1")
            assert (again.channel, again.duplicate) == ("general:t1", True)
            summary = [await next_entry(client) for _ in range(2)][1]
            assert isinstance(summary, ThreadEvent)
            assert (summary.id, summary.replies, summary.offset) == (parent.id, 1, 2)
            assert thread_of(summary) == "general:t1"
            await client.subscribe(thread_of(summary), since=Position(reply.epoch, 0))
            replayed = await next_entry(client)
            assert isinstance(replayed, MessageEvent)
            assert (replayed.channel, replayed.body, replayed.thread) == (
                "general:t1",
                "a reply",
                parent.id,
            )
            assert thread_of(replayed) == "general:t1"
            await client.react("general:t1", replayed.id, "+1")
            reaction = await next_entry(client)
            assert isinstance(reaction, ReactionEvent) and thread_of(reaction) == "general:t1"
            with pytest.raises(PublishError) as info:
                await client.publish("general", "x", thread="e1-42")
            assert (info.value.code, info.value.channel) == ("not_found", "general")


def test_thread_helpers() -> None:
    assert thread_channel("room", 5) == "room:t5"
    with pytest.raises(ValueError, match="thread"):
        thread_channel("room:t5", 1)
    with pytest.raises(ValueError):
        thread_channel("room", 0)
    with pytest.raises(ValueError, match="too long"):
        thread_channel("r" * 127, 5)
    message = MessageEvent(
        channel="room", offset=7, epoch="e", id="e-7", sender="a", cmid="c", body="b", ts=1
    )
    assert thread_of(message) == "room:t7"
    publish_ack = Ack(cmid="c", channel="room", offset=7, epoch="e", id="e-7")
    assert thread_of(publish_ack) == "room:t7"
    edit_ack = Ack(cmid="c", channel="room", offset=8, epoch="e", id="e-8", version=2)
    with pytest.raises(ValueError, match="edit"):
        thread_of(edit_ack)
    deleted = MessageDeleted(channel="room", offset=9, epoch="e", id="e-7", version=2, by="a", ts=1)
    assert thread_of(deleted) == "room:t7"
