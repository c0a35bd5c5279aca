"""Presence end to end: devices aggregated per user, followed by interest, across nodes."""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from gateway.app import Gateway, open_gateway
from gateway.client import Client, PresenceEvent, open_client
from gateway.protocol import frames as f
from tests.client.test_sdk import next_event
from tests.conftest import make_settings, token
from tests.rawclient import raw_client

TIMEOUT = 30


async def presence(client: Client, user: str) -> PresenceEvent:
    while True:
        event = await next_event(client, PresenceEvent)
        assert isinstance(event, PresenceEvent)
        if event.user == user:
            return event


async def _follow_bob(alice: Client, a: Gateway, b: Gateway) -> None:
    """The same story on one node (a is b) or two."""
    await alice.watch_presence(["bob"])
    first = await presence(alice, "bob")
    assert (first.status, first.last_seen) == ("offline", 0)
    async with open_client(b.ws_url, token("bob")) as phone:
        assert (await presence(alice, "bob")).status == "online"
        await phone.set_presence("away")
        assert (await presence(alice, "bob")).status == "away"
        async with open_client(a.ws_url, token("bob")) as laptop:
            assert (await presence(alice, "bob")).status == "online"  # any device online
            await laptop.set_presence("away")
            assert (await presence(alice, "bob")).status == "away"
        # the laptop left; the phone is still away: no change to report
        await phone.set_presence("online")
        assert (await presence(alice, "bob")).status == "online"
    gone = await presence(alice, "bob")
    assert gone.status == "offline" and gone.last_seen > 0


async def test_presence_on_one_node(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_gateway(make_settings(tmp_path)) as gw,
            open_client(gw.ws_url, token("alice")) as alice,
        ):
            await _follow_bob(alice, gw, gw)


@pytest.mark.parametrize("kind", ["server", "cluster"])
async def test_presence_across_nodes(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    url = (
        request.getfixturevalue("redis_url")
        if kind == "server"
        else request.getfixturevalue("redis_cluster").url
    )
    prefix = "pr" + uuid.uuid4().hex[:8]
    with trio.fail_after(TIMEOUT):
        async with AsyncExitStack() as stack:
            a, b = [
                await stack.enter_async_context(
                    open_gateway(make_settings(tmp_path, redis_url=url, redis_prefix=prefix))
                )
                for _ in range(2)
            ]
            alice = await stack.enter_async_context(open_client(a.ws_url, token("alice")))
            await _follow_bob(alice, a, b)


async def test_only_followers_hear_about_a_user(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_gateway(make_settings(tmp_path)) as gw,
            open_client(gw.ws_url, token("alice")) as alice,
            open_client(gw.ws_url, token("carol")) as carol,
        ):
            await alice.watch_presence(["bob"])
            assert (await presence(alice, "bob")).status == "offline"
            await carol.watch_presence(["dave"])
            assert (await presence(carol, "dave")).status == "offline"
            async with open_client(gw.ws_url, token("bob")):
                assert (await presence(alice, "bob")).status == "online"
            await alice.watch_presence([])  # follows nobody now
            async with open_client(gw.ws_url, token("dave")):
                assert (await presence(carol, "dave")).status == "online"
            async with open_client(gw.ws_url, token("bob")):
                pass
            # carol never heard of bob, alice stopped hearing of him
            assert carol.statistics().events_buffered == 1  # dave offline, nothing of bob
            await alice.ping()
            assert alice.statistics().events_buffered == 1  # bob's offline, then nothing


async def test_presence_frames_are_checked(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with open_gateway(settings) as gw, raw_client(gw.ws_url) as raw:
            await raw.auth(token("alice"))
            await raw.send_json({"type": "presence_watch", "users": [f"u{i}" for i in range(201)]})
            err = await raw.expect(f.Error)
            assert err.code == "invalid_field" and "200" in err.message
            await raw.send_json({"type": "presence_set", "status": "busy"})
            assert (await raw.expect(f.Error)).code == "invalid_field"
            await raw.send_json({"type": "presence_watch", "users": [""]})
            assert (await raw.expect(f.Error)).code == "invalid_field"
            await raw.send_json({"type": "presence_watch", "users": ["bob", "bob"]})
            event = await raw.expect(f.PresenceEvent)
            assert event.user == "bob" and event.status == "offline"
