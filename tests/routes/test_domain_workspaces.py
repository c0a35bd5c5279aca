"""REST: workspaces and members (/v1/workspaces), paging, over real HTTP."""

from __future__ import annotations

import base64

import httpx
import trio

from gateway.app import Gateway
from tests.routes.domain_helpers import (
    auth,
    check_error,
    collect,
    http_client,
    make_user,
    make_workspace,
)


async def test_workspace_and_members(gateway: Gateway) -> None:
    with trio.fail_after(30):
        async with http_client(gateway) as http:
            await make_user(http, "alice")
            r = await http.post(
                "/v1/workspaces", headers=auth("alice"), json={"name": "Acme", "id": "acme"}
            )
            assert r.status_code == 201, r.text
            ws = r.json()
            assert ws["id"] == "acme" and ws["owner"] == "alice" and ws["version"] == 1
            r = await http.get("/v1/workspaces/acme", headers=auth("alice"))
            assert r.status_code == 200 and r.json() == ws
            for user, role in (("bob", "admin"), ("carol", "member"), ("dave", "guest")):
                await make_user(http, user)
                r = await http.put(
                    f"/v1/workspaces/acme/members/{user}",
                    headers=auth("alice"),
                    json={"role": role},
                )
                assert r.status_code == 201, r.text
                assert r.json()["role"] == role and r.json()["user"] == user
            # double add with the same role: 200, nothing changes
            r = await http.put(
                "/v1/workspaces/acme/members/carol", headers=auth("bob"), json={"role": "member"}
            )
            assert r.status_code == 200 and r.json()["role"] == "member"
            # re-role: the owner makes carol an admin and back
            r = await http.put(
                "/v1/workspaces/acme/members/carol", headers=auth("alice"), json={"role": "admin"}
            )
            assert r.status_code == 200 and r.json()["role"] == "admin"
            r = await http.put(
                "/v1/workspaces/acme/members/carol", headers=auth("alice"), json={"role": "member"}
            )
            assert r.status_code == 200 and r.json()["role"] == "member"
            # every member (guests too) lists members, in pages
            members = await collect(http, "/v1/workspaces/acme/members", "dave", limit=3)
            assert [(m["user"], m["role"]) for m in members] == [
                ("alice", "owner"),
                ("bob", "admin"),
                ("carol", "member"),
                ("dave", "guest"),
            ]
            mine = await collect(http, "/v1/workspaces", "bob", limit=1)
            assert [(m["workspace"], m["role"]) for m in mine] == [("acme", "admin")]
            # a second workspace of alice's
            r = await http.post("/v1/workspaces", headers=auth("alice"), json={"name": "Side"})
            assert r.status_code == 201 and r.json()["id"].startswith("w")
            mine = await collect(http, "/v1/workspaces", "alice", limit=1)
            assert len(mine) == 2 and {m["role"] for m in mine} == {"owner"}


async def test_workspace_visibility_and_create_errors(gateway: Gateway) -> None:
    with trio.fail_after(30):
        async with http_client(gateway) as http:
            await make_user(http, "alice")
            await make_user(http, "eve")
            ws = await make_workspace(http, "alice", {"bob": "member"})
            # non-members and unknown ids look alike: 404 reason workspace
            for user, path in (
                ("eve", f"/v1/workspaces/{ws}"),
                ("eve", f"/v1/workspaces/{ws}/members"),
                ("alice", "/v1/workspaces/nope"),
                ("alice", "/v1/workspaces/nope/members"),
            ):
                r = await http.get(path, headers=auth(user))
                check_error(r, 404, "not_found", reason="workspace")
            r = await http.put(
                f"/v1/workspaces/{ws}/members/eve", headers=auth("eve"), json={"role": "member"}
            )
            check_error(r, 404, "not_found", reason="workspace")
            r = await http.delete(f"/v1/workspaces/{ws}/members/bob", headers=auth("eve"))
            check_error(r, 404, "not_found", reason="workspace")
            # creating: no profile, taken id, bad id, bad name, unknown field, malformed
            r = await http.post("/v1/workspaces", headers=auth("ghost"), json={"name": "G"})
            check_error(r, 404, "not_found", reason="user")
            r = await http.post("/v1/workspaces", headers=auth("eve"), json={"name": "X", "id": ws})
            check_error(r, 409, "already_exists", reason="workspace")
            for body, field in (
                ({"name": "X", "id": "-bad"}, "id"),
                ({"name": "X", "id": "a" * 65}, "id"),
                ({"name": "x" * 81}, "name"),
                ({"name": ""}, "name"),
                ({}, "name"),
                ({"name": "X", "owner": "eve"}, "owner"),
            ):
                r = await http.post("/v1/workspaces", headers=auth("eve"), json=body)
                assert check_error(r, 400, "invalid_field").get("field") == field, body
            r = await http.post(
                "/v1/workspaces",
                headers={**auth("eve"), "content-type": "application/json"},
                content=b"{nope",
            )
            check_error(r, 400, "invalid_field")


async def test_member_permissions(gateway: Gateway) -> None:
    with trio.fail_after(30):
        async with http_client(gateway) as http:
            await make_user(http, "alice")
            await make_user(http, "frank")
            await make_user(http, "gina")
            ws = await make_workspace(
                http, "alice", {"bob": "admin", "carol": "member", "dave": "guest"}
            )

            async def put(actor: str, user: str, role: str) -> httpx.Response:
                return await http.put(
                    f"/v1/workspaces/{ws}/members/{user}", headers=auth(actor), json={"role": role}
                )

            check_error(await put("carol", "frank", "member"), 403, "forbidden")  # non-manager
            check_error(await put("dave", "frank", "guest"), 403, "forbidden")  # guest
            check_error(await put("bob", "frank", "admin"), 403, "forbidden")  # not below bob
            check_error(await put("alice", "frank", "owner"), 403, "forbidden")  # one owner
            check_error(await put("bob", "alice", "member"), 403, "forbidden")  # the owner
            check_error(await put("carol", "carol", "member"), 403, "forbidden")  # double, no right
            check_error(await put("alice", "nobody", "member"), 404, "not_found", reason="user")
            r = await put("alice", "frank", "superuser")
            assert check_error(r, 400, "invalid_field").get("field") == "role"
            r = await put("bob", "frank", "member")
            assert r.status_code == 201  # an admin adds members
            # removals
            r = await http.delete(f"/v1/workspaces/{ws}/members/frank", headers=auth("carol"))
            check_error(r, 403, "forbidden")
            r = await http.delete(f"/v1/workspaces/{ws}/members/alice", headers=auth("bob"))
            check_error(r, 403, "forbidden")
            r = await http.delete(f"/v1/workspaces/{ws}/members/alice", headers=auth("alice"))
            check_error(r, 403, "forbidden")  # the owner cannot leave
            r = await http.delete(f"/v1/workspaces/{ws}/members/frank", headers=auth("bob"))
            assert r.status_code == 204 and r.content == b""
            r = await http.delete(f"/v1/workspaces/{ws}/members/frank", headers=auth("bob"))
            check_error(r, 404, "not_found", reason="member")  # double remove
            r = await http.delete(f"/v1/workspaces/{ws}/members/gina", headers=auth("bob"))
            check_error(r, 404, "not_found", reason="member")  # never a member
            r = await http.delete(f"/v1/workspaces/{ws}/members/carol", headers=auth("carol"))
            assert r.status_code == 204  # leaving
            r = await http.delete(f"/v1/workspaces/{ws}/members/carol", headers=auth("carol"))
            check_error(r, 404, "not_found", reason="workspace")  # no longer a member
            r = await http.get(f"/v1/workspaces/{ws}", headers=auth("carol"))
            check_error(r, 404, "not_found", reason="workspace")


async def test_paging_errors(gateway: Gateway) -> None:
    with trio.fail_after(30):
        async with http_client(gateway) as http:
            await make_user(http, "alice")
            ws = await make_workspace(http, "alice", {"bob": "member", "carol": "member"})
            path = f"/v1/workspaces/{ws}/members"
            r = await http.get(path, headers=auth("alice"), params={"limit": 1})
            cursor = r.json()["cursor"]
            assert r.status_code == 200 and isinstance(cursor, str)
            for limit in ("0", "201", "x", "-1", "1.5", ""):
                r = await http.get(path, headers=auth("alice"), params={"limit": limit})
                error = check_error(r, 400, "invalid_field")
                assert error.get("field") == "limit", limit
            _, _, sig = cursor.partition(".")
            # another payload (a later start key) under the genuine signature
            payload = f'["members\\u0000{ws}","bob"]'.encode()
            forged = base64.urlsafe_b64encode(payload).decode().rstrip("=")
            for bad in (
                cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB"),
                f"{forged}.{sig}",
                "garbage",
                "",
            ):
                r = await http.get(path, headers=auth("alice"), params={"cursor": bad})
                error = check_error(r, 400, "invalid_field", reason="bad_cursor")
                assert error.get("field") == "cursor"
            # a cursor is valid only for the listing that returned it
            r = await http.get("/v1/workspaces", headers=auth("alice"), params={"cursor": cursor})
            check_error(r, 400, "invalid_field", reason="bad_cursor")
            r = await http.get(path, headers=auth("bob"), params={"cursor": cursor, "limit": 5})
            assert r.status_code == 200  # same listing, another caller: fine
            assert [m["user"] for m in r.json()["items"]] == ["bob", "carol"]
