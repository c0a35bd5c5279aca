"""The DomainStore contract, part 2: paging, cursors, durability, statistics.

Every test runs against every factory of ``tests/contract/domain_factories.py``.
"""

from __future__ import annotations

import pytest

from gateway.domain.errors import (
    AlreadyExists,
    BadCursor,
    InvalidField,
)
from gateway.domain.model import Role
from gateway.errors import ErrorCode, StoreUnavailable
from gateway.store.domain import MAX_PAGE, DomainStore
from tests.contract.domain_factories import (
    OTHER_CURSOR_KEY,
    DomainHandle,
    DomainOpener,
    domain_fixture,  # noqa: F401
    domain_opener_fixture,  # noqa: F401
    populate,
    refused,
)

# -- paging ------------------------------------------------------------------------------


async def test_list_members_pages_through_everyone_once(domain: DomainHandle) -> None:
    s = domain.store
    await s.create_user("owner", "owner@example.com", "Owner")
    await s.create_workspace("Big", owner="owner", workspace_id="big")
    users = [f"user{i:02d}" for i in range(23)]
    for user in users:
        await s.create_user(user, f"{user}@example.com", user)
        await s.add_member("big", user, Role.MEMBER, actor="owner")
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = await s.list_members("big", limit=5, cursor=cursor)
        assert len(page.items) <= 5
        seen += [m.user for m in page.items]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == sorted([*users, "owner"])
    assert (await s.list_members("big", limit=MAX_PAGE)).cursor is None
    assert (await s.list_members("nowhere", limit=5)).items == ()


async def test_list_user_workspaces_pages(domain: DomainHandle) -> None:
    s = domain.store
    await s.create_user("u", "u@example.com", "U")
    ids = [f"ws{i}" for i in range(7)]
    for ws in ids:
        await s.create_workspace(ws, owner="u", workspace_id=ws)
    first = await s.list_user_workspaces("u", limit=4)
    rest = await s.list_user_workspaces("u", limit=4, cursor=first.cursor)
    assert [m.workspace for m in first.items + rest.items] == ids
    assert all(m.role is Role.OWNER for m in first.items)
    assert rest.cursor is None


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE + 1])
async def test_page_limits(domain: DomainHandle, limit: int) -> None:
    w = await populate(domain.store)
    with pytest.raises(InvalidField) as info:
        await domain.store.list_members(w.ws, limit=limit)
    assert info.value.field == "limit"


def tampered(cursor: str) -> list[str]:
    payload, _, tag = cursor.partition(".")
    flip = {"A": "B", "B": "A"}
    return [
        "",
        "garbage",
        ".",
        payload,
        f"{payload}.",
        f"{payload}.{tag}x",
        f"{payload}.{tag[:-2]}{flip.get(tag[-2], 'A')}{tag[-1]}",
        f"{payload[:-2]}{flip.get(payload[-2], 'A')}{payload[-1]}.{tag}",
        f"{payload}A.{tag}",
        f"{payload}.{tag}" + "=" * 2000,
        "é" + cursor,
    ]


async def test_tampered_cursors_are_refused(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    page = await s.list_members(w.ws, limit=2)
    assert page.cursor is not None
    for bad in tampered(page.cursor):
        with refused(BadCursor, "invalid_field", reason="bad_cursor") as info:
            await s.list_members(w.ws, limit=2, cursor=bad)
        assert info.value.field == "cursor" and info.value.code is ErrorCode.INVALID_FIELD


async def test_cursors_are_bound_to_their_listing(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    await s.add_member(w.ws2, "alice", Role.MEMBER, actor="owen")
    cursor = (await s.list_members(w.ws, limit=1)).cursor
    assert cursor is not None
    with pytest.raises(BadCursor):
        await s.list_members(w.ws2, limit=1, cursor=cursor)  # another workspace
    with pytest.raises(BadCursor):
        await s.list_user_workspaces("alice", limit=1, cursor=cursor)  # another listing
    theirs = (await s.list_user_workspaces("alice", limit=1)).cursor
    assert theirs is not None
    with pytest.raises(BadCursor):
        await s.list_user_workspaces("bob", limit=1, cursor=theirs)  # another user


async def test_cursors_of_another_key_are_refused(domain_opener: DomainOpener) -> None:
    async with domain_opener.open() as handle:
        w = await populate(handle.store)
        cursor = (await handle.store.list_members(w.ws, limit=1)).cursor
        assert cursor is not None
        assert (await handle.store.list_members(w.ws, limit=1, cursor=cursor)).items
    async with domain_opener.open(cursor_key=OTHER_CURSOR_KEY) as handle:
        with pytest.raises(BadCursor):
            await handle.store.list_members(w.ws, limit=1, cursor=cursor)


# -- durability and statistics -----------------------------------------------------------


async def snapshot(s: DomainStore, ws: str) -> tuple[object, ...]:
    return (
        await s.get_user("carol"),
        await s.get_user_by_email("dave@example.com"),
        await s.get_workspace(ws),
        await s.list_members(ws, limit=MAX_PAGE),
        await s.list_user_workspaces("alice", limit=MAX_PAGE),
    )


async def test_everything_survives_reopen(domain_opener: DomainOpener) -> None:
    async with domain_opener.open() as handle:
        w = await populate(handle.store)
        await handle.store.update_user("carol", expected_version=1, status_text="away")
        before = await snapshot(handle.store, w.ws)
    async with domain_opener.open() as handle:
        assert await snapshot(handle.store, w.ws) == before
    async with domain_opener.open("fresh") as handle:
        assert await handle.store.get_workspace(w.ws) is None


async def test_statistics_count_reads_writes_and_refusals(domain: DomainHandle) -> None:
    s = domain.store
    before = s.statistics()
    await s.create_user("u1", "u1@example.com", "U1")
    await s.get_user("u1")
    with pytest.raises(AlreadyExists):
        await s.create_user("u1", "u2@example.com", "U1")
    after = s.statistics()
    assert after.writes - before.writes == 1
    assert after.reads - before.reads == 1
    assert after.refusals - before.refusals == 1


async def test_a_closed_store_is_unavailable(domain_opener: DomainOpener) -> None:
    async with domain_opener.open() as handle:
        await handle.store.create_user("u1", "u1@example.com", "U1")
        await handle.store.aclose()
        await handle.store.aclose()  # idempotent
        with pytest.raises(StoreUnavailable):
            await handle.store.get_user("u1")
        with pytest.raises(StoreUnavailable):
            await handle.store.create_user("u2", "u2@example.com", "U2")
