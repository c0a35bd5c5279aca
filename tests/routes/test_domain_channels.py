"""REST: channels, channel members and DMs, over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from gateway.app import Gateway
from tests.routes.domain_helpers import (
    auth,
    check_error,
    collect,
    http_client,
    make_channel,
    make_user,
    make_workspace,
)

TEAM = {"bob": "admin", "carol": "member", "dave": "guest", "eve": "member"}


async def _acme(http: httpx.AsyncClient) -> tuple[str, dict[str, dict[str, Any]]]:
    """Workspace of alice (owner) with TEAM; #general and #secret by alice, #random by carol."""
    await make_user(http, "alice")
    ws = await make_workspace(http, "alice", TEAM)
    channels = {
        "general": await make_channel(http, ws, "alice", "general"),
        "random": await make_channel(http, ws, "carol", "random"),
        "secret": await make_channel(http, ws, "alice", "secret", kind="private"),
    }
    return ws, channels


async def _visible(http: httpx.AsyncClient, ws: str, user: str, limit: int = 50) -> list[str]:
    items = await collect(http, f"/v1/workspaces/{ws}/channels", user, limit=limit)
    return [c["name"] for c in items]


async def test_create_and_list_by_visibility(gateway: Gateway) -> None:
    with trio.fail_after(30):
        async with http_client(gateway) as http:
            ws, ch = await _acme(http)
            assert ch["secret"]["kind"] == "private" and ch["general"]["version"] == 1
            assert await _visible(http, ws, "alice") == ["general", "random", "secret"]
            assert await _visible(http, ws, "bob") == ["general", "random"]  # admin, not in it
            assert await _visible(http, ws, "carol", limit=1) == ["general", "random"]
            assert await _visible(http, ws, "dave") == []  # guests see only their channels
            r = await http.put(
                f"/v1/channels/{ch['secret']['id']}/members/dave", headers=auth("alice")
            )
            assert r.status_code == 201
            assert await _visible(http, ws, "dave", limit=1) == ["secret"]
            # positions order the listing
            r = await http.post(
                f"/v1/workspaces/{ws}/channels",
                headers=auth("eve"),
                json={"name": "aaa-last", "position": 9, "topic": "t"},
            )
            assert r.status_code == 201 and r.json()["created_by"] == "eve"
            assert await _visible(http, ws, "eve", limit=2) == ["general", "random", "aaa-last"]
            # refusals
            r = await http.post(
                f"/v1/workspaces/{ws}/channels", headers=auth("dave"), json={"name": "g2"}
            )
            check_error(r, 403, "forbidden")
            r = await http.post(
                f"/v1/workspaces/{ws}/channels", headers=auth("carol"), json={"name": "general"}
            )
            check_error(r, 409, "already_exists", reason="channel_name")
            r = await http.post(
                f"/v1/workspaces/{ws}/channels", headers=auth("frank"), json={"name": "x"}
            )
            check_error(r, 404, "not_found", reason="workspace")
            for body, field in (
                ({"name": "dm-abc"}, "name"),
                ({"name": "General"}, "name"),
                ({"name": "x" * 81}, "name"),
                ({"name": "ok", "kind": "dm"}, "kind"),
                ({"name": "ok", "topic": "t" * 251}, "topic"),
                ({"name": "ok", "position": -1}, "position"),
                ({"name": "ok", "position": 1_000_001}, "position"),
                ({"name": "ok", "archived": True}, "archived"),
            ):
                r = await http.post(
                    f"/v1/workspaces/{ws}/channels", headers=auth("carol"), json=body
                )
                assert check_error(r, 400, "invalid_field").get("field") == field, body
            r = await http.get(
                f"/v1/workspaces/{ws}/channels", headers=auth("carol"), params={"cursor": "x.y"}
            )
            check_error(r, 400, "invalid_field", reason="bad_cursor")


async def test_channel_reads_hide_what_the_caller_cannot_see(gateway: Gateway) -> None:
    with trio.fail_after(30):
        async with http_client(gateway) as http:
            _, ch = await _acme(http)
            secret, general = ch["secret"]["id"], ch["general"]["id"]
            r = await http.get(f"/v1/channels/{secret}", headers=auth("alice"))
            assert r.status_code == 200 and r.json() == ch["secret"]
            r = await http.get(f"/v1/channels/{general}", headers=auth("carol"))
            assert r.status_code == 200 and r.json()["name"] == "general"
            # another workspace: frank's channel is invisible to acme's members
            await make_user(http, "frank")
            other = await make_workspace(http, "frank")
            theirs = (await make_channel(http, other, "frank", "general"))["id"]
            for user, channel in (
                ("carol", secret),  # private, not a member
                ("bob", secret),  # admins do not see private channels they are not in
                ("dave", general),  # guest, not a member
                ("carol", theirs),  # another workspace
                ("frank", general),
                ("carol", "ch.000000000000000000000000"),  # unknown
            ):
                for path in (f"/v1/channels/{channel}", f"/v1/channels/{channel}/members"):
                    r = await http.get(path, headers=auth(user))
                    check_error(r, 404, "not_found", reason="channel")
            members = await collect(http, f"/v1/channels/{general}/members", "eve", limit=1)
            assert [m["user"] for m in members] == ["alice"]
            r = await http.get(
                f"/v1/channels/{general}/members", headers=auth("eve"), params={"limit": 0}
            )
            check_error(r, 400, "invalid_field")
            # a cursor of one channel's members is refused on another's
            await http.put(f"/v1/channels/{general}/members/carol", headers=auth("carol"))
            r = await http.get(
                f"/v1/channels/{general}/members", headers=auth("alice"), params={"limit": 1}
            )
            cursor = r.json()["cursor"]
            assert cursor
            r = await http.get(
                f"/v1/channels/{ch['random']['id']}/members",
                headers=auth("alice"),
                params={"cursor": cursor},
            )
            check_error(r, 400, "invalid_field", reason="bad_cursor")


async def test_join_and_leave(gateway: Gateway) -> None:
    with trio.fail_after(30):
        async with http_client(gateway) as http:
            ws, ch = await _acme(http)
            general, random, secret = (ch[n]["id"] for n in ("general", "random", "secret"))

            async def join(actor: str, channel: str, user: str) -> httpx.Response:
                return await http.put(f"/v1/channels/{channel}/members/{user}", headers=auth(actor))

            async def leave(actor: str, channel: str, user: str) -> httpx.Response:
                return await http.delete(
                    f"/v1/channels/{channel}/members/{user}", headers=auth(actor)
                )

            r = await join("carol", general, "carol")
            assert r.status_code == 201 and r.json() == {"channel": general, "user": "carol"}
            r = await join("carol", general, "carol")
            assert r.status_code == 200  # double join
            assert (await join("carol", random, "eve")).status_code == 201  # member adds member
            check_error(await join("carol", random, "dave"), 403, "forbidden")  # not a guest
            check_error(await join("eve", general, "bob"), 403, "forbidden")  # eve not in it
            check_error(await join("dave", general, "dave"), 404, "not_found", reason="channel")
            check_error(await join("carol", secret, "carol"), 404, "not_found", reason="channel")
            assert (await join("bob", secret, "bob")).status_code == 201  # managers join any
            assert (await join("bob", general, "dave")).status_code == 201  # and add guests
            await make_user(http, "frank")
            await make_workspace(http, "frank")
            # a user of another workspace, and an unknown user
            check_error(await join("alice", general, "frank"), 404, "not_found", reason="member")
            check_error(await join("alice", general, "nobody"), 404, "not_found", reason="member")
            # leaving and removing
            check_error(await leave("carol", random, "eve"), 403, "forbidden")  # not a manager
            assert (await leave("eve", random, "eve")).status_code == 204
            check_error(await leave("eve", random, "eve"), 404, "not_found", reason="member")
            assert (await leave("bob", general, "carol")).status_code == 204  # a manager
            check_error(await leave("bob", general, "carol"), 404, "not_found", reason="member")
            members = await collect(http, f"/v1/channels/{general}/members", "alice", limit=50)
            assert [m["user"] for m in members] == ["alice", "dave"]
            # removed from the workspace: the channel membership grants nothing
            r = await http.delete(f"/v1/workspaces/{ws}/members/dave", headers=auth("alice"))
            assert r.status_code == 204
            r = await http.get(f"/v1/channels/{general}", headers=auth("dave"))
            check_error(r, 404, "not_found", reason="channel")
            check_error(await leave("dave", general, "dave"), 404, "not_found", reason="channel")


async def test_update_channel(gateway: Gateway) -> None:
    with trio.fail_after(30):
        async with http_client(gateway) as http:
            _, ch = await _acme(http)
            general, secret = ch["general"]["id"], ch["secret"]["id"]

            async def patch(actor: str, channel: str, body: object) -> httpx.Response:
                return await http.patch(f"/v1/channels/{channel}", headers=auth(actor), json=body)

            r = await patch("alice", general, {"expected_version": 1, "topic": "All hands"})
            assert r.status_code == 200 and r.json()["topic"] == "All hands"
            assert r.json()["version"] == 2
            r = await patch("bob", general, {"expected_version": 1, "position": 3})
            error = check_error(r, 409, "stale_version", reason="version")
            assert error["current"] == 2
            check_error(await patch("carol", general, {"expected_version": 2}), 403, "forbidden")
            check_error(
                await patch("carol", secret, {"expected_version": 1}),
                404,
                "not_found",
                reason="channel",
            )
            r = await patch("bob", secret, {"expected_version": 1, "position": 5})  # manager
            assert r.status_code == 200 and r.json()["position"] == 5
            for body, field in (
                ({"topic": "x"}, "expected_version"),
                ({"expected_version": 2, "topic": "x" * 251}, "topic"),
                ({"expected_version": 2, "position": -1}, "position"),
                ({"expected_version": 2, "archived": "yes"}, "archived"),
                ({"expected_version": 2, "name": "renamed"}, "name"),
            ):
                r = await patch("alice", general, body)
                assert check_error(r, 400, "invalid_field").get("field") == field, body
            r = await patch("alice", general, {"expected_version": 2, "archived": True})
            assert r.status_code == 200 and r.json()["archived"] is True
            r = await http.put(f"/v1/channels/{general}/members/carol", headers=auth("carol"))
            check_error(r, 409, "conflict", reason="archived")


async def test_direct_conversations(gateway: Gateway) -> None:
    with trio.fail_after(30):
        async with http_client(gateway) as http:
            ws, ch = await _acme(http)
            r = await http.post(
                f"/v1/workspaces/{ws}/dms", headers=auth("alice"), json={"users": ["carol", "bob"]}
            )
            assert r.status_code == 200, r.text
            dm = r.json()
            assert dm["participants"] == ["alice", "bob", "carol"] and dm["created_by"] == "alice"
            r = await http.post(
                f"/v1/workspaces/{ws}/dms",
                headers=auth("bob"),
                json={"users": ["alice", "carol", "alice"]},
            )
            assert r.status_code == 200 and r.json() == dm  # the same, the first opener's
            r = await http.get(f"/v1/channels/{dm['id']}", headers=auth("carol"))
            assert r.status_code == 200 and r.json()["kind"] == "dm"
            for user in ("eve", "dave"):
                r = await http.get(f"/v1/channels/{dm['id']}", headers=auth(user))
                check_error(r, 404, "not_found", reason="channel")
            # participants are fixed
            r = await http.put(f"/v1/channels/{dm['id']}/members/eve", headers=auth("alice"))
            check_error(r, 403, "forbidden")
            r = await http.delete(f"/v1/channels/{dm['id']}/members/carol", headers=auth("carol"))
            check_error(r, 403, "forbidden")
            r = await http.patch(
                f"/v1/channels/{dm['id']}", headers=auth("alice"), json={"expected_version": 1}
            )
            check_error(r, 403, "forbidden")
            # refusals
            await make_user(http, "frank")
            for body, status, code, reason in (
                ({"users": ["frank"]}, 404, "not_found", "member"),
                ({"users": [f"u{i}" for i in range(9)]}, 422, "limit_exceeded", "participants"),
                ({"users": []}, 400, "invalid_field", None),
                ({"users": ["alice"]}, 400, "invalid_field", None),
                ({"users": "bob"}, 400, "invalid_field", None),
                ({"users": ["x" * 129]}, 400, "invalid_field", None),
                ({"users": ["bob"], "topic": "x"}, 400, "invalid_field", None),
            ):
                r = await http.post(f"/v1/workspaces/{ws}/dms", headers=auth("alice"), json=body)
                check_error(r, status, code, reason=reason)
            r = await http.post(
                f"/v1/workspaces/{ws}/dms", headers=auth("frank"), json={"users": ["alice"]}
            )
            check_error(r, 404, "not_found", reason="workspace")
            # the caller's channel memberships, DMs included
            items = await collect(http, "/v1/users/me/channels", "carol", limit=1, workspace=ws)
            assert sorted(m["channel"] for m in items) == sorted([ch["random"]["id"], dm["id"]])
            assert {m["user"] for m in items} == {"carol"}
            r = await http.get("/v1/users/me/channels", headers=auth("carol"))
            check_error(r, 400, "invalid_field")
            r = await http.get("/v1/users/me/channels?workspace=nope", headers=auth("carol"))
            check_error(r, 404, "not_found", reason="workspace")
            r = await http.get(f"/v1/users/me/channels?workspace={ws}", headers=auth("frank"))
            check_error(r, 404, "not_found", reason="workspace")


async def test_listing_when_the_caller_is_in_more_than_one_page_of_channels(
    gateway: Gateway,
) -> None:
    """Over 200 channel memberships: one membership page covers the 200 smallest channel
    ids, the channels above it are checked with point reads (bob sees all 203)."""
    with trio.fail_after(60):
        async with http_client(gateway) as http:
            await make_user(http, "alice")
            ws = await make_workspace(http, "alice", {"bob": "admin", "carol": "member"})
            names = [f"p{i:03d}" for i in range(203)]
            for name in names:
                await make_channel(http, ws, "bob", name, kind="private")
            r = await http.get(f"/v1/users/me/channels?workspace={ws}", headers=auth("bob"))
            assert r.status_code == 200 and r.json()["cursor"] is not None
            assert await _visible(http, ws, "bob", limit=200) == names
            assert await _visible(http, ws, "alice", limit=200) == []  # not in any
            # carol joins three of them (added by bob): exactly those become visible
            listed = await collect(http, f"/v1/workspaces/{ws}/channels", "bob", 200)
            by_name = {c["name"]: c["id"] for c in listed}
            for name in ("p000", "p101", "p202"):
                r = await http.put(
                    f"/v1/channels/{by_name[name]}/members/carol", headers=auth("bob")
                )
                assert r.status_code == 201
            assert await _visible(http, ws, "carol", limit=7) == ["p000", "p101", "p202"]
