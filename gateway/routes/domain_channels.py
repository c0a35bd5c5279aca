"""REST: channels, channel members and direct conversations.

Visibility (``rules.can_see_channel``) decides what a caller may know exists: a channel
the caller cannot see answers 404 ``not_found`` (reason ``channel``) exactly like an
unknown id. The one exception is for managers (owner, admins), who may join and manage
any public or private channel of their workspace (``rules.check_join_channel``): for
``PATCH`` and member changes a manager gets the store's answer even for a private
channel it is not in. DMs are visible to their participants only.

Listing a workspace's channels filters each page of ``list_channels`` with
``rules.visible_channels``, so a page may hold fewer than ``limit`` items (even none)
while ``cursor`` is not null. The caller's channel memberships needed for the filter come
from **one** ``list_user_channels`` page of 200 (sorted by channel id); only if the caller
is in more than 200 channels of the workspace, each private channel of the page (each
channel, for a guest) beyond that page's last id is checked with ``is_channel_member``:
at most one query plus ``limit`` point reads per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec
from msgspec import UNSET, UnsetType
from quart import Response, request
from quart_trio import QuartTrio

from gateway.domain import rules
from gateway.domain.model import (
    Channel,
    ChannelKind,
    ChannelName,
    ChannelPosition,
    Role,
    Topic,
    UserId,
)
from gateway.errors import ErrorCode
from gateway.routes.domain_common import (
    HttpError,
    Version,
    authenticate,
    decode_body,
    endpoint,
    json_response,
    no_content,
    page_args,
    require_role,
    store,
)
from gateway.store.domain import MAX_PAGE, DomainStore

if TYPE_CHECKING:
    from gateway.actors.node import Node

__all__ = ["ChannelPatch", "DmBody", "NewChannel", "register_channel_routes"]


class NewChannel(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: ChannelName  # names starting with "dm-" are reserved (400)
    kind: Literal["public", "private"] = "public"
    topic: Topic = ""
    position: ChannelPosition = 0


class ChannelPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    expected_version: Version
    topic: Topic | UnsetType = UNSET
    archived: bool | UnsetType = UNSET
    position: ChannelPosition | UnsetType = UNSET


class DmBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    users: list[UserId]  # the others; the caller is added (at most 9 in all: else 422)


class ChannelMembership(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    user: str


def _no_channel(channel: str) -> HttpError:
    return HttpError(404, ErrorCode.NOT_FOUND, f"no channel {channel!r}", reason="channel")


async def _channel_for(
    domain: DomainStore, channel_id: str, user: str, *, managers: bool
) -> Channel:
    """The channel if ``user`` may see it (or, with ``managers``, manages its workspace
    and it is not a DM), else 404 as for an unknown id."""
    channel = await domain.get_channel(channel_id)
    if channel is None:
        raise _no_channel(channel_id)
    member = await domain.get_member(channel.workspace, user)
    role = None if member is None else member.role
    if role is None:
        raise _no_channel(channel_id)
    if channel.kind is ChannelKind.PUBLIC and role is not Role.GUEST:
        return channel
    if managers and rules.is_manager(role) and channel.kind is not ChannelKind.DM:
        return channel
    if rules.can_see_channel(
        role, channel, is_member=await domain.is_channel_member(channel.id, user)
    ):
        return channel
    raise _no_channel(channel_id)


async def _memberships(
    domain: DomainStore, workspace: str, user: str, needed: list[Channel]
) -> set[str]:
    """Which of ``needed`` the user is a member of (bounded: see the module docstring)."""
    if not needed:
        return set()
    first = await domain.list_user_channels(workspace, user, limit=MAX_PAGE)
    mine = {m.channel for m in first.items}
    if first.cursor is None or not first.items:
        return mine
    last = first.items[-1].channel  # the page covers every membership up to this id
    for channel in needed:
        if channel.id > last and await domain.is_channel_member(channel.id, user):
            mine.add(channel.id)
    return mine


def register_channel_routes(app: QuartTrio, node: Node) -> None:
    @app.post("/v1/workspaces/<workspace>/channels")
    @endpoint
    async def domain_create_channel(workspace: str) -> Response:
        identity = await authenticate(node)
        body = await decode_body(NewChannel)
        domain = store(node)
        await require_role(domain, workspace, identity.user)
        channel = await domain.create_channel(
            workspace,
            body.name,
            ChannelKind(body.kind),
            actor=identity.user,
            topic=body.topic,
            position=body.position,
        )
        return json_response(channel, 201)

    @app.get("/v1/workspaces/<workspace>/channels")
    @endpoint
    async def domain_list_channels(workspace: str) -> Response:
        identity = await authenticate(node)
        limit, cursor = page_args()
        domain = store(node)
        role = await require_role(domain, workspace, identity.user)
        page = await domain.list_channels(workspace, limit=limit, cursor=cursor)
        needed = [c for c in page.items if role is Role.GUEST or c.kind is not ChannelKind.PUBLIC]
        mine = await _memberships(domain, workspace, identity.user, needed)
        items = rules.visible_channels(role, page.items, mine)
        return json_response({"items": items, "cursor": page.cursor})

    @app.get("/v1/channels/<channel>")
    @endpoint
    async def domain_get_channel(channel: str) -> Response:
        identity = await authenticate(node)
        record = await _channel_for(store(node), channel, identity.user, managers=False)
        return json_response(record)

    @app.patch("/v1/channels/<channel>")
    @endpoint
    async def domain_update_channel(channel: str) -> Response:
        identity = await authenticate(node)
        body = await decode_body(ChannelPatch)
        domain = store(node)
        await _channel_for(domain, channel, identity.user, managers=True)
        updated = await domain.update_channel(
            channel,
            actor=identity.user,
            expected_version=body.expected_version,
            topic=body.topic,
            archived=body.archived,
            position=body.position,
        )
        return json_response(updated)

    @app.get("/v1/channels/<channel>/members")
    @endpoint
    async def domain_list_channel_members(channel: str) -> Response:
        identity = await authenticate(node)
        limit, cursor = page_args()
        domain = store(node)
        await _channel_for(domain, channel, identity.user, managers=False)
        page = await domain.list_channel_members(channel, limit=limit, cursor=cursor)
        return json_response(page)

    @app.put("/v1/channels/<channel>/members/<path:user>")
    @endpoint
    async def domain_join_channel(channel: str, user: str) -> Response:
        identity = await authenticate(node)
        domain = store(node)
        await _channel_for(domain, channel, identity.user, managers=True)
        joined = await domain.join_channel(channel, user, actor=identity.user)
        return json_response(ChannelMembership(channel=channel, user=user), 201 if joined else 200)

    @app.delete("/v1/channels/<channel>/members/<path:user>")
    @endpoint
    async def domain_leave_channel(channel: str, user: str) -> Response:
        identity = await authenticate(node)
        domain = store(node)
        await _channel_for(domain, channel, identity.user, managers=True)
        if await domain.leave_channel(channel, user, actor=identity.user):
            return no_content()
        raise HttpError(
            404, ErrorCode.NOT_FOUND, f"{user!r} is not a member of {channel!r}", reason="member"
        )

    @app.post("/v1/workspaces/<workspace>/dms")
    @endpoint
    async def domain_open_dm(workspace: str) -> Response:
        """The conversation of the caller and ``users``: the same one every time (200)."""
        identity = await authenticate(node)
        body = await decode_body(DmBody)
        domain = store(node)
        await require_role(domain, workspace, identity.user)
        conversation = await domain.open_dm(workspace, body.users, actor=identity.user)
        return json_response(conversation)

    @app.get("/v1/users/me/channels")
    @endpoint
    async def domain_list_my_channels() -> Response:
        """The caller's channel memberships in ``?workspace=`` (DMs included)."""
        identity = await authenticate(node)
        workspace = request.args.get("workspace")
        if not workspace:
            raise HttpError(400, ErrorCode.INVALID_FIELD, "give ?workspace=<id>", field="workspace")
        limit, cursor = page_args()
        domain = store(node)
        await require_role(domain, workspace, identity.user)
        page = await domain.list_user_channels(workspace, identity.user, limit=limit, cursor=cursor)
        return json_response(page)
