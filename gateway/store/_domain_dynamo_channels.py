"""DynamoDB operations of the domain store: channels, channel members, direct conversations.

See :mod:`gateway.store._domain_dynamo_users` for how reads, rule checks and
transactions are done.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.domain import rules
from gateway.domain.errors import AlreadyExists, BadCursor, NotFound, StaleVersion
from gateway.domain.model import (
    Channel,
    ChannelKind,
    ChannelMember,
    Conversation,
    dm_channel_name,
    revalidated,
)
from gateway.errors import StoreUnavailable
from gateway.store import _domain_dynamo_items as i
from gateway.store._cursor import CursorCodec
from gateway.store._domain_dynamo_table import MAX_DECISIONS, DomainTable
from gateway.store._domain_dynamo_users import not_found_workspace
from gateway.store.domain import Page

# Cursor scopes: the same as the SQLite adapter's, with the same sort keys inside.
CHANNELS = "channels\x00{}"
CHANNEL_MEMBERS = "channel-members\x00{}"
USER_CHANNELS = "user-channels\x00{}\x00{}"


async def _require_channel(t: DomainTable, channel: str) -> Channel:
    found = await get_channel(t, channel)
    if found is None:
        raise NotFound(f"no channel {channel!r}", reason="channel")
    return found


# -- channels ------------------------------------------------------------------------------


async def create_channel(t: DomainTable, channel: Channel) -> Channel:
    c = channel
    ws_key, actor_key = i.workspace_key(c.workspace), i.member_key(c.workspace, c.created_by)
    for _ in range(MAX_DECISIONS):
        got = await t.batch_get([ws_key, actor_key])
        if ws_key not in got:
            raise not_found_workspace(c.workspace)
        actor_role = i.item_role(got.get(actor_key))
        rules.check_create_channel(actor_role)
        assert actor_role is not None  # check_create_channel raised Forbidden otherwise
        channel_side, user_side = i.channel_member_items(c, c.created_by, c.created_ms)
        cancelled = await t.transact(
            [
                i.check_role(t.name, c.workspace, c.created_by, actor_role),
                i.put(t.name, i.CHANNEL_NAME, i.name_item(c), i.ABSENT),
                i.put(t.name, i.CHANNEL, i.channel_item(c), i.ABSENT),
                i.put(t.name, i.CHANNEL_ENTRY, i.entry_item(c)),
                i.put(t.name, i.CHANNEL_MEMBER, channel_side),
                i.put(t.name, i.CHANNEL_MEMBER, user_side),
            ]
        )
        if cancelled is None:
            return channel
        if not cancelled.failed(0) and cancelled.failed(1):
            raise AlreadyExists(f"channel name {c.name!r} is taken", reason="channel_name")
    raise t.gave_up("create_channel")


async def get_channel(t: DomainTable, channel: str) -> Channel | None:
    item = await t.get(i.channel_key(channel))
    return None if item is None else i.item_channel(item)


async def list_channels(
    t: DomainTable, codec: CursorCodec, workspace: str, limit: int, cursor: str | None
) -> Page[Channel]:
    scope = CHANNELS.format(workspace)
    after: str | None = None
    if cursor is not None:
        position, name = codec.decode(scope, cursor, 2)
        if not isinstance(position, int) or not isinstance(name, str):
            raise BadCursor()
        after = i.entry_sk(position, name).removeprefix("P#")
    items, more = await t.query(f"W#{workspace}", "P#", after, limit)
    channels = tuple(i.item_channel(item) for item in items)
    if not more:
        return Page(channels)
    return Page(channels, codec.encode(scope, (channels[-1].position, channels[-1].name)))


async def update_channel(
    t: DomainTable, channel: str, actor: str, expected_version: int, changes: dict[str, Any]
) -> Channel:
    for _ in range(MAX_DECISIONS):
        current = await _require_channel(t, channel)
        actor_role = i.item_role(await t.get(i.member_key(current.workspace, actor)))
        rules.check_update_channel(actor_role, current)
        assert actor_role is not None  # check_update_channel raised Forbidden otherwise
        if current.version != expected_version:
            raise StaleVersion(
                f"channel {channel!r} is at version {current.version}", current=current.version
            )
        new = revalidated(msgspec.structs.replace(current, **changes, version=current.version + 1))
        parts = [
            i.check_role(t.name, current.workspace, actor, actor_role),
            i.put(t.name, i.CHANNEL, i.channel_item(new), i.version_is(expected_version)),
        ]
        if new.position != current.position:
            parts.append(i.delete(t.name, i.CHANNEL_ENTRY, i.entry_key(current)))
        parts.append(i.put(t.name, i.CHANNEL_ENTRY, i.entry_item(new)))
        if await t.transact(parts) is None:
            return new
    raise t.gave_up("update_channel")


# -- channel members -----------------------------------------------------------------------


async def is_channel_member(t: DomainTable, channel: str, user: str) -> bool:
    return await t.get(i.channel_member_key(channel, user)) is not None


async def join_channel(t: DomainTable, now: int, channel: str, user: str, actor: str) -> bool:
    self_join = actor == user
    for _ in range(MAX_DECISIONS):
        found = await _require_channel(t, channel)
        ws = found.workspace
        actor_key, target_key = i.member_key(ws, actor), i.member_key(ws, user)
        actor_in_key = i.channel_member_key(channel, actor)
        target_in_key = i.channel_member_key(channel, user)
        got = await t.batch_get([actor_key, target_key, actor_in_key, target_in_key])
        actor_role = i.item_role(got.get(actor_key))
        already = target_in_key in got
        if already and self_join and actor_role is not None and found.kind != ChannelKind.DM:
            return False  # a member joining again: nothing to decide, nothing to write
        target_role = i.item_role(got.get(target_key))
        rules.check_join_channel(
            found,
            actor_role=actor_role,
            actor_in_channel=actor_in_key in got,
            target_role=target_role,
            self_join=self_join,
        )
        if already:
            return False
        assert actor_role is not None and target_role is not None  # else the rule raised
        parts = [
            i.check(t.name, i.channel_key(channel), i.NOT_ARCHIVED),
            i.check_role(t.name, ws, actor, actor_role),
        ]
        if not self_join:
            parts.append(i.check_role(t.name, ws, user, target_role))
            if not rules.is_manager(actor_role):  # the rule relied on the actor's membership
                parts.append(i.check_exists(t.name, actor_in_key))
        channel_side, user_side = i.channel_member_items(found, user, now)
        parts.append(i.put(t.name, i.CHANNEL_MEMBER, channel_side, i.ABSENT))
        parts.append(i.put(t.name, i.CHANNEL_MEMBER, user_side, i.ABSENT))
        if await t.transact(parts) is None:
            return True
    raise t.gave_up("join_channel")


async def leave_channel(t: DomainTable, channel: str, user: str, actor: str) -> bool:
    self_leave = actor == user
    for _ in range(MAX_DECISIONS):
        found = await _require_channel(t, channel)
        ws = found.workspace
        actor_role = None if self_leave else i.item_role(await t.get(i.member_key(ws, actor)))
        rules.check_leave_channel(found, actor_role=actor_role, self_leave=self_leave)
        parts = [
            i.delete(t.name, i.CHANNEL_MEMBER, i.channel_member_key(channel, user), i.PRESENT),
            i.delete(t.name, i.CHANNEL_MEMBER, i.user_channel_key(ws, channel, user)),
        ]
        if not self_leave:
            assert actor_role is not None  # check_leave_channel raised Forbidden otherwise
            parts.append(i.check_role(t.name, ws, actor, actor_role))
        cancelled = await t.transact(parts)
        if cancelled is None:
            return True
        if cancelled.failed(0) and not cancelled.failed(2):
            return False  # there was no membership to delete
    raise t.gave_up("leave_channel")


async def list_channel_members(
    t: DomainTable, codec: CursorCodec, channel: str, limit: int, cursor: str | None
) -> Page[ChannelMember]:
    scope = CHANNEL_MEMBERS.format(channel)
    after = None if cursor is None else str(codec.decode(scope, cursor, 1)[0])
    items, more = await t.query(f"C#{channel}", "M#", after, limit)
    members = tuple(i.item_channel_member(item) for item in items)
    return Page(members, codec.encode(scope, (members[-1].user,)) if more else None)


async def list_user_channels(
    t: DomainTable,
    codec: CursorCodec,
    workspace: str,
    user: str,
    limit: int,
    *,
    cursor: str | None,
) -> Page[ChannelMember]:
    scope = USER_CHANNELS.format(workspace, user)
    after = None if cursor is None else str(codec.decode(scope, cursor, 1)[0])
    prefix = i.user_channel_sk(workspace, "")
    items, more = await t.query(f"U#{user}", prefix, after, limit)
    members = tuple(i.item_channel_member(item) for item in items)
    return Page(members, codec.encode(scope, (members[-1].channel,)) if more else None)


# -- direct conversations ------------------------------------------------------------------


async def get_conversation(t: DomainTable, channel: str) -> Conversation | None:
    item = await t.get(i.channel_key(channel))
    return None if item is None else i.item_conversation(item)


async def open_dm(t: DomainTable, conversation: Conversation) -> Conversation:
    """``conversation`` as built for this call; the stored one if it was opened before."""
    c = conversation
    ws_key, channel_key = i.workspace_key(c.workspace), i.channel_key(c.id)
    member_keys = {user: i.member_key(c.workspace, user) for user in c.participants}
    channel = revalidated(
        Channel(
            id=c.id,
            workspace=c.workspace,
            name=dm_channel_name(c.id),
            kind=ChannelKind.DM,
            created_by=c.created_by,
            created_ms=c.created_ms,
        )
    )
    for _ in range(MAX_DECISIONS):
        got = await t.batch_get([ws_key, channel_key, *member_keys.values()])
        if ws_key not in got:
            raise not_found_workspace(c.workspace)
        roles = {user: i.item_role(got.get(k)) for user, k in member_keys.items()}
        rules.check_open_dm(c.created_by, roles)
        if channel_key in got:
            existing = i.item_conversation(got[channel_key])
            if existing is None:  # a DM id is never another channel's
                raise StoreUnavailable(f"channel {c.id!r} is stored without its participants")
            return existing
        parts = [i.put(t.name, i.CONVERSATION, i.channel_item(channel, c.participants), i.ABSENT)]
        for user in c.participants:
            channel_side, user_side = i.channel_member_items(channel, user, c.created_ms)
            parts.append(i.check_exists(t.name, member_keys[user]))
            parts.append(i.put(t.name, i.CHANNEL_MEMBER, channel_side))
            parts.append(i.put(t.name, i.CHANNEL_MEMBER, user_side))
        if await t.transact(parts) is None:
            return conversation
    raise t.gave_up("open_dm")
