"""SQLite domain store: users, workspaces, channels and DMs in one file, no services.

Its own file (``<data_dir>/domain.sqlite3`` by convention), not the message store's:
SQLite has one writer per file, and the message store's write-behind commits are the hot
path, so a domain transaction must never queue behind them nor they behind it; the two
share no transaction (no message write touches a domain record), they want different
durability (domain changes are rare and acknowledged to people: ``"full"`` by default),
and DynamoDB keeps them in different tables too (``docs/data-model.md``).

Like :mod:`gateway.store.sqlite`: one ``sqlite3`` connection, used by one task at a time
(a ``trio.CapacityLimiter(1)``), and two durability modes:

``"full"``
    WAL with ``synchronous=FULL``, operations in a worker thread: a change that returned
    has been fsynced.
``"interval"``
    WAL with ``synchronous=NORMAL``, operations inline on the event loop: a change that
    returned is in the WAL (it survives a crash of the process); a background checkpoint
    from a second connection fsyncs it within ``fsync_interval`` seconds.

Every ``sqlite3`` (and ``OSError``) exception is translated into
:class:`gateway.errors.StoreUnavailable` here, at this one boundary; the transaction has
been rolled back, so nothing of the call is stored. Refusals are
:class:`gateway.domain.errors.DomainError` from the rules and checks, raised unchanged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from msgspec import UNSET, UnsetType

from gateway.domain.errors import InvalidField
from gateway.domain.model import (
    Channel,
    ChannelKind,
    ChannelMember,
    Conversation,
    Member,
    Role,
    User,
    Workspace,
    check_channel_name,
    check_email,
    check_participants,
    dm_channel_id,
    new_channel_id,
    new_workspace_id,
    validated,
)
from gateway.store import _domain_sql as q
from gateway.store import _domain_sql_channels as qc
from gateway.store._cursor import CursorCodec
from gateway.store._sqlite_runner import RunnerStore
from gateway.store._sqlite_wal import running
from gateway.store.domain import MAX_PAGE, DomainStoreStatistics, Page

__all__ = ["SqliteDomainStore", "open_sqlite_domain_store"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _changes(**fields: object) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not UNSET}


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidField(f"no role {role!r}", field="role") from None


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidField(f"limit must be 1..{MAX_PAGE}, not {limit}", field="limit")
    return limit


class SqliteDomainStore(RunnerStore):
    """A :class:`gateway.store.domain.DomainStore` on one SQLite file.

    ``path`` is a file path (its parent directory is created) or ``":memory:"``;
    ``cursor_key`` (at least 16 bytes) signs paging cursors. ``clock`` gives the time in
    milliseconds for ``created_ms``/``joined_ms``.
    """

    def __init__(
        self,
        path: str,
        cursor_key: bytes,
        *,
        durability: str = "full",
        fsync_interval: float = 1.0,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        super().__init__(path, q.SCHEMA, durability=durability, fsync_interval=fsync_interval)
        self._codec = CursorCodec(cursor_key)
        self._clock = clock

    # -- users -------------------------------------------------------------------------

    async def create_user(
        self,
        user_id: str,
        email: str,
        display_name: str,
        *,
        avatar_url: str | None = None,
        status_text: str = "",
    ) -> User:
        user = validated(
            User,
            id=user_id,
            email=check_email(email),
            display_name=display_name.strip(),
            avatar_url=avatar_url,
            status_text=status_text.strip(),
            created_ms=self._clock(),
        )
        return await self._write("create_user", lambda c: q.create_user(c, user))

    async def get_user(self, user_id: str) -> User | None:
        return await self._read("get_user", lambda c: q.get_user(c, user_id))

    async def get_user_by_email(self, email: str) -> User | None:
        normalized = check_email(email)
        return await self._read("get_user_by_email", lambda c: q.get_user_by_email(c, normalized))

    async def update_user(
        self,
        user_id: str,
        *,
        expected_version: int,
        email: str | UnsetType = UNSET,
        display_name: str | UnsetType = UNSET,
        avatar_url: str | UnsetType | None = UNSET,
        status_text: str | UnsetType = UNSET,
    ) -> User:
        changes = _changes(
            email=email,
            display_name=display_name
            if isinstance(display_name, UnsetType)
            else display_name.strip(),
            avatar_url=avatar_url,
            status_text=status_text if isinstance(status_text, UnsetType) else status_text.strip(),
        )
        return await self._write(
            "update_user", lambda c: q.update_user(c, user_id, expected_version, changes)
        )

    # -- workspaces and members --------------------------------------------------------

    async def create_workspace(
        self, name: str, *, owner: str, workspace_id: str | None = None
    ) -> Workspace:
        workspace = validated(
            Workspace,
            id=new_workspace_id() if workspace_id is None else workspace_id,
            name=name.strip(),
            owner=owner,
            created_ms=self._clock(),
        )
        return await self._write("create_workspace", lambda c: q.create_workspace(c, workspace))

    async def get_workspace(self, workspace: str) -> Workspace | None:
        return await self._read("get_workspace", lambda c: q.get_workspace(c, workspace))

    async def list_user_workspaces(
        self, user: str, *, limit: int, cursor: str | None = None
    ) -> Page[Member]:
        n = _check_limit(limit)
        return await self._read(
            "list_user_workspaces",
            lambda c: q.list_user_workspaces(c, self._codec, user, n, cursor),
        )

    async def add_member(self, workspace: str, user: str, role: Role, *, actor: str) -> bool:
        role, now = _role(role), self._clock()
        return await self._write(
            "add_member", lambda c: q.add_member(c, now, workspace, user, role, actor=actor)
        )

    async def remove_member(self, workspace: str, user: str, *, actor: str) -> bool:
        return await self._write(
            "remove_member", lambda c: q.remove_member(c, workspace, user, actor)
        )

    async def get_member(self, workspace: str, user: str) -> Member | None:
        return await self._read("get_member", lambda c: q.get_member(c, workspace, user))

    async def set_role(self, workspace: str, user: str, role: Role, *, actor: str) -> Member:
        role = _role(role)
        return await self._write("set_role", lambda c: q.set_role(c, workspace, user, role, actor))

    async def list_members(
        self, workspace: str, *, limit: int, cursor: str | None = None
    ) -> Page[Member]:
        n = _check_limit(limit)
        return await self._read(
            "list_members", lambda c: q.list_members(c, self._codec, workspace, n, cursor)
        )

    # -- channels ----------------------------------------------------------------------

    async def create_channel(
        self,
        workspace: str,
        name: str,
        kind: ChannelKind,
        *,
        actor: str,
        topic: str = "",
        position: int = 0,
    ) -> Channel:
        if kind not in (ChannelKind.PUBLIC, ChannelKind.PRIVATE):
            raise InvalidField("a channel is public or private (DMs: open_dm)", field="kind")
        channel = validated(
            Channel,
            id=new_channel_id(),
            workspace=workspace,
            name=check_channel_name(name),
            kind=kind,
            topic=topic.strip(),
            position=position,
            created_by=actor,
            created_ms=self._clock(),
        )
        return await self._write("create_channel", lambda c: qc.create_channel(c, channel))

    async def get_channel(self, channel: str) -> Channel | None:
        return await self._read("get_channel", lambda c: qc.get_channel(c, channel))

    async def list_channels(
        self, workspace: str, *, limit: int, cursor: str | None = None
    ) -> Page[Channel]:
        n = _check_limit(limit)
        return await self._read(
            "list_channels", lambda c: qc.list_channels(c, self._codec, workspace, n, cursor)
        )

    async def update_channel(
        self,
        channel: str,
        *,
        actor: str,
        expected_version: int,
        topic: str | UnsetType = UNSET,
        archived: bool | UnsetType = UNSET,
        position: int | UnsetType = UNSET,
    ) -> Channel:
        changes = _changes(
            topic=topic if isinstance(topic, UnsetType) else topic.strip(),
            archived=archived,
            position=position,
        )
        return await self._write(
            "update_channel",
            lambda c: qc.update_channel(c, channel, actor, expected_version, changes),
        )

    async def join_channel(self, channel: str, user: str, *, actor: str) -> bool:
        now = self._clock()
        return await self._write(
            "join_channel", lambda c: qc.join_channel(c, now, channel, user, actor)
        )

    async def leave_channel(self, channel: str, user: str, *, actor: str) -> bool:
        return await self._write(
            "leave_channel", lambda c: qc.leave_channel(c, channel, user, actor)
        )

    async def is_channel_member(self, channel: str, user: str) -> bool:
        return await self._read(
            "is_channel_member", lambda c: qc.is_channel_member(c, channel, user)
        )

    async def list_channel_members(
        self, channel: str, *, limit: int, cursor: str | None = None
    ) -> Page[ChannelMember]:
        n = _check_limit(limit)
        return await self._read(
            "list_channel_members",
            lambda c: qc.list_channel_members(c, self._codec, channel, n, cursor),
        )

    async def list_user_channels(
        self, workspace: str, user: str, *, limit: int, cursor: str | None = None
    ) -> Page[ChannelMember]:
        n = _check_limit(limit)
        return await self._read(
            "list_user_channels",
            lambda c: qc.list_user_channels(c, self._codec, workspace, user, n, cursor=cursor),
        )

    # -- direct conversations ----------------------------------------------------------

    async def open_dm(self, workspace: str, others: Sequence[str], *, actor: str) -> Conversation:
        participants = check_participants(actor, others)
        conversation = validated(
            Conversation,
            id=dm_channel_id(workspace, participants),
            workspace=workspace,
            participants=participants,
            created_by=actor,
            created_ms=self._clock(),
        )
        return await self._write("open_dm", lambda c: qc.open_dm(c, conversation))

    async def get_conversation(self, channel: str) -> Conversation | None:
        return await self._read("get_conversation", lambda c: qc.get_conversation(c, channel))

    # -- lifecycle ---------------------------------------------------------------------

    def statistics(self) -> DomainStoreStatistics:
        """A snapshot: read calls, committed write calls, refused calls."""
        return self._statistics(DomainStoreStatistics)


@asynccontextmanager
async def open_sqlite_domain_store(
    path: str, cursor_key: bytes, *, durability: str = "full", fsync_interval: float = 1.0
) -> AsyncIterator[SqliteDomainStore]:
    """Open (creating the parent directory and the schema) and close a
    :class:`SqliteDomainStore`, running its checkpointer in interval mode."""
    store = SqliteDomainStore(
        path, cursor_key, durability=durability, fsync_interval=fsync_interval
    )
    async with running(store):
        yield store
