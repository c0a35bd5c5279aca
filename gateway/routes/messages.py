"""REST: one message's reactions (the counts, and which ones are the caller's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response
from quart_trio import QuartTrio

from gateway.routes.domain_common import endpoint, json_response, readable_channel

if TYPE_CHECKING:
    from gateway.actors.node import Node

__all__ = ["register_message_routes"]


def register_message_routes(app: QuartTrio, node: Node) -> None:
    @app.get("/v1/channels/<channel>/messages/<message>/reactions")
    @endpoint
    async def reactions(channel: str, message: str) -> Response:
        identity = await readable_channel(node, channel)
        found = await node.messages.find(channel, message)  # NotFound (reason message)
        states = node.messages.states
        state = (await states.get_states(channel, [found.offset])).get(found.offset)
        mine = await states.my_reactions(channel, found.offset, identity.user)
        return json_response(
            {
                "channel": channel,
                "id": message,
                "reactions": {} if state is None else state.reactions,
                "mine": sorted(mine),
            }
        )
