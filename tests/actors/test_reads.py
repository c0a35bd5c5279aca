"""Read cursors, unread counts, DM receipts and notifications, end to end."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from gateway.app import Gateway
from gateway.domain.model import ChannelKind, Role
from gateway.protocol import frames as f
from tests.conftest import token
from tests.rawclient import LOG_EVENTS, Raw, raw_client

SKIP = (f.MessageEvent, *LOG_EVENTS, f.ReadEvent, f.NotificationEvent, f.ReceiptEvent)


async def _setup(gateway: Gateway) -> tuple[str, str]:
    """alice, bob, carol in workspace w; #general (all three); a DM alice+bob."""
    domain = gateway.node.domain
    for u in ("alice", "bob", "carol"):
        await domain.create_user(u, f"{u}@example.com", u)
    await domain.create_workspace("W", owner="alice", workspace_id="w")
    for u in ("bob", "carol"):
        await domain.add_member("w", u, Role.MEMBER, actor="alice")
    general = await domain.create_channel("w", "general", ChannelKind.PUBLIC, actor="alice")
    for u in ("bob", "carol"):
        await domain.join_channel(general.id, u, actor=u)
    dm = await domain.open_dm("w", ["bob"], actor="alice")
    return general.id, dm.id


async def _post(c: Raw, channel: str, cmid: str, body: str, **kw: Any) -> f.Ack:
    await c.send(f.Publish(channel=channel, cmid=cmid, body=body, **kw))
    ack: f.Ack = await c.expect(f.Ack, skip=SKIP)
    return ack


def _auth(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token(user)}"}


async def test_unread_mentions_and_read_cursors_across_devices(gateway: Gateway) -> None:
    general, _ = await _setup(gateway)
    url = gateway.ws_url
    with trio.fail_after(20):
        async with (
            raw_client(url, token=token("alice")) as phone,
            raw_client(url, token=token("alice")) as laptop,
            raw_client(url, token=token("bob")) as bob,
            httpx.AsyncClient(base_url=gateway.http_url) as http,
        ):
            for c in (phone, laptop):
                await c.subscribe("u.alice")
            await phone.subscribe(general)
            await bob.subscribe(general)
            await _post(bob, general, "b1", "morning")
            ack = await _post(bob, general, "b2", "@alice can you look? thanks @carol.")
            note = await laptop.expect(f.NotificationEvent)
            assert (note.kind, note.target, note.message_id, note.sender) == (
                "mention",
                general,
                ack.id,
                "bob",
            )
            r = await http.get(
                "/v1/users/me/unread", params={"workspace": "w"}, headers=_auth("alice")
            )
            assert r.status_code == 200
            assert r.json()["channels"][general] == {"messages": 2, "mentions": 1, "read_offset": 0}
            mine = await http.get(
                "/v1/users/me/unread", params={"workspace": "w"}, headers=_auth("bob")
            )
            assert mine.json()["channels"][general]["messages"] == 0  # own messages do not count

            await phone.send(f.Read(channel=general, offset=ack.offset))
            synced = await laptop.expect(f.ReadEvent)
            assert (synced.target, synced.read_offset) == (general, ack.offset)
            r = await http.get(
                "/v1/users/me/unread", params={"workspace": "w"}, headers=_auth("alice")
            )
            assert r.json()["channels"][general] == {
                "messages": 0,
                "mentions": 0,
                "read_offset": ack.offset,
            }
            # forward only, clamped to the head
            back = await http.put(
                f"/v1/channels/{general}/read", json={"offset": 1}, headers=_auth("alice")
            )
            assert back.json()["offset"] == ack.offset
            far = await http.put(
                f"/v1/channels/{general}/read", json={"offset": 10**9}, headers=_auth("alice")
            )
            assert far.json()["offset"] == ack.offset
            # someone else's log, a channel one cannot read
            await phone.send(f.Subscribe(channel="u.bob"))
            assert (await phone.expect(f.Error, skip=SKIP)).code == "forbidden"
            nope = await http.put(
                f"/v1/channels/{general}/read", json={"offset": 1}, headers=_auth("zed")
            )
            assert nope.status_code == 404


async def test_dm_receipts_and_notifications(gateway: Gateway) -> None:
    _, dm = await _setup(gateway)
    url = gateway.ws_url
    with trio.fail_after(20):
        async with (
            raw_client(url, token=token("alice")) as alice,
            raw_client(url, token=token("bob")) as bob,
            httpx.AsyncClient(base_url=gateway.http_url) as http,
        ):
            for c in (alice, bob):
                await c.subscribe(dm)
            ack = await _post(bob, dm, "d1", "hi alice")
            await alice.send(f.Delivered(channel=dm, offset=ack.offset))
            got = await bob.expect(f.ReceiptEvent, skip=SKIP)
            assert (got.user, got.delivered, got.read) == ("alice", ack.offset, 0)
            await alice.send(f.Read(channel=dm, offset=ack.offset))
            got = await bob.expect(f.ReceiptEvent, skip=SKIP)
            assert (got.user, got.read) == ("alice", ack.offset)
            r = await http.get(f"/v1/channels/{dm}/receipts", headers=_auth("bob"))
            by_user = {x["user"]: x for x in r.json()["receipts"]}
            assert by_user["alice"]["read"] == ack.offset

            page = await http.get("/v1/users/me/notifications", headers=_auth("alice"))
            (item,) = page.json()["items"]
            assert (item["kind"], item["channel"], item["preview"], item["read"]) == (
                "dm",
                dm,
                "hi alice",
                False,
            )
            assert (await http.get("/v1/users/me/notifications", headers=_auth("bob"))).json()[
                "items"
            ] == []
            marked = await http.post(
                "/v1/users/me/notifications/read", json={"ids": "all"}, headers=_auth("alice")
            )
            assert marked.json() == {"marked": 1}
            unread = await http.get(
                "/v1/users/me/notifications",
                params={"unread_only": "true"},
                headers=_auth("alice"),
            )
            assert unread.json()["items"] == []
            bad = await http.post(
                "/v1/users/me/notifications/read", json={"ids": 3}, headers=_auth("alice")
            )
            assert bad.status_code == 400


async def test_thread_replies_notify_the_author_and_participants(gateway: Gateway) -> None:
    general, _ = await _setup(gateway)
    url = gateway.ws_url
    with trio.fail_after(20):
        async with (
            raw_client(url, token=token("alice")) as alice,
            raw_client(url, token=token("bob")) as bob,
            raw_client(url, token=token("carol")) as carol,
            httpx.AsyncClient(base_url=gateway.http_url) as http,
        ):
            for c in (alice, bob, carol):
                await c.subscribe(general)
            parent = await _post(alice, general, "p", "lunch?")
            await _post(bob, general, "r1", "yes", thread=parent.id)
            await _post(carol, general, "r2", "me too", thread=parent.id)

            async def kinds(user: str) -> list[tuple[str, str]]:
                r = await http.get("/v1/users/me/notifications", headers=_auth(user))
                return [(n["kind"], n["sender"]) for n in r.json()["items"]]

            assert await kinds("alice") == [("reply", "carol"), ("reply", "bob")]
            assert await kinds("bob") == [("reply", "carol")]
            assert await kinds("carol") == []


async def test_counting_failures_do_not_fail_messages_and_catch_up(gateway: Gateway) -> None:
    general, _ = await _setup(gateway)
    noting = gateway.node.reads
    real = noting.store.note_message
    calls = {"fail": True}

    async def flaky(*args: Any, **kw: Any) -> bool:
        if calls["fail"]:
            from gateway.errors import StoreUnavailable

            raise StoreUnavailable("read state down")
        return await real(*args, **kw)

    noting.store.note_message = flaky  # type: ignore[method-assign]
    with trio.fail_after(20):
        async with (
            raw_client(gateway.ws_url, token=token("bob")) as bob,
            httpx.AsyncClient(base_url=gateway.http_url) as http,
        ):
            await bob.subscribe(general)
            await _post(bob, general, "b1", "one")  # acked although counting failed
            await _post(bob, general, "b2", "two @alice")
            r = await http.get(
                "/v1/users/me/unread", params={"workspace": "w"}, headers=_auth("alice")
            )
            assert r.json()["channels"][general]["messages"] == 0
            calls["fail"] = False
            await _post(bob, general, "b3", "three")  # the backlog goes first, in order
            r = await http.get(
                "/v1/users/me/unread", params={"workspace": "w"}, headers=_auth("alice")
            )
            assert r.json()["channels"][general] == {"messages": 3, "mentions": 1, "read_offset": 0}
