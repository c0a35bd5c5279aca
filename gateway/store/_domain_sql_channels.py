"""SQLite operations of the domain store: channels, channel members, direct conversations.

See :mod:`gateway.store._domain_sql` for how transactions and rule checks are done.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from gateway.domain import rules
from gateway.domain.errors import AlreadyExists, NotFound, StaleVersion
from gateway.domain.model import (
    Channel,
    ChannelKind,
    ChannelMember,
    Conversation,
    dm_channel_name,
    revalidated,
)
from gateway.store._cursor import CursorCodec
from gateway.store._domain_sql import Listing, one, require_workspace, role_of
from gateway.store._sqlite_wal import transaction
from gateway.store.domain import Page

CHANNEL = (
    "SELECT id, workspace, name, kind, topic, archived, position, created_by, created_ms,"
    " version FROM channels"
)
CHANNEL_MEMBER = "SELECT channel, user_id, joined_ms FROM channel_members"
CONVERSATION = "SELECT id, workspace, participants, created_by, created_ms FROM conversations"


def channel_row(row: Any) -> Channel:
    cid, workspace, name, kind, topic, archived, position, created_by, created_ms, version = row
    return Channel(
        id=cid,
        workspace=workspace,
        name=name,
        kind=ChannelKind(kind),
        topic=topic,
        archived=bool(archived),
        position=position,
        created_by=created_by,
        created_ms=created_ms,
        version=version,
    )


def channel_member_row(row: Any) -> ChannelMember:
    channel, user, joined_ms = row
    return ChannelMember(channel=channel, user=user, joined_ms=joined_ms)


def conversation_row(row: Any) -> Conversation:
    cid, workspace, participants, created_by, created_ms = row
    return Conversation(
        id=cid,
        workspace=workspace,
        participants=tuple(msgspec.json.decode(participants, type=list[str])),
        created_by=created_by,
        created_ms=created_ms,
    )


def _insert_channel(conn: sqlite3.Connection, c: Channel) -> None:
    conn.execute(
        "INSERT INTO channels (id, workspace, name, kind, topic, archived, position, created_by,"
        " created_ms, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (c.id, c.workspace, c.name, c.kind.value, c.topic, int(c.archived), c.position,
         c.created_by, c.created_ms, c.version),
    )  # fmt: skip


def _insert_member(conn: sqlite3.Connection, channel: Channel, user: str, now: int) -> None:
    conn.execute(
        "INSERT INTO channel_members (channel, user_id, workspace, joined_ms) VALUES (?, ?, ?, ?)",
        (channel.id, user, channel.workspace, now),
    )


def _require_channel(conn: sqlite3.Connection, channel: str) -> Channel:
    found = get_channel(conn, channel)
    if found is None:
        raise NotFound(f"no channel {channel!r}", reason="channel")
    return found


# -- channels ------------------------------------------------------------------------------


def create_channel(conn: sqlite3.Connection, channel: Channel) -> Channel:
    with transaction(conn):
        require_workspace(conn, channel.workspace)
        rules.check_create_channel(role_of(conn, channel.workspace, channel.created_by))
        sql = "SELECT 1 FROM channels WHERE workspace = ? AND name = ?"
        if one(conn, sql, (channel.workspace, channel.name)) is not None:
            raise AlreadyExists(f"channel name {channel.name!r} is taken", reason="channel_name")
        _insert_channel(conn, channel)
        _insert_member(conn, channel, channel.created_by, channel.created_ms)
    return channel


def get_channel(conn: sqlite3.Connection, channel: str) -> Channel | None:
    row = one(conn, f"{CHANNEL} WHERE id = ?", (channel,))
    return None if row is None else channel_row(row)


_CHANNELS = Listing(
    f"{CHANNEL} WHERE workspace = ? AND kind != 'dm' AND (position, name) > (?, ?)"
    " ORDER BY position, name LIMIT ?",
    channel_row,
    lambda c: (c.position, c.name),
    start=(-1, ""),
)


def list_channels(
    conn: sqlite3.Connection, codec: CursorCodec, workspace: str, limit: int, cursor: str | None
) -> Page[Channel]:
    return _CHANNELS.page(conn, codec, f"channels\x00{workspace}", cursor, limit, workspace)


def update_channel(
    conn: sqlite3.Connection,
    channel: str,
    actor: str,
    expected_version: int,
    changes: dict[str, Any],
) -> Channel:
    with transaction(conn):
        current = _require_channel(conn, channel)
        rules.check_update_channel(role_of(conn, current.workspace, actor), current)
        if current.version != expected_version:
            raise StaleVersion(
                f"channel {channel!r} is at version {current.version}", current=current.version
            )
        new = revalidated(msgspec.structs.replace(current, **changes, version=current.version + 1))
        conn.execute(
            "UPDATE channels SET topic = ?, archived = ?, position = ?, version = ?"
            " WHERE id = ? AND version = ?",
            (new.topic, int(new.archived), new.position, new.version, channel, expected_version),
        )
    return new


# -- channel members -----------------------------------------------------------------------


def is_channel_member(conn: sqlite3.Connection, channel: str, user: str) -> bool:
    sql = "SELECT 1 FROM channel_members WHERE channel = ? AND user_id = ?"
    return one(conn, sql, (channel, user)) is not None


def join_channel(conn: sqlite3.Connection, now: int, channel: str, user: str, actor: str) -> bool:
    with transaction(conn):
        found = _require_channel(conn, channel)
        actor_role = role_of(conn, found.workspace, actor)
        already = is_channel_member(conn, channel, user)
        if already and actor == user and actor_role is not None and found.kind != ChannelKind.DM:
            return False  # a member joining again: nothing to decide, nothing to write
        rules.check_join_channel(
            found,
            actor_role=actor_role,
            actor_in_channel=is_channel_member(conn, channel, actor),
            target_role=role_of(conn, found.workspace, user),
            self_join=actor == user,
        )
        if already:
            return False
        _insert_member(conn, found, user, now)
    return True


def leave_channel(conn: sqlite3.Connection, channel: str, user: str, actor: str) -> bool:
    with transaction(conn):
        found = _require_channel(conn, channel)
        actor_role = role_of(conn, found.workspace, actor)
        rules.check_leave_channel(found, actor_role=actor_role, self_leave=actor == user)
        sql = "DELETE FROM channel_members WHERE channel = ? AND user_id = ?"
        removed = conn.execute(sql, (channel, user)).rowcount
    return removed > 0


_CHANNEL_MEMBERS = Listing(
    f"{CHANNEL_MEMBER} WHERE channel = ? AND user_id > ? ORDER BY user_id LIMIT ?",
    channel_member_row,
    lambda m: (m.user,),
)


def list_channel_members(
    conn: sqlite3.Connection, codec: CursorCodec, channel: str, limit: int, cursor: str | None
) -> Page[ChannelMember]:
    scope = f"channel-members\x00{channel}"
    return _CHANNEL_MEMBERS.page(conn, codec, scope, cursor, limit, channel)


_USER_CHANNELS = Listing(
    f"{CHANNEL_MEMBER} WHERE user_id = ? AND workspace = ? AND channel > ?"
    " ORDER BY channel LIMIT ?",
    channel_member_row,
    lambda m: (m.channel,),
)


def list_user_channels(
    conn: sqlite3.Connection,
    codec: CursorCodec,
    workspace: str,
    user: str,
    limit: int,
    *,
    cursor: str | None,
) -> Page[ChannelMember]:
    scope = f"user-channels\x00{workspace}\x00{user}"
    return _USER_CHANNELS.page(conn, codec, scope, cursor, limit, user, workspace)


# -- direct conversations ------------------------------------------------------------------


def get_conversation(conn: sqlite3.Connection, channel: str) -> Conversation | None:
    row = one(conn, f"{CONVERSATION} WHERE id = ?", (channel,))
    return None if row is None else conversation_row(row)


def open_dm(conn: sqlite3.Connection, conversation: Conversation) -> Conversation:
    """``conversation`` as built for this call; the stored one if it was opened before."""
    c = conversation
    with transaction(conn):
        require_workspace(conn, c.workspace)
        roles = {user: role_of(conn, c.workspace, user) for user in c.participants}
        rules.check_open_dm(c.created_by, roles)
        existing = get_conversation(conn, c.id)
        if existing is not None:
            return existing
        channel = Channel(
            id=c.id,
            workspace=c.workspace,
            name=dm_channel_name(c.id),
            kind=ChannelKind.DM,
            created_by=c.created_by,
            created_ms=c.created_ms,
        )
        _insert_channel(conn, revalidated(channel))
        conn.execute(
            "INSERT INTO conversations (id, workspace, participants, created_by, created_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (c.id, c.workspace, msgspec.json.encode(list(c.participants)).decode(),
             c.created_by, c.created_ms),
        )  # fmt: skip
        for user in c.participants:
            _insert_member(conn, channel, user, c.created_ms)
    return conversation
