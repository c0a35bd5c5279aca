"""Python client SDK of the gateway (trio + trio-websocket).

Typical use::

    async with open_client("ws://127.0.0.1:8000/ws", token) as client:
        await client.subscribe("general")
        await client.publish("general", "hello")
        async for event in client.events():
            if isinstance(event, MessageEvent):
                print(event.sender, event.body)
            elif isinstance(event, MessageUpdated):
                print(event.id, "is now", event.body)

Messages and the changes to them (edits, deletes, reactions, thread summaries, member and
channel events) are all entries of the channel's log (:data:`LogEvent`): each is delivered
once, in order, across reconnects. Thread replies live in their own log: subscribe to
``thread_of(ack_or_event)`` to receive them.

See :mod:`gateway.client.sdk` for the delivery guarantees and the backpressure policy.
"""

from gateway.client._errors import ClientError, ConnectionClosed, PublishError, SubscribeError
from gateway.client._events import (
    ChannelReset,
    ClientStatistics,
    Disconnected,
    Event,
    LogEvent,
    Reconnected,
)
from gateway.client._threads import thread_channel, thread_of
from gateway.client.sdk import Client, TokenSource, open_client
from gateway.model import Position
from gateway.protocol.frames import (
    Ack,
    ChannelEvent,
    ChannelInfo,
    MemberEvent,
    MessageDeleted,
    MessageEvent,
    MessageUpdated,
    NotificationEvent,
    PresenceEvent,
    ReactionEvent,
    ReadEvent,
    ReceiptEvent,
    Subscribed,
    ThreadEvent,
    TypingEvent,
    Unsubscribed,
)

__all__ = [
    "Ack",
    "ChannelEvent",
    "ChannelInfo",
    "ChannelReset",
    "Client",
    "ClientError",
    "ClientStatistics",
    "ConnectionClosed",
    "Disconnected",
    "Event",
    "LogEvent",
    "MemberEvent",
    "MessageDeleted",
    "MessageEvent",
    "MessageUpdated",
    "NotificationEvent",
    "Position",
    "PresenceEvent",
    "PublishError",
    "ReactionEvent",
    "ReadEvent",
    "ReceiptEvent",
    "Reconnected",
    "SubscribeError",
    "Subscribed",
    "ThreadEvent",
    "TokenSource",
    "TypingEvent",
    "Unsubscribed",
    "open_client",
    "thread_channel",
    "thread_of",
]
