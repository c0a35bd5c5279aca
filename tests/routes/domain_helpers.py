"""Helpers of the chat-domain REST tests: authenticated clients, set-up calls, error checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from gateway.app import Gateway
from tests.conftest import token


def auth(user: str, *, admin: bool = False) -> dict[str, str]:
    return {"authorization": f"Bearer {token(user, admin=admin)}"}


@asynccontextmanager
async def http_client(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as http:
        yield http


def check_error(
    r: httpx.Response, status: int, code: str, *, reason: str | None = None
) -> dict[str, Any]:
    """Assert the status and the JSON error shape; return ``body["error"]``."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    if reason is not None:
        assert error.get("reason") == reason, error
    return error


async def make_user(http: httpx.AsyncClient, user: str) -> dict[str, Any]:
    r = await http.put(
        "/v1/users/me",
        headers=auth(user),
        json={"email": f"{user}@example.com", "display_name": user.title()},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def make_workspace(
    http: httpx.AsyncClient, owner: str, members: dict[str, str] | None = None
) -> str:
    """A workspace owned by ``owner`` (its profile must exist) with ``members`` (user ->
    role; their profiles are created here) added by the owner."""
    r = await http.post("/v1/workspaces", headers=auth(owner), json={"name": f"{owner}'s"})
    assert r.status_code == 201, r.text
    ws: str = r.json()["id"]
    for user, role in (members or {}).items():
        await make_user(http, user)
        r = await http.put(
            f"/v1/workspaces/{ws}/members/{user}", headers=auth(owner), json={"role": role}
        )
        assert r.status_code == 201, r.text
    return ws


async def make_channel(
    http: httpx.AsyncClient, ws: str, creator: str, name: str, kind: str = "public"
) -> dict[str, Any]:
    r = await http.post(
        f"/v1/workspaces/{ws}/channels",
        headers=auth(creator),
        json={"name": name, "kind": kind},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def collect(
    http: httpx.AsyncClient, path: str, user: str, limit: int, **query: str
) -> list[Any]:
    """Every item of a paged listing, following cursors."""
    items: list[Any] = []
    params: dict[str, Any] = {"limit": limit, **query}
    for _ in range(100):
        r = await http.get(path, headers=auth(user), params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {"items", "cursor"}
        items += page["items"]
        if page["cursor"] is None:
            return items
        params["cursor"] = page["cursor"]
    raise AssertionError("more than 100 pages")
