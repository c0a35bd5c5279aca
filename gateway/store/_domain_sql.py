"""SQLite operations of the domain store: schema, users, workspaces and members.

Synchronous functions on one ``sqlite3.Connection``, run by
:class:`gateway.store.domain_sqlite.SqliteDomainStore` (inline or in its worker thread).
Every change is one ``BEGIN IMMEDIATE`` transaction
(:func:`gateway.store._sqlite_wal.transaction`): the rule
checks read the facts and the writes follow under the same write lock, so what the rule
decided on still holds when the write commits, and a failure anywhere rolls everything
back. Records are validated before they get here; rows read back are trusted.

The tables mirror the DynamoDB items of ``docs/data-model.md``; where DynamoDB needs a
second item (the user's side of a membership, an email key, a channel-name key, a
listing entry), SQLite has an index or a unique constraint.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from gateway.domain import rules
from gateway.domain.errors import AlreadyExists, NotFound, StaleVersion
from gateway.domain.model import Member, Role, User, Workspace, check_email, revalidated
from gateway.store._cursor import CursorCodec, CursorKey
from gateway.store._sqlite_wal import transaction
from gateway.store.domain import Page

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id           TEXT PRIMARY KEY,
    email        TEXT NOT NULL UNIQUE,   -- lower-cased; DynamoDB: an email key item
    display_name TEXT NOT NULL,
    avatar_url   TEXT,
    status_text  TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    version      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workspaces (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    version    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    workspace TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    role      TEXT NOT NULL,
    joined_ms INTEGER NOT NULL,
    PRIMARY KEY (workspace, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members (user_id, workspace);
CREATE TABLE IF NOT EXISTS channels (
    id         TEXT PRIMARY KEY,
    workspace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    topic      TEXT NOT NULL,
    archived   INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    version    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS channels_by_name ON channels (workspace, name);
CREATE INDEX IF NOT EXISTS channels_by_position
    ON channels (workspace, position, name) WHERE kind != 'dm';
CREATE TABLE IF NOT EXISTS conversations (
    id           TEXT PRIMARY KEY,
    workspace    TEXT NOT NULL,
    participants TEXT NOT NULL,          -- JSON array of user ids, sorted
    created_by   TEXT NOT NULL,
    created_ms   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channel_members (
    channel   TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    workspace TEXT NOT NULL,
    joined_ms INTEGER NOT NULL,
    PRIMARY KEY (channel, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS channel_members_by_user
    ON channel_members (user_id, workspace, channel);
"""


def one(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> Any:
    return conn.execute(sql, args).fetchone()


def page(
    codec: CursorCodec,
    scope: str,
    rows: list[Any],
    limit: int,
    *,
    item: Callable[[Any], T],
    key: Callable[[T], CursorKey],
) -> Page[T]:
    """A page of the first ``limit`` of ``rows`` (queried with ``LIMIT limit + 1``)."""
    items = tuple(item(row) for row in rows[:limit])
    more = len(rows) > limit
    return Page(items=items, cursor=codec.encode(scope, key(items[-1])) if more else None)


@dataclass(frozen=True)
class Listing(Generic[T]):
    """A listing paged by the sort key of its last item: ``sql`` takes the listing's
    arguments, then the key to start after (``start`` on the first page), then its
    ``LIMIT``; ``item`` reads a row, ``key`` is an item's sort key."""

    sql: str
    item: Callable[[Any], T]
    key: Callable[[T], CursorKey]
    start: CursorKey = ("",)

    def page(
        self,
        conn: sqlite3.Connection,
        codec: CursorCodec,
        scope: str,
        cursor: str | None,
        limit: int,
        *args: Any,
    ) -> Page[T]:
        """The ``limit`` items after the key ``cursor`` carries (signed for ``scope``)."""
        after = codec.decode(scope, cursor, len(self.start)) if cursor is not None else self.start
        rows = conn.execute(self.sql, (*args, *after, limit + 1)).fetchall()
        return page(codec, scope, rows, limit, item=self.item, key=self.key)


# -- rows ----------------------------------------------------------------------------------

USER = "SELECT id, email, display_name, avatar_url, status_text, created_ms, version FROM users"
WORKSPACE = "SELECT id, name, owner, created_ms, version FROM workspaces"
MEMBER = "SELECT workspace, user_id, role, joined_ms FROM members"


def user_row(row: Any) -> User:
    uid, email, display_name, avatar_url, status_text, created_ms, version = row
    return User(
        id=uid,
        email=email,
        display_name=display_name,
        avatar_url=avatar_url,
        status_text=status_text,
        created_ms=created_ms,
        version=version,
    )


def workspace_row(row: Any) -> Workspace:
    wid, name, owner, created_ms, version = row
    return Workspace(id=wid, name=name, owner=owner, created_ms=created_ms, version=version)


def member_row(row: Any) -> Member:
    workspace, user, role, joined_ms = row
    return Member(workspace=workspace, user=user, role=Role(role), joined_ms=joined_ms)


def role_of(conn: sqlite3.Connection, workspace: str, user: str) -> Role | None:
    row = one(
        conn, "SELECT role FROM members WHERE workspace = ? AND user_id = ?", (workspace, user)
    )
    return None if row is None else Role(row[0])


def require_workspace(conn: sqlite3.Connection, workspace: str) -> None:
    if one(conn, "SELECT 1 FROM workspaces WHERE id = ?", (workspace,)) is None:
        raise NotFound(f"no workspace {workspace!r}", reason="workspace")


def require_user(conn: sqlite3.Connection, user: str) -> None:
    if one(conn, "SELECT 1 FROM users WHERE id = ?", (user,)) is None:
        raise NotFound(f"no user {user!r}", reason="user")


# -- users ---------------------------------------------------------------------------------


def create_user(conn: sqlite3.Connection, user: User) -> User:
    with transaction(conn):
        if one(conn, "SELECT 1 FROM users WHERE id = ?", (user.id,)) is not None:
            raise AlreadyExists(f"user {user.id!r} exists", reason="user")
        if one(conn, "SELECT 1 FROM users WHERE email = ?", (user.email,)) is not None:
            raise AlreadyExists("another user has this email", reason="email")
        conn.execute(
            "INSERT INTO users (id, email, display_name, avatar_url, status_text, created_ms,"
            " version) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user.id, user.email, user.display_name, user.avatar_url, user.status_text,
             user.created_ms, user.version),
        )  # fmt: skip
    return user


def get_user(conn: sqlite3.Connection, user_id: str) -> User | None:
    row = one(conn, f"{USER} WHERE id = ?", (user_id,))
    return None if row is None else user_row(row)


def get_user_by_email(conn: sqlite3.Connection, email: str) -> User | None:
    row = one(conn, f"{USER} WHERE email = ?", (email,))
    return None if row is None else user_row(row)


def update_user(
    conn: sqlite3.Connection, user_id: str, expected_version: int, changes: dict[str, Any]
) -> User:
    with transaction(conn):
        current = get_user(conn, user_id)
        if current is None:
            raise NotFound(f"no user {user_id!r}", reason="user")
        if current.version != expected_version:
            raise StaleVersion(
                f"user {user_id!r} is at version {current.version}", current=current.version
            )
        if "email" in changes:
            changes["email"] = check_email(changes["email"])
        new = revalidated(msgspec.structs.replace(current, **changes, version=current.version + 1))
        if new.email != current.email and get_user_by_email(conn, new.email) is not None:
            raise AlreadyExists("another user has this email", reason="email")
        conn.execute(
            "UPDATE users SET email = ?, display_name = ?, avatar_url = ?, status_text = ?,"
            " version = ? WHERE id = ? AND version = ?",
            (new.email, new.display_name, new.avatar_url, new.status_text, new.version,
             user_id, expected_version),
        )  # fmt: skip
    return new


# -- workspaces and members ----------------------------------------------------------------


def create_workspace(conn: sqlite3.Connection, workspace: Workspace) -> Workspace:
    with transaction(conn):
        require_user(conn, workspace.owner)
        if one(conn, "SELECT 1 FROM workspaces WHERE id = ?", (workspace.id,)) is not None:
            raise AlreadyExists(f"workspace {workspace.id!r} exists", reason="workspace")
        w = workspace
        conn.execute(
            "INSERT INTO workspaces (id, name, owner, created_ms, version) VALUES (?, ?, ?, ?, ?)",
            (w.id, w.name, w.owner, w.created_ms, w.version),
        )
        conn.execute(
            "INSERT INTO members (workspace, user_id, role, joined_ms) VALUES (?, ?, ?, ?)",
            (w.id, w.owner, Role.OWNER.value, w.created_ms),
        )
    return workspace


def get_workspace(conn: sqlite3.Connection, workspace: str) -> Workspace | None:
    row = one(conn, f"{WORKSPACE} WHERE id = ?", (workspace,))
    return None if row is None else workspace_row(row)


_USER_WORKSPACES = Listing(
    f"{MEMBER} WHERE user_id = ? AND workspace > ? ORDER BY workspace LIMIT ?",
    member_row,
    lambda m: (m.workspace,),
)


def list_user_workspaces(
    conn: sqlite3.Connection, codec: CursorCodec, user: str, limit: int, cursor: str | None
) -> Page[Member]:
    return _USER_WORKSPACES.page(conn, codec, f"user-workspaces\x00{user}", cursor, limit, user)


def add_member(
    conn: sqlite3.Connection, now: int, workspace: str, user: str, role: Role, *, actor: str
) -> bool:
    with transaction(conn):
        require_workspace(conn, workspace)
        rules.check_add_member(role_of(conn, workspace, actor), role)
        require_user(conn, user)
        if role_of(conn, workspace, user) is not None:
            return False
        conn.execute(
            "INSERT INTO members (workspace, user_id, role, joined_ms) VALUES (?, ?, ?, ?)",
            (workspace, user, role.value, now),
        )
    return True


def remove_member(conn: sqlite3.Connection, workspace: str, user: str, actor: str) -> bool:
    with transaction(conn):
        require_workspace(conn, workspace)
        target = role_of(conn, workspace, user)
        actor_role = role_of(conn, workspace, actor)
        rules.check_remove_member(actor_role, target, self_removal=actor == user)
        if target is None:
            return False
        conn.execute("DELETE FROM members WHERE workspace = ? AND user_id = ?", (workspace, user))
    return True


def get_member(conn: sqlite3.Connection, workspace: str, user: str) -> Member | None:
    row = one(conn, f"{MEMBER} WHERE workspace = ? AND user_id = ?", (workspace, user))
    return None if row is None else member_row(row)


def set_role(conn: sqlite3.Connection, workspace: str, user: str, role: Role, actor: str) -> Member:
    with transaction(conn):
        require_workspace(conn, workspace)
        member = get_member(conn, workspace, user)
        actor_role = role_of(conn, workspace, actor)
        rules.check_set_role(actor_role, None if member is None else member.role, role)
        assert member is not None  # check_set_role raised NotFound otherwise
        if member.role is role:
            return member
        conn.execute(
            "UPDATE members SET role = ? WHERE workspace = ? AND user_id = ?",
            (role.value, workspace, user),
        )
    return msgspec.structs.replace(member, role=role)


_MEMBERS = Listing(
    f"{MEMBER} WHERE workspace = ? AND user_id > ? ORDER BY user_id LIMIT ?",
    member_row,
    lambda m: (m.user,),
)


def list_members(
    conn: sqlite3.Connection, codec: CursorCodec, workspace: str, limit: int, cursor: str | None
) -> Page[Member]:
    return _MEMBERS.page(conn, codec, f"members\x00{workspace}", cursor, limit, workspace)
