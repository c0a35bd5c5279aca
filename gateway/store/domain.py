"""The domain store: users, workspaces, members, channels, channel members, DMs.

Shaped for DynamoDB like :mod:`gateway.store.base`: every method is **one** ``GetItem``,
**one** ``Query`` on a key, or **one** conditional write / ``TransactWriteItems``
(preceded, for the rule checks, by reads of the facts the rule needs). Each method's
docstring names its access pattern; ``docs/data-model.md`` maps every pattern to keys.

Adapters: ``gateway.store.domain_sqlite`` (embedded default) and
``gateway.store.domain_dynamodb`` (one DynamoDB table, ``<prefix>-domain``). Every adapter
passes ``tests/contract/test_domain_contract*.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from gateway.domain.model import (
    Channel,
    ChannelKind,
    ChannelMember,
    Conversation,
    Member,
    Role,
    User,
    Workspace,
)

__all__ = ["MAX_PAGE", "DomainStore", "DomainStoreStatistics", "Page"]

MAX_PAGE = 200  # the largest ``limit`` of one listing call

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T], frozen=True):
    """One page of a listing. ``cursor`` is ``None`` on the last page; otherwise pass it
    back (with the same arguments) for the next page, which may be empty."""

    items: tuple[T, ...]
    cursor: str | None = None


class DomainStoreStatistics(msgspec.Struct):
    reads: int = 0  # lookups and listings
    writes: int = 0  # calls of changing methods that returned (no-op double joins too)
    refusals: int = 0  # calls refused by a rule or a stored-state check (not input limits)


class DomainStore(Protocol):
    """Durable chat-domain records. Guarantees every adapter gives:

    * **Atomic per call.** Each method either makes all of its changes or none ("no
      partial writes"): a workspace is never without its owner's membership, a channel
      never without its creator's membership, a DM never without all its participants,
      an email never pointing at a user that does not hold it. On any backend failure it
      raises :class:`gateway.errors.StoreUnavailable` (retryable) and nothing of the call
      is stored.
    * **Conditional writes.** Uniqueness (user id, email compared lower-cased, workspace
      id, channel name per workspace) and rule checks hold under concurrency: the write
      asserts the facts the rule was decided on (the actor's role, memberships, the
      channel not archived, the expected version). Updates take ``expected_version``;
      a mismatch raises :class:`~gateway.domain.errors.StaleVersion` with ``current``.
    * **Rules are enforced here**, with ``gateway.domain.rules``, for every method taking
      an ``actor`` (the authenticated caller): ``Forbidden`` if the rules refuse,
      ``NotFound`` (``reason`` ``"workspace"``, ``"channel"``, ``"user"`` or ``"member"``)
      for unknown ids or a user who is not a member of the channel's workspace (ids from
      another workspace). Rules needing no stored state (a user edits only their own
      profile: ``rules.can_update_user``) are the caller's.
    * **Idempotent membership.** ``add_member``/``join_channel`` return ``True`` if the call
      made the user a member, ``False`` if it already was one: then nothing is written and
      the stored role and ``joined_ms`` stay those of the first join. ``remove_member``/
      ``leave_channel`` return ``True`` if the call removed the membership, ``False`` if
      there was none. Permission is checked first either way (a double join by someone
      who may not join is ``Forbidden``; a member re-joining itself is ``False``).
      ``open_dm`` with the same workspace and participant set (in any order) returns the
      same :class:`Conversation` every time, the first opener's.
    * **Removing a workspace member** keeps their channel memberships (removing them all
      would not be one bounded transaction), but every rule treats a non-member as having
      no access, and listings of channel members may still show them.
    * **Reads are strongly consistent** (read-your-writes). Getters return ``None`` for
      unknown ids; listings of unknown keys are empty.
    * **Paging.** ``limit`` is 1..:data:`MAX_PAGE` (else ``InvalidField``, field
      ``limit``). A cursor is opaque, signed by the store's ``cursor_key``, and valid only
      for the listing (method and key arguments) that returned it: anything else raises
      :class:`~gateway.domain.errors.BadCursor` (code ``invalid_field``, reason
      ``bad_cursor``). Pages are keyset pages: following cursors yields each item that
      existed throughout exactly once, in order; items added or removed meanwhile may or
      may not appear.
    * **Limits** are the ``Meta`` limits of ``gateway.domain.model`` (``InvalidField``,
      with ``field``), plus :data:`~gateway.domain.model.MAX_DM_PARTICIPANTS`
      (``LimitExceeded``).
    """

    # -- users ---------------------------------------------------------------------------

    async def create_user(
        self,
        user_id: str,
        email: str,
        display_name: str,
        *,
        avatar_url: str | None = None,
        status_text: str = "",
    ) -> User:
        """Conditional write of the user and of its email key. ``AlreadyExists``
        (reason ``"user"`` or ``"email"``). ``email`` is stored lower-cased."""
        ...

    async def get_user(self, user_id: str) -> User | None:
        """GetItem ``user``."""
        ...

    async def get_user_by_email(self, email: str) -> User | None:
        """GetItem ``email`` (case-insensitive). ``InvalidField`` for a malformed email."""
        ...

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
        """Transaction: the user (condition: version) and its email key (moved when the
        email changes; condition: the new one is free). ``NotFound``, ``StaleVersion``,
        ``AlreadyExists`` (reason ``"email"``). Bumps ``version`` by one."""
        ...

    # -- workspaces and members ----------------------------------------------------------

    async def create_workspace(
        self, name: str, *, owner: str, workspace_id: str | None = None
    ) -> Workspace:
        """Transaction: the workspace (condition: new id) and the owner's membership with
        role ``owner`` (``joined_ms`` = the workspace's ``created_ms``). ``NotFound``
        (reason ``"user"``) if ``owner`` is not a user; ``AlreadyExists`` (reason
        ``"workspace"``) for a taken ``workspace_id``."""
        ...

    async def get_workspace(self, workspace: str) -> Workspace | None:
        """GetItem ``workspace``."""
        ...

    async def list_user_workspaces(
        self, user: str, *, limit: int, cursor: str | None = None
    ) -> Page[Member]:
        """Query the user's memberships, by workspace id."""
        ...

    async def add_member(self, workspace: str, user: str, role: Role, *, actor: str) -> bool:
        """Transaction: the membership (condition: absent), both directions, asserting the
        actor's role. ``NotFound`` (``"workspace"``, ``"user"``), ``Forbidden``."""
        ...

    async def remove_member(self, workspace: str, user: str, *, actor: str) -> bool:
        """Transaction: delete the membership, both directions, asserting both roles."""
        ...

    async def get_member(self, workspace: str, user: str) -> Member | None:
        """GetItem ``(workspace, user)``."""
        ...

    async def set_role(self, workspace: str, user: str, role: Role, *, actor: str) -> Member:
        """Transaction: update the membership's role, both directions, asserting both
        roles. ``NotFound`` (``"member"``), ``Forbidden``. Setting the current role is a
        no-op that returns the member."""
        ...

    async def list_members(
        self, workspace: str, *, limit: int, cursor: str | None = None
    ) -> Page[Member]:
        """Query the workspace's memberships, by user id."""
        ...

    # -- channels ------------------------------------------------------------------------

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
        """Transaction: the channel, its name key (condition: free in the workspace), its
        listing entry and the creator's membership. ``kind`` is public or private (DMs:
        :meth:`open_dm`). ``AlreadyExists`` (reason ``"channel_name"``), ``Forbidden``,
        ``NotFound`` (``"workspace"``), ``InvalidField`` (name, topic, position)."""
        ...

    async def get_channel(self, channel: str) -> Channel | None:
        """GetItem ``channel`` (any kind, DMs included)."""
        ...

    async def list_channels(
        self, workspace: str, *, limit: int, cursor: str | None = None
    ) -> Page[Channel]:
        """Query the workspace's public and private channels (not DMs), archived ones
        included, by ``(position, name)``. Filter with ``rules.visible_channels``."""
        ...

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
        """Transaction: the channel (condition: version) and its listing entry (moved when
        the position changes), asserting the actor's role. ``NotFound``, ``Forbidden``,
        ``StaleVersion``, ``InvalidField``. Bumps ``version`` by one."""
        ...

    async def join_channel(self, channel: str, user: str, *, actor: str) -> bool:
        """Transaction: the channel membership, both directions (condition: absent),
        asserting the roles, the actor's channel membership and ``archived = false``.
        ``NotFound`` (``"channel"``, ``"member"``), ``Forbidden``, ``Conflict``
        (reason ``"archived"``)."""
        ...

    async def leave_channel(self, channel: str, user: str, *, actor: str) -> bool:
        """Transaction: delete the channel membership, both directions. ``NotFound``
        (``"channel"``), ``Forbidden`` (DMs; others removing without being a manager)."""
        ...

    async def is_channel_member(self, channel: str, user: str) -> bool:
        """GetItem ``(channel, user)``."""
        ...

    async def list_channel_members(
        self, channel: str, *, limit: int, cursor: str | None = None
    ) -> Page[ChannelMember]:
        """Query the channel's memberships, by user id."""
        ...

    async def list_user_channels(
        self, workspace: str, user: str, *, limit: int, cursor: str | None = None
    ) -> Page[ChannelMember]:
        """Query the user's channel memberships in one workspace (DMs included), by
        channel id."""
        ...

    # -- direct conversations ------------------------------------------------------------

    async def open_dm(self, workspace: str, others: Sequence[str], *, actor: str) -> Conversation:
        """Transaction: the DM channel (condition: absent: else return the stored one),
        the conversation and every participant's membership, asserting every
        participant's workspace membership. The id is
        ``gateway.domain.model.dm_channel_id(workspace, participants)``. ``Forbidden``,
        ``NotFound`` (``"member"``), ``LimitExceeded``, ``InvalidField``."""
        ...

    async def get_conversation(self, channel: str) -> Conversation | None:
        """GetItem ``channel`` (its participants)."""
        ...

    # -- lifecycle -----------------------------------------------------------------------

    def statistics(self) -> DomainStoreStatistics: ...

    async def aclose(self) -> None: ...
