"""REST: user profiles (/v1/users), auth and body errors, over real HTTP."""

from __future__ import annotations

import httpx
import trio

from gateway.app import Gateway
from tests.conftest import token
from tests.routes.domain_helpers import auth, check_error, http_client, make_user


async def test_profile_create_read_update(gateway: Gateway) -> None:
    with trio.fail_after(20):
        async with http_client(gateway) as http:
            r = await http.get("/v1/users/me", headers=auth("alice"))
            check_error(r, 404, "not_found", reason="user")
            r = await http.put(
                "/v1/users/me",
                headers=auth("alice"),
                json={"email": " Alice@Example.COM ", "display_name": "Alice"},
            )
            assert r.status_code == 201, r.text
            alice = r.json()
            assert alice["id"] == "alice" and alice["email"] == "alice@example.com"
            assert alice["version"] == 1 and alice["avatar_url"] is None
            assert alice["status_text"] == ""
            r = await http.get("/v1/users/me", headers=auth("alice"))
            assert r.status_code == 200 and r.json() == alice
            # any authenticated user reads any profile
            r = await http.get("/v1/users/alice", headers=auth("bob"))
            assert r.status_code == 200 and r.json() == alice
            r = await http.get("/v1/users/nobody", headers=auth("bob"))
            check_error(r, 404, "not_found", reason="user")
            # creating again: already exists
            r = await http.put(
                "/v1/users/me",
                headers=auth("alice"),
                json={"email": "alice2@example.com", "display_name": "A"},
            )
            check_error(r, 409, "already_exists", reason="user")
            # update with the version
            r = await http.put(
                "/v1/users/me",
                headers=auth("alice"),
                json={
                    "expected_version": 1,
                    "status_text": "on leave",
                    "avatar_url": "https://example.com/a.png",
                },
            )
            assert r.status_code == 200, r.text
            assert r.json()["version"] == 2 and r.json()["status_text"] == "on leave"
            assert r.json()["avatar_url"] == "https://example.com/a.png"
            # stale version: 409 with the current version
            r = await http.put("/v1/users/me", headers=auth("alice"), json={"expected_version": 1})
            error = check_error(r, 409, "stale_version", reason="version")
            assert error["current"] == 2
            r = await http.put(
                "/v1/users/me",
                headers=auth("alice"),
                json={"expected_version": 2, "avatar_url": None},
            )
            assert r.status_code == 200 and r.json()["avatar_url"] is None
            # updating a profile that does not exist
            r = await http.put("/v1/users/me", headers=auth("carol"), json={"expected_version": 1})
            check_error(r, 404, "not_found", reason="user")
            # another user's email
            await make_user(http, "bob")
            r = await http.put(
                "/v1/users/me",
                headers=auth("bob"),
                json={"expected_version": 1, "email": "ALICE@example.com"},
            )
            check_error(r, 409, "already_exists", reason="email")
            r = await http.put(
                "/v1/users/me",
                headers=auth("carol"),
                json={"email": "alice@example.com", "display_name": "Carol"},
            )
            check_error(r, 409, "already_exists", reason="email")


async def test_profile_bad_bodies(gateway: Gateway) -> None:
    me = auth("dora")
    with trio.fail_after(20):
        async with http_client(gateway) as http:
            cases: list[tuple[object, str | None]] = [
                ({"email": "d@example.com", "display_name": "x" * 81}, "display_name"),
                ({"email": "d@example.com", "display_name": "D", "nick": "d"}, "nick"),
                ({"display_name": "D"}, "email"),
                ({"email": "d@example.com"}, "display_name"),
                ({"email": "not an email", "display_name": "D"}, "email"),
                ({"email": "d@example.com", "display_name": "D\n"}, "display_name"),
                ({"email": "d@example.com", "display_name": "D", "status_text": "s" * 141}, None),
                ({"email": "d@example.com", "display_name": "D", "avatar_url": "http://x"}, None),
                ({"expected_version": 0}, "expected_version"),
                ({"expected_version": "1"}, "expected_version"),
                ({"expected_version": 2**63}, "expected_version"),  # beyond SQLite's INTEGER
                ([], None),
            ]
            for body, field in cases:
                r = await http.put("/v1/users/me", headers=me, json=body)
                error = check_error(r, 400, "invalid_field")
                if field is not None:
                    assert error.get("field") == field, (body, error)
                    assert field in error["message"] or field == "email", error
            r = await http.put(
                "/v1/users/me",
                headers={**me, "content-type": "application/json"},
                content=b'{"email": "d@example.com",',
            )
            check_error(r, 400, "invalid_field")
            r = await http.put(
                "/v1/users/me",
                headers={**me, "content-type": "text/plain"},
                content=b'{"email": "d@example.com", "display_name": "D"}',
            )
            check_error(r, 415, "invalid_field")
            r = await http.put(
                "/v1/users/me",
                headers={**me, "content-type": "application/json"},
                content=b'{"email": "' + b"x" * 70_000 + b'"}',
            )
            check_error(r, 413, "too_large")
            # nothing was created by any of these
            r = await http.get("/v1/users/me", headers=me)
            check_error(r, 404, "not_found", reason="user")


async def test_provisioning_with_admin_tokens(gateway: Gateway) -> None:
    body = {"email": "erin@example.com", "display_name": "Erin"}
    with trio.fail_after(20):
        async with http_client(gateway) as http:
            r = await http.put("/v1/users/erin", headers=auth("mallory"), json=body)
            check_error(r, 403, "forbidden")
            r = await http.put("/v1/users/erin", headers=auth("ops", admin=True), json=body)
            assert r.status_code == 201 and r.json()["id"] == "erin"
            r = await http.put(
                "/v1/users/erin",
                headers=auth("ops", admin=True),
                json={"expected_version": 1, "display_name": "Erin E."},
            )
            assert r.status_code == 200 and r.json()["display_name"] == "Erin E."
            # the user's own id through the provisioning path is allowed
            r = await http.put("/v1/users/erin", headers=auth("erin"), json={"expected_version": 2})
            assert r.status_code == 200 and r.json()["version"] == 3
            # user ids with a slash are addressable
            r = await http.put(
                "/v1/users/team/frank",
                headers=auth("ops", admin=True),
                json={"email": "frank@example.com", "display_name": "Frank"},
            )
            assert r.status_code == 201 and r.json()["id"] == "team/frank"
            r = await http.get("/v1/users/team/frank", headers=auth("erin"))
            assert r.status_code == 200 and r.json()["id"] == "team/frank"
            r = await http.put("/v1/users/" + "u" * 129, headers=auth("ops", admin=True), json=body)
            check_error(r, 400, "invalid_field")


async def test_authentication_errors(gateway: Gateway) -> None:
    with trio.fail_after(20):
        async with http_client(gateway) as http:
            for method, path in (
                ("GET", "/v1/users/me"),
                ("PUT", "/v1/users/me"),
                ("GET", "/v1/users/alice"),
                ("GET", "/v1/workspaces"),
                ("POST", "/v1/workspaces"),
                ("GET", "/v1/channels/ch.x"),
                ("DELETE", "/v1/channels/ch.x/members/alice"),
            ):
                r = await http.request(method, path, json={})
                check_error(r, 401, "not_authenticated")
                r = await http.request(
                    method, path, json={}, headers={"authorization": "Bearer forged.token.x"}
                )
                check_error(r, 401, "auth_failed")
            expired = {"authorization": f"Bearer {token('alice', ttl=-60)}"}
            r = await http.get("/v1/users/me", headers=expired)
            check_error(r, 401, "auth_failed")
            r = await http.patch("/v1/users/me", headers=auth("alice"), json={})
            check_error(r, 405, "invalid_field")


async def test_openapi_document_is_served(gateway: Gateway) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            r = await http.get("/openapi.yaml")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/yaml")
            assert r.text.startswith("openapi: 3.1")
            assert "/v1/workspaces/{workspace}/members/{user}:" in r.text
