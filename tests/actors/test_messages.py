"""Edits, deletes, reactions and threads over the socket: rules, acks, events, resume."""

from __future__ import annotations

from typing import Any

import trio

from gateway.app import Gateway
from gateway.domain.model import ChannelKind, Role
from gateway.model import Position
from gateway.protocol import frames as f
from tests.conftest import token
from tests.rawclient import Raw, raw_client

LOG_EVENTS = (
    f.MessageEvent,
    f.MessageUpdated,
    f.MessageDeleted,
    f.ReactionEvent,
    f.ThreadEvent,
    f.MemberEvent,
    f.ChannelEvent,
)


async def _ack(c: Raw, frame: f.ClientFrame) -> f.Ack:
    await c.send(frame)
    ack: f.Ack = await c.expect(f.Ack, skip=LOG_EVENTS)
    return ack


async def _error(c: Raw, frame: f.ClientFrame) -> f.Error:
    await c.send(frame)
    err: f.Error = await c.expect(f.Error, skip=LOG_EVENTS)
    return err


async def _next(c: Raw, kind: type[Any]) -> Any:
    """The next frame of ``kind``; other log events and acks are passed over."""
    return await c.expect(kind, skip=(f.Ack, *LOG_EVENTS))


async def test_edit_delete_react_reach_subscribers_in_order(gateway: Gateway) -> None:
    url = gateway.ws_url
    with trio.fail_after(20):
        async with (
            raw_client(url, token=token("alice")) as alice,
            raw_client(url, token=token("bob")) as bob,
            raw_client(url, token=token("watcher")) as watch,  # only reads
        ):
            for c in (alice, bob, watch):
                await c.subscribe("room")
            msg = await _ack(alice, f.Publish(channel="room", cmid="m1", body="helo"))
            assert (await _next(watch, f.MessageEvent)).body == "helo"

            edit = f.Edit(channel="room", id=msg.id, cmid="e1", body="hello", version=1)
            ack = await _ack(alice, edit)
            assert ack.version == 2 and ack.offset == msg.offset + 1 and not ack.duplicate
            upd = await _next(watch, f.MessageUpdated)
            assert (upd.id, upd.version, upd.body, upd.by) == (msg.id, 2, "hello", "alice")
            # the retry of the same edit is acked again, not applied twice
            again = await _ack(alice, edit)
            assert again.duplicate and again.offset == ack.offset and again.version == 2
            # a stale edit and an edit by someone else are refused
            stale = f.Edit(channel="room", id=msg.id, cmid="e2", body="x", version=1)
            err = await _error(alice, stale)
            assert err.code == "stale_version" and err.ref == "e2"
            bobs = f.Edit(channel="room", id=msg.id, cmid="b1", body="x", version=2)
            assert (await _error(bob, bobs)).code == "forbidden"

            for user, c in (("alice", alice), ("bob", bob)):
                await _ack(c, f.React(channel="room", id=msg.id, cmid=f"r-{user}", emoji="👍"))
            seen = [await _next(watch, f.ReactionEvent) for _ in range(2)]
            assert [(e.user, e.count, e.added) for e in seen] == [
                ("alice", 1, True),
                ("bob", 2, True),
            ]
            unreact = f.React(channel="room", id=msg.id, cmid="r-x", emoji="👍", add=False)
            await _ack(bob, unreact)
            ev = await _next(watch, f.ReactionEvent)
            assert (ev.user, ev.added, ev.count) == ("bob", False, 1)

            deleted = await _ack(alice, f.Delete(channel="room", id=msg.id, cmid="d1"))
            assert deleted.version == 3
            tomb = await _next(watch, f.MessageDeleted)
            assert (tomb.id, tomb.by, tomb.version) == (msg.id, "alice", 3)
            late = f.React(channel="room", id=msg.id, cmid="r-late", emoji="🎉")
            assert (await _error(bob, late)).code == "conflict"


async def test_bad_changes_are_refused_with_codes(gateway: Gateway) -> None:
    with trio.fail_after(20):
        async with raw_client(gateway.ws_url, token=token("alice")) as alice:
            await alice.subscribe("room")
            msg = await _ack(alice, f.Publish(channel="room", cmid="m1", body="hi"))
            cases: list[tuple[f.ClientFrame, str]] = [
                (f.Edit(channel="room", id="nope", cmid="a", body="x", version=1), "not_found"),
                (
                    f.Edit(channel="room", id=msg.id + "0", cmid="b", body="x", version=1),
                    "not_found",
                ),
                (
                    f.React(channel="room", id=msg.id, cmid="c", emoji="not an emoji"),
                    "invalid_field",
                ),
                (f.Delete(channel="other", id=msg.id, cmid="d"), "not_subscribed"),
            ]
            for frame, code in cases:
                err = await _error(alice, frame)
                assert err.code == code, (frame, err)
            # an event is not a message: it cannot be edited
            ack = await _ack(alice, f.React(channel="room", id=msg.id, cmid="r", emoji=":ok:"))
            edit_event = f.Edit(channel="room", id=ack.id, cmid="e", body="x", version=1)
            assert (await _error(alice, edit_event)).code == "not_found"
            # the distinct-emoji limit
            from gateway.actors.messages import MAX_REACTION_KINDS

            # a change's cmid never collides with a message's
            same = await _ack(alice, f.React(channel="room", id=msg.id, cmid="m1", emoji="👍"))
            assert (same.cmid, same.duplicate) == ("m1", False)
            for i in range(MAX_REACTION_KINDS - 2):
                await _ack(alice, f.React(channel="room", id=msg.id, cmid=f"k{i}", emoji=f":e{i}:"))
            over = f.React(channel="room", id=msg.id, cmid="over", emoji=":one_more:")
            assert (await _error(alice, over)).code == "limit_exceeded"


async def test_threads_have_their_own_log_and_a_summary_in_the_channel(gateway: Gateway) -> None:
    url = gateway.ws_url
    with trio.fail_after(20):
        async with (
            raw_client(url, token=token("alice")) as alice,
            raw_client(url, token=token("bob")) as bob,
            raw_client(url, token=token("room-reader")) as channel_reader,
            raw_client(url, token=token("thread-reader")) as thread_reader,
        ):
            for c in (alice, bob, channel_reader):
                await c.subscribe("room")
            parent = await _ack(alice, f.Publish(channel="room", cmid="p", body="question"))
            assert (await _next(channel_reader, f.MessageEvent)).id == parent.id
            thread = f"room:t{parent.offset}"
            await bob.subscribe(thread)
            await thread_reader.subscribe(thread)
            reply = await _ack(
                bob, f.Publish(channel="room", cmid="r1", body="answer", thread=parent.id)
            )
            assert (reply.channel, reply.offset) == (thread, 1)
            got = await thread_reader.expect(f.MessageEvent)
            assert (got.channel, got.thread, got.body) == (thread, parent.id, "answer")
            # following the channel delivers the summary, not the reply
            summary = await channel_reader.recv()
            assert isinstance(summary, f.ThreadEvent), summary
            assert (summary.id, summary.replies, summary.participants) == (parent.id, 1, ["bob"])
            await _ack(alice, f.Publish(channel="room", cmid="r2", body="thanks", thread=parent.id))
            summary = await channel_reader.recv()
            assert isinstance(summary, f.ThreadEvent), summary
            assert (summary.replies, summary.participants) == (2, ["bob", "alice"])
            assert (await thread_reader.expect(f.MessageEvent)).body == "thanks"
            # posting in the thread's log itself is a reply too
            direct = await _ack(bob, f.Publish(channel=thread, cmid="r3", body="also"))
            assert (direct.channel, direct.offset) == (thread, 3)
            summary = await channel_reader.recv()
            assert isinstance(summary, f.ThreadEvent) and summary.replies == 3
            nested = f.Publish(channel=thread, cmid="n", body="x", thread=reply.id)
            assert (await _error(bob, nested)).code == "invalid_field"


async def test_resume_replays_changes_exactly_once(gateway: Gateway) -> None:
    url = gateway.ws_url
    with trio.fail_after(20):
        async with raw_client(url, token=token("alice")) as alice:
            _, sub = await alice.subscribe("room")
            msg = await _ack(alice, f.Publish(channel="room", cmid="m", body="a"))
            await _ack(alice, f.Edit(channel="room", id=msg.id, cmid="e", body="b", version=1))
            await _ack(alice, f.React(channel="room", id=msg.id, cmid="r", emoji="🎉"))
        async with raw_client(url) as again:
            await again.send(
                f.Resume(
                    token=token("alice"),
                    session="s",
                    positions={"room": Position(sub.epoch, 0)},
                )
            )
            await again.expect(f.Ready)
            frames = []
            while not isinstance(frame := await again.recv(), f.Subscribed):
                frames.append(frame)
            assert [type(x) for x in frames] == [f.MessageEvent, f.MessageUpdated, f.ReactionEvent]
            assert [x.offset for x in frames] == [1, 2, 3]  # type: ignore[attr-defined]


async def test_admins_delete_others_messages_members_do_not(gateway: Gateway) -> None:
    domain = gateway.node.domain
    for u in ("alice", "bob", "carol"):
        await domain.create_user(u, f"{u}@example.com", u)
    await domain.create_workspace("W", owner="alice", workspace_id="w")
    await domain.add_member("w", "bob", Role.MEMBER, actor="alice")
    await domain.add_member("w", "carol", Role.ADMIN, actor="alice")
    ch = await domain.create_channel("w", "general", ChannelKind.PUBLIC, actor="alice")
    for u in ("bob", "carol"):
        await domain.join_channel(ch.id, u, actor=u)
    url = gateway.ws_url
    with trio.fail_after(20):
        async with (
            raw_client(url, token=token("alice")) as alice,
            raw_client(url, token=token("bob")) as bob,
            raw_client(url, token=token("carol")) as carol,
        ):
            for c in (alice, bob, carol):
                await c.subscribe(ch.id)
            msg = await _ack(alice, f.Publish(channel=ch.id, cmid="m", body="hi"))
            err = await _error(bob, f.Delete(channel=ch.id, id=msg.id, cmid="d"))
            assert err.code == "forbidden"
            await _ack(carol, f.Delete(channel=ch.id, id=msg.id, cmid="d"))
            tomb = await _next(alice, f.MessageDeleted)
            assert tomb.by == "carol"


async def test_reactions_over_rest(gateway: Gateway) -> None:
    import httpx

    with trio.fail_after(20):
        async with (
            raw_client(gateway.ws_url, token=token("alice")) as alice,
            raw_client(gateway.ws_url, token=token("bob")) as bob,
            httpx.AsyncClient(base_url=gateway.http_url) as http,
        ):
            for c in (alice, bob):
                await c.subscribe("room")
            msg = await _ack(alice, f.Publish(channel="room", cmid="m", body="hi"))
            await _ack(alice, f.React(channel="room", id=msg.id, cmid="r1", emoji="👍"))
            await _ack(bob, f.React(channel="room", id=msg.id, cmid="r2", emoji="👍"))
            await _ack(bob, f.React(channel="room", id=msg.id, cmid="r3", emoji=":tada:"))
            auth = {"authorization": f"Bearer {token('bob')}"}
            r = await http.get(f"/v1/channels/room/messages/{msg.id}/reactions", headers=auth)
            assert r.json() == {
                "channel": "room",
                "id": msg.id,
                "reactions": {"👍": 2, ":tada:": 1},
                "mine": [":tada:", "👍"],
            }
            for bad in ("nope", msg.id + "9", f"{msg.id.rpartition('-')[0]}-0"):
                r = await http.get(f"/v1/channels/room/messages/{bad}/reactions", headers=auth)
                assert r.status_code == 404, bad
            other = {"authorization": f"Bearer {token('eve', channels=['elsewhere'])}"}
            r = await http.get(f"/v1/channels/room/messages/{msg.id}/reactions", headers=other)
            assert r.status_code == 404
