"""DynamoDB domain store: users, workspaces, channels and DMs in one table.

The table is ``<prefix>-domain`` (defined in :mod:`gateway.store.tables`, never created
here; items in :mod:`gateway.store._domain_dynamo_items` and ``docs/data-model.md``).
Every call goes through :mod:`gateway.aws` like the message store's
(:mod:`gateway.store.dynamodb`): throttling and transient failures are retried there with
jittered backoff, then raised as :class:`gateway.aws.AwsUnavailable`, a
:class:`gateway.errors.StoreUnavailable`; a missing table or a closed store is
:class:`StoreUnavailable` too. All reads are strongly consistent.

How it keeps the :class:`gateway.store.domain.DomainStore` guarantees:

* **Atomic per call.** Every change is one ``TransactWriteItems``: all of its items or
  none. Nothing is ever written by a read-then-write outside a transaction.
* **Rules and conditional writes.** A changing call reads the facts its rule needs (one
  ``GetItem`` or ``BatchGetItem``, consistent), decides with :mod:`gateway.domain.rules`
  in the SQLite adapter's order, and writes with conditions asserting those facts (the
  actor's role, memberships, ``archived = false``, the expected version, unique keys
  absent). If one fails, the transaction is cancelled and the call reads and decides
  again (:data:`~gateway.store._domain_dynamo_table.MAX_DECISIONS` rounds, then
  :class:`StoreUnavailable`); a refusal a cancellation proves at once (a taken user id,
  email, workspace id or channel name; a stale version) is raised directly.
* **Idempotent retries.** Each transaction carries a ``ClientRequestToken`` that the
  bridge's retries reuse.
* **Paging** uses :mod:`gateway.store._cursor` with the SQLite adapter's scopes and sort
  keys; a ``Query`` asks for ``limit + 1`` items, so a cursor is ``None`` exactly on the
  last page.

Refusals are :class:`gateway.domain.errors.DomainError` from the rules and checks;
other refusals by DynamoDB (validation errors: a bug) raise :class:`gateway.aws.AwsError`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

from msgspec import UNSET, UnsetType

from gateway.aws import Aws
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
from gateway.store import _domain_dynamo_channels as qc
from gateway.store import _domain_dynamo_users as q
from gateway.store._cursor import CursorCodec
from gateway.store._domain_dynamo_table import DomainTable, TransactionHook
from gateway.store._dynamo import CountedStore, check_ready
from gateway.store.domain import MAX_PAGE, DomainStoreStatistics, Page
from gateway.store.tables import DOMAIN, DOMAIN_TABLES

__all__ = ["DynamoDomainStore", "open_dynamodb_domain_store"]


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


class DynamoDomainStore(CountedStore[DomainStoreStatistics]):
    """A :class:`gateway.store.domain.DomainStore` on the ``<prefix>-domain`` table.

    Any number of handles, on any number of nodes, may share the table. ``cursor_key``
    (at least 16 bytes) signs paging cursors; ``clock`` gives the time in milliseconds for
    ``created_ms``/``joined_ms``; ``before_transaction`` is a test hook (see
    :data:`~gateway.store._domain_dynamo_table.TransactionHook`). Make it with
    :func:`open_dynamodb_domain_store`, which checks the table first.
    """

    def __init__(
        self,
        aws: Aws,
        prefix: str,
        cursor_key: bytes,
        *,
        clock: Callable[[], int] = _now_ms,
        before_transaction: TransactionHook | None = None,
    ) -> None:
        self.aws = aws
        self.prefix = prefix
        self._table = DomainTable(aws, DOMAIN.name(prefix), hook=before_transaction)
        self.table = self._table.name
        self._codec = CursorCodec(cursor_key)
        self._clock = clock
        super().__init__(self._table, DomainStoreStatistics())

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
        return await self._run(True, lambda: q.create_user(self._table, user))

    async def get_user(self, user_id: str) -> User | None:
        return await self._run(False, lambda: q.get_user(self._table, user_id))

    async def get_user_by_email(self, email: str) -> User | None:
        normalized = check_email(email)
        return await self._run(False, lambda: q.get_user_by_email(self._table, normalized))

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
        return await self._run(
            True, lambda: q.update_user(self._table, user_id, expected_version, changes)
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
        return await self._run(True, lambda: q.create_workspace(self._table, workspace))

    async def get_workspace(self, workspace: str) -> Workspace | None:
        return await self._run(False, lambda: q.get_workspace(self._table, workspace))

    async def list_user_workspaces(
        self, user: str, *, limit: int, cursor: str | None = None
    ) -> Page[Member]:
        n = _check_limit(limit)
        return await self._run(
            False, lambda: q.list_user_workspaces(self._table, self._codec, user, n, cursor)
        )

    async def add_member(self, workspace: str, user: str, role: Role, *, actor: str) -> bool:
        role, now = _role(role), self._clock()
        return await self._run(
            True, lambda: q.add_member(self._table, now, workspace, user, role, actor=actor)
        )

    async def remove_member(self, workspace: str, user: str, *, actor: str) -> bool:
        return await self._run(True, lambda: q.remove_member(self._table, workspace, user, actor))

    async def get_member(self, workspace: str, user: str) -> Member | None:
        return await self._run(False, lambda: q.get_member(self._table, workspace, user))

    async def set_role(self, workspace: str, user: str, role: Role, *, actor: str) -> Member:
        role = _role(role)
        return await self._run(True, lambda: q.set_role(self._table, workspace, user, role, actor))

    async def list_members(
        self, workspace: str, *, limit: int, cursor: str | None = None
    ) -> Page[Member]:
        n = _check_limit(limit)
        return await self._run(
            False, lambda: q.list_members(self._table, self._codec, workspace, n, cursor)
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
        return await self._run(True, lambda: qc.create_channel(self._table, channel))

    async def get_channel(self, channel: str) -> Channel | None:
        return await self._run(False, lambda: qc.get_channel(self._table, channel))

    async def list_channels(
        self, workspace: str, *, limit: int, cursor: str | None = None
    ) -> Page[Channel]:
        n = _check_limit(limit)
        return await self._run(
            False, lambda: qc.list_channels(self._table, self._codec, workspace, n, cursor)
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
        return await self._run(
            True,
            lambda: qc.update_channel(self._table, channel, actor, expected_version, changes),
        )

    async def join_channel(self, channel: str, user: str, *, actor: str) -> bool:
        now = self._clock()
        return await self._run(
            True, lambda: qc.join_channel(self._table, now, channel, user, actor)
        )

    async def leave_channel(self, channel: str, user: str, *, actor: str) -> bool:
        return await self._run(True, lambda: qc.leave_channel(self._table, channel, user, actor))

    async def is_channel_member(self, channel: str, user: str) -> bool:
        return await self._run(False, lambda: qc.is_channel_member(self._table, channel, user))

    async def list_channel_members(
        self, channel: str, *, limit: int, cursor: str | None = None
    ) -> Page[ChannelMember]:
        n = _check_limit(limit)
        return await self._run(
            False, lambda: qc.list_channel_members(self._table, self._codec, channel, n, cursor)
        )

    async def list_user_channels(
        self, workspace: str, user: str, *, limit: int, cursor: str | None = None
    ) -> Page[ChannelMember]:
        n = _check_limit(limit)
        return await self._run(
            False,
            lambda: qc.list_user_channels(
                self._table, self._codec, workspace, user, n, cursor=cursor
            ),
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
        return await self._run(True, lambda: qc.open_dm(self._table, conversation))

    async def get_conversation(self, channel: str) -> Conversation | None:
        return await self._run(False, lambda: qc.get_conversation(self._table, channel))


@asynccontextmanager
async def open_dynamodb_domain_store(
    aws: Aws,
    prefix: str,
    cursor_key: bytes,
    *,
    before_transaction: TransactionHook | None = None,
) -> AsyncIterator[DynamoDomainStore]:
    """A :class:`DynamoDomainStore` on the ``<prefix>-domain`` table, after checking it:
    raises :class:`StoreUnavailable` naming what is missing or wrong (deployment creates
    tables, see :func:`gateway.store.tables.create_tables`)."""
    await check_ready(aws, prefix, DOMAIN_TABLES, "domain table")
    store = DynamoDomainStore(aws, prefix, cursor_key, before_transaction=before_transaction)
    async with aclosing(store):
        yield store
