"""REST: read cursors, unread counts, DM receipts, notifications.

``PUT /v1/channels/{channel}/read`` moves the caller's read cursor (forward only, clamped
to the log's head) like the ``read`` frame. ``GET /v1/users/me/unread?workspace=`` counts
unread messages and mentions in the caller's channels of a workspace (its first 200
channels; messages of others only). ``GET /v1/channels/{dm}/receipts`` lists each
participant's delivered and read offsets. Notifications are listed newest first and
marked read by id or all at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from msgspec import Meta
from quart import Response, request
from quart_trio import QuartTrio

from gateway.errors import ErrorCode
from gateway.routes.domain_common import (
    HttpError,
    authenticate,
    decode_body,
    endpoint,
    json_response,
    page_args,
    readable_channel,
    require_role,
)
from gateway.store.domain import MAX_PAGE
from gateway.store.read_state import MAX_CHANNELS, MAX_MARK_IDS

if TYPE_CHECKING:
    from gateway.actors.node import Node

__all__ = ["register_read_routes"]


class ReadBody(msgspec.Struct, forbid_unknown_fields=True):
    offset: Annotated[int, Meta(ge=1, le=2**53)]


class MarkBody(msgspec.Struct, forbid_unknown_fields=True):
    ids: (
        Annotated[list[Annotated[str, Meta(min_length=1, max_length=300)]], Meta(max_length=100)]
        | Literal["all"]
    )


def register_read_routes(app: QuartTrio, node: Node) -> None:
    async def readable(channel: str) -> str:
        return (await readable_channel(node, channel)).user

    @app.put("/v1/channels/<channel>/read")
    @endpoint
    async def mark_read(channel: str) -> Response:
        user = await readable(channel)
        body = await decode_body(ReadBody)
        receipt = await node.reads.mark_read(user, channel, body.offset)
        cursor = await node.reads.store.get_cursor(user, channel)
        actor = node.registry.get(channel)
        if receipt is not None and actor is not None:
            actor.receipt(user, receipt.delivered, receipt.read)
        return json_response({"channel": channel, "offset": 0 if cursor is None else cursor.offset})

    @app.get("/v1/channels/<channel>/receipts")
    @endpoint
    async def receipts(channel: str) -> Response:
        await readable(channel)
        if not channel.startswith("dm."):
            raise HttpError(400, ErrorCode.INVALID_FIELD, "receipts are kept for DMs only")
        found = await node.reads.store.receipts(channel)
        return json_response(
            {"channel": channel, "receipts": [msgspec.to_builtins(r) for r in found]}
        )

    @app.get("/v1/users/me/unread")
    @endpoint
    async def unread() -> Response:
        identity = await authenticate(node)
        workspace = request.args.get("workspace")
        if not workspace:
            raise HttpError(400, ErrorCode.INVALID_FIELD, "give ?workspace=", field="workspace")
        await require_role(node.domain, workspace, identity.user)
        page = await node.domain.list_user_channels(workspace, identity.user, limit=MAX_PAGE)
        channels = [m.channel for m in page.items]
        counts: dict[str, object] = {}
        for i in range(0, len(channels), MAX_CHANNELS):
            chunk = channels[i : i + MAX_CHANNELS]
            found = await node.reads.store.unread(identity.user, chunk)
            cursors = await node.reads.store.list_cursors(identity.user, chunk)
            for ch in chunk:
                u = found.get(ch)
                c = cursors.get(ch)
                counts[ch] = {
                    "messages": 0 if u is None else u.messages,
                    "mentions": 0 if u is None else u.mentions,
                    "read_offset": 0 if c is None else c.offset,
                }
        return json_response(
            {"workspace": workspace, "channels": counts, "more": page.cursor is not None}
        )

    @app.get("/v1/users/me/notifications")
    @endpoint
    async def notifications() -> Response:
        identity = await authenticate(node)
        limit, cursor = page_args()
        only = request.args.get("unread_only", "false")
        if only not in ("true", "false"):
            raise HttpError(400, ErrorCode.INVALID_FIELD, "unread_only is true or false")
        page = await node.reads.store.list_notifications(
            identity.user, limit=limit, cursor=cursor, unread_only=only == "true"
        )
        return json_response(
            {"items": [msgspec.to_builtins(n) for n in page.items], "cursor": page.cursor}
        )

    @app.post("/v1/users/me/notifications/read")
    @endpoint
    async def mark_notifications() -> Response:
        identity = await authenticate(node)
        body = await decode_body(MarkBody)
        if body.ids != "all" and len(body.ids) > MAX_MARK_IDS:
            raise HttpError(400, ErrorCode.INVALID_FIELD, "too many ids", field="ids")
        marked = await node.reads.store.mark_notifications_read(
            identity.user, body.ids, now_ms=_now()
        )
        return json_response({"marked": marked})


def _now() -> int:
    return time.time_ns() // 1_000_000
