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

Changes are also events in the logs their audience follows (:mod:`gateway.protocol.events`):
``member`` (joined/left, role) and ``channel`` (created/updated) in the channel's own log,
and for workspace members and public channels in the workspace's log ``ws.<id>``.
Private channels never show in the workspace's log. An event is appended when the call
changed something; if that append fails the call raises ``StoreUnavailable`` with the
change stored, and a retry (a no-op then) does not append it again: the event is lost,
the stored state is right.
"""

from __future__ import annotations

import secrets
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
from gateway.protocol import events as ev
from gateway.protocol import frames as f
from gateway.store.domain import DomainStore, DomainStoreStatistics, Page

if TYPE_CHECKING:
    from gateway.actors.node import Node

__all__ = ["DomainService"]


class DomainService:
    def __init__(self, store: DomainStore, node: Node) -> None:
        self.store = store
        self._node = node

    # -- changes with an effect on live connections ---------------------------------------

    async def _event(self, channel: str, actor: str, payload: ev.Payload, kind: str) -> None:
        body = ev.encode_payload(payload)
        cmid = "~" + secrets.token_hex(8)
        await self._node.bus.append(channel, sender=actor, cmid=cmid, body=body, kind=kind)

    async def _member_event(
        self, channel: str, actor: str, user: str, *, joined: bool, role: Role | None = None
    ) -> None:
        payload = ev.MemberPayload(user=user, joined=joined, role=None if role is None else role)
        await self._event(channel, actor, payload, ev.MEMBER)

    async def _channel_event(self, what: str, ch: Channel, actor: str) -> None:
        info = f.ChannelInfo(
            id=ch.id,
            name=ch.name,
            kind=ch.kind.value,
            topic=ch.topic,
            archived=ch.archived,
            position=ch.position,
            version=ch.version,
        )
        payload = ev.ChannelPayload(what=what, info=info)
        await self._event(ch.id, actor, payload, ev.CHANNEL)
        if ch.kind is ChannelKind.PUBLIC:
            await self._event(workspace_channel(ch.workspace), actor, payload, ev.CHANNEL)

    async def add_member(self, workspace: str, user: str, role: Role, *, actor: str) -> bool:
        added = await self.store.add_member(workspace, user, role, actor=actor)
        if added:
            await self._member_event(
                workspace_channel(workspace), actor, user, joined=True, role=role
            )
        return added

    async def remove_member(self, workspace: str, user: str, *, actor: str) -> bool:
        removed = await self.store.remove_member(workspace, user, actor=actor)
        await self._node.kick(user, workspace_channel(workspace))
        if removed:
            await self._member_event(workspace_channel(workspace), actor, user, joined=False)
        return removed

    async def set_role(self, workspace: str, user: str, role: Role, *, actor: str) -> Member:
        before = await self.store.get_member(workspace, user)
        member = await self.store.set_role(workspace, user, role, actor=actor)
        if member.role is Role.GUEST:  # public channels it previewed are no longer its
            await self._node.kick(user, workspace_channel(workspace))
        if before is None or before.role is not member.role:
            await self._member_event(
                workspace_channel(workspace), actor, user, joined=True, role=member.role
            )
        return member

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
        ch = await self.store.create_channel(
            workspace, name, kind, actor=actor, topic=topic, position=position
        )
        await self._channel_event("created", ch, actor)
        return ch

    async def join_channel(self, channel: str, user: str, *, actor: str) -> bool:
        joined = await self.store.join_channel(channel, user, actor=actor)
        if joined:
            # a newcomer has read what came before (else all history would be unread)
            await self._node.reads.mark_read(user, channel, 2**53)
            await self._member_event(channel, actor, user, joined=True)
        return joined

    async def leave_channel(self, channel: str, user: str, *, actor: str) -> bool:
        left = await self.store.leave_channel(channel, user, actor=actor)
        await self._node.kick(user, channel)
        if left:
            await self._member_event(channel, actor, user, joined=False)
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
        await self._channel_event("updated", updated, actor)
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

    async def get_member(self, workspace: str, user: str) -> Member | None:
        return await self.store.get_member(workspace, user)

    async def list_members(
        self, workspace: str, *, limit: int, cursor: str | None = None
    ) -> Page[Member]:
        return await self.store.list_members(workspace, limit=limit, cursor=cursor)

    async def get_channel(self, channel: str) -> Channel | None:
        return await self.store.get_channel(channel)

    async def list_channels(
        self, workspace: str, *, limit: int, cursor: str | None = None
    ) -> Page[Channel]:
        return await self.store.list_channels(workspace, limit=limit, cursor=cursor)

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
