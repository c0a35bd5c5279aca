"""Membership decides who reads and posts on domain channels, on one node and across nodes."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from gateway.app import Gateway
from gateway.domain.model import Channel, ChannelKind, Role
from gateway.model import Position
from gateway.protocol import frames as f
from gateway.store.domain import DomainStore
from tests.conftest import token
from tests.rawclient import LOG_EVENTS, Raw, raw_client
from tests.test_multinode import open_nodes

USERS = ("alice", "bob", "carol", "gus", "zed")
SKIP = (f.MessageEvent, *LOG_EVENTS)


async def _workspace(domain: DomainStore) -> tuple[Channel, Channel]:
    """alice owns ws "acme" with bob and carol (members) and gus (guest); zed is outside.
    Returns (#general public: alice, bob; #secret private: alice, bob)."""
    for u in USERS:
        await domain.create_user(u, f"{u}@example.com", u.title())
    await domain.create_workspace("Acme", owner="alice", workspace_id="acme")
    for u, role in (("bob", Role.MEMBER), ("carol", Role.MEMBER), ("gus", Role.GUEST)):
        await domain.add_member("acme", u, role, actor="alice")
    general = await domain.create_channel("acme", "general", ChannelKind.PUBLIC, actor="alice")
    secret = await domain.create_channel("acme", "secret", ChannelKind.PRIVATE, actor="alice")
    for ch in (general, secret):
        await domain.join_channel(ch.id, "bob", actor="alice")
    return general, secret


async def _refused(c: Raw, frame: f.ClientFrame, code: str = "forbidden") -> f.Error:
    await c.send(frame)
    err: f.Error = await c.expect(f.Error, skip=SKIP)
    assert err.code == code, err
    return err


async def test_members_read_and_post_others_are_refused(gateway: Gateway) -> None:
    general, secret = await _workspace(gateway.node.domain)
    url = gateway.ws_url
    with trio.fail_after(20):
        async with (
            raw_client(url, token=token("bob")) as bob,
            raw_client(url, token=token("carol")) as carol,
            raw_client(url, token=token("gus")) as gus,
            raw_client(url, token=token("zed")) as zed,
        ):
            await bob.subscribe(secret.id)
            await bob.send(f.Publish(channel=secret.id, cmid="b1", body="hi"))
            assert (await bob.expect(f.Ack, skip=SKIP)).cmid == "b1"
            for c in (carol, gus, zed):  # not in the private channel: as if it did not exist
                err = await _refused(c, f.Subscribe(channel=secret.id))
                assert err.message == "no such channel"
            # a guest does not see public channels it is not in; a stranger sees nothing
            await _refused(gus, f.Subscribe(channel=general.id))
            await _refused(zed, f.Subscribe(channel=general.id))
            await _refused(zed, f.Subscribe(channel="ws.acme"))
            # a member previews a public channel, and must join to post
            await carol.subscribe(general.id)
            err = await _refused(carol, f.Publish(channel=general.id, cmid="c1", body="x"))
            assert err.ref == "c1" and "join" in err.message
            await gateway.node.domain.join_channel(general.id, "carol", actor="carol")
            await carol.send(f.Publish(channel=general.id, cmid="c1", body="x"))
            assert (await carol.expect(f.Ack, skip=SKIP)).cmid == "c1"
            # a token's channels glob never grants domain channels, "*" included
            await _refused(zed, f.Subscribe(channel="ch." + "0" * 24))
            await _refused(zed, f.Subscribe(channel="dm.unknown"))


async def test_removal_ends_subscriptions_at_once_and_for_good(gateway: Gateway) -> None:
    domain = gateway.node.domain
    general, secret = await _workspace(domain)
    with trio.fail_after(20):
        async with (
            raw_client(gateway.ws_url, token=token("bob")) as bob,
            raw_client(gateway.ws_url, token=token("bob")) as bob2,  # a second device
        ):
            for c in (bob, bob2):
                await c.subscribe(secret.id)
                await c.subscribe(general.id)
            await bob.send(f.Publish(channel=secret.id, cmid="root", body="q"))
            ack = await bob.expect(f.Ack, skip=SKIP)
            await bob.subscribe(f"{secret.id}:t{ack.offset}")  # a thread of the channel
            assert await domain.leave_channel(secret.id, "bob", actor="alice")
            thread = f"{secret.id}:t{ack.offset}"
            for c, ended in ((bob, [secret.id, thread]), (bob2, [secret.id])):
                for channel in ended:
                    gone = await c.expect(f.Unsubscribed, skip=SKIP)
                    assert (gone.channel, gone.reason) == (channel, "forbidden")
                late = f.Publish(channel=secret.id, cmid="late", body="x")
                await _refused(c, late, "not_subscribed")
            await _refused(bob, f.Subscribe(channel=secret.id))
            # removed from the workspace: every channel of it goes
            assert await domain.remove_member("acme", "bob", actor="alice")
            gone = await bob.expect(f.Unsubscribed, skip=SKIP)
            assert (gone.channel, gone.reason) == (general.id, "forbidden")
            await _refused(bob, f.Subscribe(channel=general.id))
            # re-added: membership decides again, no lingering bar
            await domain.add_member("acme", "bob", Role.MEMBER, actor="alice")
            await bob.subscribe(general.id)


async def test_history_follows_membership(gateway: Gateway) -> None:
    _, secret = await _workspace(gateway.node.domain)
    with trio.fail_after(20):
        async with (
            raw_client(gateway.ws_url, token=token("bob")) as bob,
            httpx.AsyncClient(base_url=gateway.http_url) as http,
        ):
            await bob.subscribe(secret.id)
            await bob.send(f.Publish(channel=secret.id, cmid="b1", body="private"))
            await bob.expect(f.Ack, skip=SKIP)

            async def history(user: str) -> httpx.Response:
                auth = {"authorization": f"Bearer {token(user)}"}
                return await http.get(f"/v1/channels/{secret.id}/messages", headers=auth)

            ok = await history("alice")
            assert ok.status_code == 200 and ok.json()["messages"][0]["body"] == "private"
            for outsider in ("carol", "zed"):
                r = await history(outsider)
                assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


async def test_archiving_stops_posting_but_not_reading(gateway: Gateway) -> None:
    domain = gateway.node.domain
    general, _ = await _workspace(domain)
    with trio.fail_after(20):
        async with raw_client(gateway.ws_url, token=token("bob")) as bob:
            await bob.subscribe(general.id)
            await domain.update_channel(
                general.id, actor="alice", expected_version=1, archived=True
            )
            err = await _refused(bob, f.Publish(channel=general.id, cmid="a", body="x"))
            assert "archived" in err.message
            await domain.update_channel(
                general.id, actor="alice", expected_version=2, archived=False
            )
            await bob.send(f.Publish(channel=general.id, cmid="a", body="x"))
            await bob.expect(f.Ack, skip=SKIP)


async def test_a_removal_on_one_node_ends_subscriptions_on_the_others(
    tmp_path: Path, redis_url: str
) -> None:
    async with open_nodes(tmp_path, redis_url, n=2) as (a, b):
        general, secret = await _workspace(a.node.domain)
        with trio.fail_after(20):
            async with raw_client(b.ws_url, token=token("bob")) as bob:
                await bob.subscribe(secret.id)
                await bob.subscribe(general.id)
                await a.node.domain.update_channel(
                    general.id, actor="alice", expected_version=1, archived=True
                )
                assert await a.node.domain.leave_channel(secret.id, "bob", actor="alice")
                gone = await bob.expect(f.Unsubscribed, skip=SKIP)
                assert (gone.channel, gone.reason) == (secret.id, "forbidden")
                # kicks travel in order, so the archive reached node b first: its next
                # post on #general is re-checked and refused
                err = await _refused(bob, f.Publish(channel=general.id, cmid="p", body="x"))
                assert "archived" in err.message
                await a.node.domain.remove_member("acme", "bob", actor="alice")
                gone = await bob.expect(f.Unsubscribed, skip=SKIP)
                assert gone.channel == general.id


async def test_member_and_channel_changes_are_events_for_their_audience(gateway: Gateway) -> None:
    domain = gateway.node.domain
    general, secret = await _workspace(domain)
    with trio.fail_after(20):
        async with (
            raw_client(gateway.ws_url, token=token("carol")) as carol,
            raw_client(gateway.ws_url, token=token("bob")) as bob,
        ):
            _, sub = await carol.subscribe("ws.acme")
            await carol.send(f.Subscribe(channel="ws.acme", since=Position(sub.epoch, 0)))
            history = []
            while not isinstance(frame := await carol.recv(), f.Subscribed):
                history.append(frame)
            joined = [(e.user, e.role) for e in history if isinstance(e, f.MemberEvent)]
            assert joined == [("bob", "member"), ("carol", "member"), ("gus", "guest")]
            created = [e.info.name for e in history if isinstance(e, f.ChannelEvent)]
            assert created == ["general"]  # the private channel is not announced
            await _refused(carol, f.Publish(channel="ws.acme", cmid="x", body="x"))

            await bob.subscribe(general.id)
            await domain.join_channel(general.id, "carol", actor="carol")
            ev = await bob.expect(f.MemberEvent)
            assert (ev.channel, ev.user, ev.joined, ev.by) == (general.id, "carol", True, "carol")
            await domain.update_channel(general.id, actor="alice", expected_version=1, topic="news")
            upd = await bob.expect(f.ChannelEvent)
            assert (upd.what, upd.info.topic, upd.info.version) == ("updated", "news", 2)
            upd = await carol.expect(f.ChannelEvent)
            assert (upd.channel, upd.info.id) == ("ws.acme", general.id)
            await domain.leave_channel(secret.id, "bob", actor="bob")  # private: not in ws
            await domain.remove_member("acme", "gus", actor="alice")
            gone = await carol.expect(f.MemberEvent)
            assert (gone.user, gone.joined, gone.by) == ("gus", False, "alice")
