"""The domain store as the node serves it: every change also takes effect on the sockets.

:class:`DomainService` implements :class:`~gateway.store.domain.DomainStore` by handing
each call to the store, then applying what the change means for live connections on
every node:

* a workspace member removed, or demoted to guest: every subscription of that user in
  the workspace ends at once (``unsubscribed``, reason ``forbidden``), on every node;
* a channel member leaving or removed: that user's subscriptions to the channel end;
* a channel archived or unarchived: every connection re-checks its right to post there
  on its next publish (subscriptions stay: an archived channel is still readable).

These kicks are sent even when the store call changed nothing (a retried removal whose
first attempt stored the change but failed to kick), so retrying a call after a
``StoreUnavailable`` always finishes the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from msgspec import UNSET, UnsetType

from gateway.actors.access import workspace_channel
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
from gateway.store.domain import DomainStore, DomainStoreStatistics, Page

if TYPE_CHECKING:
    from gateway.actors.node import Node

__all__ = ["DomainService"]


class DomainService:
    def __init__(self, store: DomainStore, node: Node) -> None:
        self.store = store
        self._node = node

    # -- changes with an effect on live connections ---------------------------------------

    async def remove_member(self, workspace: str, user: str, *, actor: str) -> bool:
        removed = await self.store.remove_member(workspace, user, actor=actor)
        await self._node.kick(user, workspace_channel(workspace))
        return removed

    async def set_role(self, workspace: str, user: str, role: Role, *, actor: str) -> Member:
        member = await self.store.set_role(workspace, user, role, actor=actor)
        if member.role is Role.GUEST:  # public channels it previewed are no longer its
            await self._node.kick(user, workspace_channel(workspace))
        return member

    async def leave_channel(self, channel: str, user: str, *, actor: str) -> bool:
        left = await self.store.leave_channel(channel, user, actor=actor)
        await self._node.kick(user, channel)
        return left

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
        updated = await self.store.update_channel(
            channel,
            actor=actor,
            expected_version=expected_version,
            topic=topic,
            archived=archived,
            position=position,
        )
        if archived is not UNSET:
            await self._node.kick("", channel)  # everyone re-checks posting
        return updated

    # -- plain delegation ----------------------------------------------------------------

    async def create_user(
        self,
        user_id: str,
        email: str,
        display_name: str,
        *,
        avatar_url: str | None = None,
        status_text: str = "",
    ) -> User:
        return await self.store.create_user(
            user_id, email, display_name, avatar_url=avatar_url, status_text=status_text
        )

    async def get_user(self, user_id: str) -> User | None:
        return await self.store.get_user(user_id)

    async def get_user_by_email(self, email: str) -> User | None:
        return await self.store.get_user_by_email(email)

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
        return await self.store.update_user(
            user_id,
            expected_version=expected_version,
            email=email,
            display_name=display_name,
            avatar_url=avatar_url,
            status_text=status_text,
        )

    async def create_workspace(
        self, name: str, *, owner: str, workspace_id: str | None = None
    ) -> Workspace:
        return await self.store.create_workspace(name, owner=owner, workspace_id=workspace_id)

    async def get_workspace(self, workspace: str) -> Workspace | None:
        return await self.store.get_workspace(workspace)

    async def list_user_workspaces(
        self, user: str, *, limit: int, cursor: str | None = None
    ) -> Page[Member]:
        return await self.store.list_user_workspaces(user, limit=limit, cursor=cursor)

    async def add_member(self, workspace: str, user: str, role: Role, *, actor: str) -> bool:
        return await self.store.add_member(workspace, user, role, actor=actor)

    async def get_member(self, workspace: str, user: str) -> Member | None:
        return await self.store.get_member(workspace, user)

    async def list_members(
        self, workspace: str, *, limit: int, cursor: str | None = None
    ) -> Page[Member]:
        return await self.store.list_members(workspace, limit=limit, cursor=cursor)

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
        return await self.store.create_channel(
            workspace, name, kind, actor=actor, topic=topic, position=position
        )

    async def get_channel(self, channel: str) -> Channel | None:
        return await self.store.get_channel(channel)

    async def list_channels(
        self, workspace: str, *, limit: int, cursor: str | None = None
    ) -> Page[Channel]:
        return await self.store.list_channels(workspace, limit=limit, cursor=cursor)

    async def join_channel(self, channel: str, user: str, *, actor: str) -> bool:
        return await self.store.join_channel(channel, user, actor=actor)

    async def is_channel_member(self, channel: str, user: str) -> bool:
        return await self.store.is_channel_member(channel, user)

    async def list_channel_members(
        self, channel: str, *, limit: int, cursor: str | None = None
    ) -> Page[ChannelMember]:
        return await self.store.list_channel_members(channel, limit=limit, cursor=cursor)

    async def list_user_channels(
        self, workspace: str, user: str, *, limit: int, cursor: str | None = None
    ) -> Page[ChannelMember]:
        return await self.store.list_user_channels(workspace, user, limit=limit, cursor=cursor)

    async def open_dm(self, workspace: str, others: Sequence[str], *, actor: str) -> Conversation:
        return await self.store.open_dm(workspace, others, actor=actor)

    async def get_conversation(self, channel: str) -> Conversation | None:
        return await self.store.get_conversation(channel)

    def statistics(self) -> DomainStoreStatistics:
        return self.store.statistics()

    async def aclose(self) -> None:
        """The store's owner (the app) closes it."""
