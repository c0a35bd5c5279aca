"""REST: one message's reactions (the counts, and which ones are the caller's)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from quart import Response
from quart_trio import QuartTrio

from gateway.actors.access import channel_access
from gateway.errors import ErrorCode
from gateway.protocol.frames import CHANNEL_PATTERN
from gateway.routes.domain_common import HttpError, authenticate, endpoint, json_response

if TYPE_CHECKING:
    from gateway.actors.node import Node

__all__ = ["register_message_routes"]

_channel_re = re.compile(CHANNEL_PATTERN)


def register_message_routes(app: QuartTrio, node: Node) -> None:
    @app.get("/v1/channels/<channel>/messages/<message>/reactions")
    @endpoint
    async def reactions(channel: str, message: str) -> Response:
        identity = await authenticate(node)
        if not _channel_re.match(channel):
            raise HttpError(400, ErrorCode.INVALID_FIELD, "invalid channel name", field="channel")
        grant = await channel_access(node.domain, identity, channel)
        if not grant.access:
            raise HttpError(404, ErrorCode.NOT_FOUND, "no such channel", reason="channel")
        _, sep, tail = message.rpartition("-")
        found = []
        if sep and tail.isdigit() and 1 <= int(tail) <= 2**53:
            found = list(await node.bus.read(channel, int(tail) - 1, 1))
        if not found or found[0].id != message or found[0].kind:
            raise HttpError(404, ErrorCode.NOT_FOUND, "no such message", reason="message")
        offset = found[0].offset
        states = node.messages.states
        state = (await states.get_states(channel, [offset])).get(offset)
        mine = await states.my_reactions(channel, offset, identity.user)
        return json_response(
            {
                "channel": channel,
                "id": message,
                "reactions": {} if state is None else state.reactions,
                "mine": sorted(mine),
            }
        )
