"""Python client SDK of the gateway (trio + trio-websocket).

Typical use::

    async with open_client("ws://127.0.0.1:8000/ws", token) as client:
        await client.subscribe("general")
        await client.publish("general", "hello")
        async for event in client.events():
            if isinstance(event, MessageEvent):
                print(event.sender, event.body)

See :mod:`gateway.client.sdk` for the delivery guarantees and the backpressure policy.
"""

from gateway.client._errors import ClientError, ConnectionClosed, PublishError, SubscribeError
from gateway.client._events import (
    ChannelReset,
    ClientStatistics,
    Disconnected,
    Event,
    Reconnected,
)
from gateway.client.sdk import Client, TokenSource, open_client
from gateway.model import Position
from gateway.protocol.frames import (
    Ack,
    MessageEvent,
    PresenceEvent,
    Subscribed,
    TypingEvent,
    Unsubscribed,
)

__all__ = [
    "Ack",
    "ChannelReset",
    "Client",
    "ClientError",
    "ClientStatistics",
    "ConnectionClosed",
    "Disconnected",
    "Event",
    "MessageEvent",
    "Position",
    "PresenceEvent",
    "PublishError",
    "Reconnected",
    "SubscribeError",
    "Subscribed",
    "TokenSource",
    "TypingEvent",
    "Unsubscribed",
    "open_client",
]
