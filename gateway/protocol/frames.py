"""Wire protocol v1: every frame, one tagged union per direction.

Frames are msgspec Structs tagged by their ``type`` field. Unknown fields are ignored
(new optional fields may be added within v1); unknown ``type`` values are refused with
``unknown_type``. Static hard caps live in the type annotations; the configurable, smaller
limits (announced in ``hello``) are enforced by :mod:`gateway.protocol.session`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from gateway.model import Position

__all__ = [
    "CHANNEL_PATTERN",
    "Ack",
    "Auth",
    "ClientFrame",
    "ClientFrames",
    "Error",
    "Hello",
    "LimitsInfo",
    "MessageEvent",
    "Ping",
    "Pong",
    "PresenceEvent",
    "PresenceSet",
    "PresenceWatch",
    "Publish",
    "Ready",
    "Resume",
    "ServerFrame",
    "ServerFrames",
    "Subscribe",
    "Subscribed",
    "Typing",
    "TypingEvent",
    "Unsubscribe",
    "Unsubscribed",
]

PROTOCOL_VERSION = 1
CHANNEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$(?!\n)"

Channel = Annotated[str, Meta(pattern=CHANNEL_PATTERN, max_length=128)]
ClientMsgId = Annotated[str, Meta(min_length=1, max_length=64)]
Token = Annotated[str, Meta(min_length=1, max_length=8192)]
Body = Annotated[str, Meta(min_length=1, max_length=65536)]
MessageId = Annotated[str, Meta(min_length=1, max_length=96)]
SessionId = Annotated[str, Meta(min_length=1, max_length=64)]
Nonce = Annotated[int, Meta(ge=0, le=2**53)]
UserId = Annotated[str, Meta(min_length=1, max_length=128)]


# --------------------------------------------------------------------------- client -> server


class ClientFrame(msgspec.Struct, tag_field="type", frozen=True):
    """Base of every frame a client sends."""


class Auth(ClientFrame, tag="auth", frozen=True):
    """Authenticate the connection with a JWT. Must be the first frame."""

    token: Token


class Resume(ClientFrame, tag="resume", frozen=True):
    """Authenticate and resubscribe in one step after a reconnect.

    ``positions`` maps channel -> last position seen; every channel is resubscribed and
    the messages after each position are replayed, exactly once, before live ones.
    """

    token: Token
    session: SessionId
    positions: Annotated[dict[Channel, Position], Meta(max_length=500)] = {}


class Subscribe(ClientFrame, tag="subscribe", frozen=True):
    """Start receiving a channel. With ``since``, first replay what came after it."""

    channel: Channel
    since: Position | None = None


class Unsubscribe(ClientFrame, tag="unsubscribe", frozen=True):
    channel: Channel


class Publish(ClientFrame, tag="publish", frozen=True):
    """Send a message. ``cmid`` is the client's idempotency key: a retry with the same
    ``cmid`` on the same channel never creates a second message; it is acked again with
    the original offset and ``duplicate: true``."""

    channel: Channel
    cmid: ClientMsgId
    body: Body
    thread: MessageId | None = None


class Typing(ClientFrame, tag="typing", frozen=True):
    """Ephemeral: tell the channel's other subscribers this user is typing."""

    channel: Channel


class Ping(ClientFrame, tag="ping", frozen=True):
    nonce: Nonce = 0


class PresenceWatch(ClientFrame, tag="presence_watch", frozen=True):
    """Follow the presence of ``users`` (replacing the set followed so far; empty: none).

    The server answers with one ``presence`` event per user (the current state), then
    one for each change, from any node."""

    users: Annotated[list[UserId], Meta(max_length=1000)]


class PresenceSet(ClientFrame, tag="presence_set", frozen=True):
    """This connection's (device's) status. A connection is ``online`` once authenticated."""

    status: Literal["online", "away"]


ClientFrames = (
    Auth | Resume | Subscribe | Unsubscribe | Publish | Typing | Ping | PresenceWatch | PresenceSet
)


# --------------------------------------------------------------------------- server -> client


class ServerFrame(msgspec.Struct, tag_field="type", frozen=True, omit_defaults=True):
    """Base of every frame the server sends."""


class LimitsInfo(msgspec.Struct, frozen=True):
    max_message_bytes: int
    max_body_bytes: int
    max_subscriptions: int
    rate_per_second: float
    rate_burst: int
    max_presence_watch: int = 200


class Hello(ServerFrame, tag="hello", frozen=True, omit_defaults=False):
    """First frame on every connection."""

    session: str
    heartbeat_ms: int
    auth_timeout_ms: int
    limits: LimitsInfo
    node: str = ""
    v: int = PROTOCOL_VERSION


class Ready(ServerFrame, tag="ready", frozen=True):
    """Authentication succeeded."""

    user: str
    session: str


class Subscribed(ServerFrame, tag="subscribed", frozen=True):
    """Subscription is live. ``offset`` is the log head when it became live; ``replayed``
    messages were sent before this frame. ``reset`` means the ``since`` position was from
    another epoch (the log was lost): the client must drop its view of the channel.
    ``truncated`` means more than the replay limit was missed: fetch the gap over REST."""

    channel: str
    epoch: str
    offset: int
    replayed: int = 0
    reset: bool = False
    truncated: bool = False


class Unsubscribed(ServerFrame, tag="unsubscribed", frozen=True):
    """The subscription ended. ``reason`` is ``client`` (asked for), ``forbidden`` (access
    revoked: do not resubscribe) or ``restart`` (channel actor restarted: resubscribe from
    your last position)."""

    channel: str
    reason: str = "client"


class MessageEvent(ServerFrame, tag="message", frozen=True):
    channel: str
    offset: int
    epoch: str
    id: str
    sender: str
    cmid: str
    body: str
    ts: int
    thread: str | None = None


class Ack(ServerFrame, tag="ack", frozen=True):
    """A publish was accepted and is durable at ``offset``."""

    cmid: str
    channel: str
    offset: int
    epoch: str
    id: str
    duplicate: bool = False


class TypingEvent(ServerFrame, tag="typing", frozen=True):
    channel: str
    user: str


class Pong(ServerFrame, tag="pong", frozen=True):
    nonce: int = 0


class Error(ServerFrame, tag="error", frozen=True):
    """A refused frame. ``ref`` echoes the publish ``cmid`` (the nack) when there is one;
    ``retryable`` says whether sending the same frame again later can succeed."""

    code: str
    message: str
    ref: str | None = None
    channel: str | None = None
    retryable: bool = False


class PresenceEvent(ServerFrame, tag="presence", frozen=True, omit_defaults=False):
    """The presence of a followed user: ``online`` if any of the user's connections is
    online, else ``away`` if any is away, else ``offline``. ``last_seen``: ms since the
    Unix epoch when the user was last connected (0: never)."""

    user: str
    status: str
    last_seen: int


ServerFrames = (
    Hello
    | Ready
    | Subscribed
    | Unsubscribed
    | MessageEvent
    | Ack
    | TypingEvent
    | PresenceEvent
    | Pong
    | Error
)
