"""DynamoDB operations of the domain store: users, workspaces and members.

Each changing operation reads the facts its rule needs (consistent ``GetItem`` or one
``BatchGetItem``), decides with :mod:`gateway.domain.rules` in the same order as the
SQLite adapter (so both refuse the same way), then sends one ``TransactWriteItems`` whose
conditions assert exactly those facts. If a condition fails, nothing was written: the
operation reads again and decides again (see :mod:`gateway.store._domain_dynamo_table`).
Records are validated before they get here; items read back are trusted.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.domain import rules
from gateway.domain.errors import AlreadyExists, NotFound, StaleVersion
from gateway.domain.model import Member, Role, User, Workspace, check_email, revalidated
from gateway.store import _domain_dynamo_items as i
from gateway.store._cursor import CursorCodec
from gateway.store._domain_dynamo_table import MAX_DECISIONS, DomainTable
from gateway.store.domain import Page

# Cursor scopes: the same as the SQLite adapter's, with the same sort keys inside.
USER_WORKSPACES = "user-workspaces\x00{}"
MEMBERS = "members\x00{}"


def not_found_user(user: str) -> NotFound:
    return NotFound(f"no user {user!r}", reason="user")


def not_found_workspace(workspace: str) -> NotFound:
    return NotFound(f"no workspace {workspace!r}", reason="workspace")


# -- users ---------------------------------------------------------------------------------


async def create_user(t: DomainTable, user: User) -> User:
    cancelled = await t.transact(
        [
            i.put(t.name, i.USER, i.user_item(user), i.ABSENT),
            i.put(t.name, i.EMAIL, i.email_item(user), i.ABSENT),
        ]
    )
    if cancelled is None:
        return user
    if cancelled.failed(0):
        raise AlreadyExists(f"user {user.id!r} exists", reason="user")
    raise AlreadyExists("another user has this email", reason="email")


async def get_user(t: DomainTable, user_id: str) -> User | None:
    item = await t.get(i.user_key(user_id))
    return None if item is None else i.item_user(item)


async def get_user_by_email(t: DomainTable, email: str) -> User | None:
    item = await t.get(i.email_key(email))
    return None if item is None else i.item_user(item)


async def update_user(
    t: DomainTable, user_id: str, expected_version: int, changes: dict[str, Any]
) -> User:
    for _ in range(MAX_DECISIONS):
        current = await get_user(t, user_id)
        if current is None:
            raise not_found_user(user_id)
        if current.version != expected_version:
            raise StaleVersion(
                f"user {user_id!r} is at version {current.version}", current=current.version
            )
        if "email" in changes:
            changes = changes | {"email": check_email(changes["email"])}
        new = revalidated(msgspec.structs.replace(current, **changes, version=current.version + 1))
        mine = i.user_is(user_id)
        parts = [i.put(t.name, i.USER, i.user_item(new), i.version_is(expected_version))]
        if new.email == current.email:
            parts.append(i.put(t.name, i.EMAIL, i.email_item(new), mine))
        else:
            parts.append(i.delete(t.name, i.EMAIL, i.email_key(current.email), mine))
            parts.append(i.put(t.name, i.EMAIL, i.email_item(new), i.ABSENT))
        cancelled = await t.transact(parts)
        if cancelled is None:
            return new
        stored = cancelled.item(0)
        if stored is not None and (version := int(stored["version"]["N"])) != expected_version:
            raise StaleVersion(f"user {user_id!r} is at version {version}", current=version)
        if not cancelled.failed(0) and cancelled.failed(2):
            raise AlreadyExists("another user has this email", reason="email")
    raise t.gave_up("update_user")


# -- workspaces ----------------------------------------------------------------------------


async def create_workspace(t: DomainTable, workspace: Workspace) -> Workspace:
    w = workspace
    ws_side, user_side = i.member_items(
        Member(workspace=w.id, user=w.owner, role=Role.OWNER, joined_ms=w.created_ms)
    )
    cancelled = await t.transact(
        [
            i.check_exists(t.name, i.user_key(w.owner)),
            i.put(t.name, i.WORKSPACE, i.workspace_item(w), i.ABSENT),
            i.put(t.name, i.WORKSPACE_MEMBER, ws_side),
            i.put(t.name, i.WORKSPACE_MEMBER, user_side),
        ]
    )
    if cancelled is None:
        return workspace
    if cancelled.failed(0):
        raise not_found_user(w.owner)
    raise AlreadyExists(f"workspace {w.id!r} exists", reason="workspace")


async def get_workspace(t: DomainTable, workspace: str) -> Workspace | None:
    item = await t.get(i.workspace_key(workspace))
    return None if item is None else i.item_workspace(item)


async def list_user_workspaces(
    t: DomainTable, codec: CursorCodec, user: str, limit: int, cursor: str | None
) -> Page[Member]:
    scope = USER_WORKSPACES.format(user)
    after = None if cursor is None else str(codec.decode(scope, cursor, 1)[0])
    items, more = await t.query(f"U#{user}", "W#", after, limit)
    members = tuple(i.item_member(item) for item in items)
    return Page(members, codec.encode(scope, (members[-1].workspace,)) if more else None)


# -- members -------------------------------------------------------------------------------


async def add_member(
    t: DomainTable, now: int, workspace: str, user: str, role: Role, *, actor: str
) -> bool:
    for _ in range(MAX_DECISIONS):
        ws_key, actor_key = i.workspace_key(workspace), i.member_key(workspace, actor)
        target_key, user_key = i.member_key(workspace, user), i.user_key(user)
        got = await t.batch_get([ws_key, actor_key, target_key, user_key])
        if ws_key not in got:
            raise not_found_workspace(workspace)
        actor_role = i.item_role(got.get(actor_key))
        rules.check_add_member(actor_role, role)
        assert actor_role is not None  # check_add_member raised Forbidden otherwise
        if user_key not in got:
            raise not_found_user(user)
        if target_key in got:
            return False
        ws_side, user_side = i.member_items(
            Member(workspace=workspace, user=user, role=role, joined_ms=now)
        )
        cancelled = await t.transact(
            [
                i.check_role(t.name, workspace, actor, actor_role),
                i.check_exists(t.name, user_key),
                i.put(t.name, i.WORKSPACE_MEMBER, ws_side, i.ABSENT),
                i.put(t.name, i.WORKSPACE_MEMBER, user_side, i.ABSENT),
            ]
        )
        if cancelled is None:
            return True
    raise t.gave_up("add_member")


async def remove_member(t: DomainTable, workspace: str, user: str, actor: str) -> bool:
    for _ in range(MAX_DECISIONS):
        ws_key, actor_key = i.workspace_key(workspace), i.member_key(workspace, actor)
        target_key = i.member_key(workspace, user)
        got = await t.batch_get([ws_key, actor_key, target_key])
        if ws_key not in got:
            raise not_found_workspace(workspace)
        target = i.item_role(got.get(target_key))
        actor_role = i.item_role(got.get(actor_key))
        rules.check_remove_member(actor_role, target, self_removal=actor == user)
        if target is None:
            return False
        parts = [
            i.delete(t.name, i.WORKSPACE_MEMBER, target_key, i.role_is(target)),
            i.delete(t.name, i.WORKSPACE_MEMBER, i.membership_key(workspace, user)),
        ]
        if actor != user:
            assert actor_role is not None  # check_remove_member raised Forbidden otherwise
            parts.append(i.check_role(t.name, workspace, actor, actor_role))
        if await t.transact(parts) is None:
            return True
    raise t.gave_up("remove_member")


async def get_member(t: DomainTable, workspace: str, user: str) -> Member | None:
    item = await t.get(i.member_key(workspace, user))
    return None if item is None else i.item_member(item)


async def set_role(t: DomainTable, workspace: str, user: str, role: Role, actor: str) -> Member:
    for _ in range(MAX_DECISIONS):
        ws_key, actor_key = i.workspace_key(workspace), i.member_key(workspace, actor)
        target_key = i.member_key(workspace, user)
        got = await t.batch_get([ws_key, actor_key, target_key])
        if ws_key not in got:
            raise not_found_workspace(workspace)
        item = got.get(target_key)
        member = None if item is None else i.item_member(item)
        actor_role = i.item_role(got.get(actor_key))
        rules.check_set_role(actor_role, None if member is None else member.role, role)
        assert member is not None and actor_role is not None  # else check_set_role raised
        if member.role is role:
            return member
        cancelled = await t.transact(
            [
                i.check_role(t.name, workspace, actor, actor_role),
                i.set_role(t.name, target_key, member.role, role),
                i.set_role(t.name, i.membership_key(workspace, user), member.role, role),
            ]
        )
        if cancelled is None:
            return msgspec.structs.replace(member, role=role)
    raise t.gave_up("set_role")


async def list_members(
    t: DomainTable, codec: CursorCodec, workspace: str, limit: int, cursor: str | None
) -> Page[Member]:
    scope = MEMBERS.format(workspace)
    after = None if cursor is None else str(codec.decode(scope, cursor, 1)[0])
    items, more = await t.query(f"W#{workspace}", "M#", after, limit)
    members = tuple(i.item_member(item) for item in items)
    return Page(members, codec.encode(scope, (members[-1].user,)) if more else None)
