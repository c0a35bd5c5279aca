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
    "ChannelEvent",
    "ChannelInfo",
    "ClientFrame",
    "ClientFrames",
    "Delete",
    "Delivered",
    "Edit",
    "Error",
    "Hello",
    "LimitsInfo",
    "MemberEvent",
    "MessageDeleted",
    "MessageEvent",
    "MessageUpdated",
    "NotificationEvent",
    "Ping",
    "Pong",
    "PresenceEvent",
    "PresenceSet",
    "PresenceWatch",
    "Publish",
    "React",
    "ReactionEvent",
    "Read",
    "ReadEvent",
    "Ready",
    "ReceiptEvent",
    "Resume",
    "ServerFrame",
    "ServerFrames",
    "Subscribe",
    "Subscribed",
    "ThreadEvent",
    "Typing",
    "TypingEvent",
    "Unsubscribe",
    "Unsubscribed",
]

PROTOCOL_VERSION = 1
CHANNEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$(?!\n)"

Channel = Annotated[str, Meta(pattern=CHANNEL_PATTERN, max_length=128)]
# "~" starts the server's own keys of derived log entries (thread summaries)
ClientMsgId = Annotated[str, Meta(min_length=1, max_length=64, pattern="^[^~]")]
Token = Annotated[str, Meta(min_length=1, max_length=8192)]
Body = Annotated[str, Meta(min_length=1, max_length=65536)]
MessageId = Annotated[str, Meta(min_length=1, max_length=96)]
SessionId = Annotated[str, Meta(min_length=1, max_length=64)]
Nonce = Annotated[int, Meta(ge=0, le=2**53)]
UserId = Annotated[str, Meta(min_length=1, max_length=128)]
Emoji = Annotated[str, Meta(min_length=1, max_length=64)]
FileId = Annotated[str, Meta(pattern="^f[0-9a-f]{24}$")]
Version = Annotated[int, Meta(ge=1, le=2**31)]


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
    # uploaded files (POST /v1/files, then complete) to attach: yours, ready, not attached
    # to another channel
    files: Annotated[list[FileId], Meta(max_length=10)] = []


class Edit(ClientFrame, tag="edit", frozen=True):
    """Replace the body of one's own message ``id``. ``version`` is the version the
    client saw (1 as posted): a stale one is refused with ``stale_version``. Acked like
    a publish (``cmid``), with the new ``version``; a retry with the same ``cmid`` is
    acked again, not applied twice."""

    channel: Channel
    id: MessageId
    cmid: ClientMsgId
    body: Body
    version: Version


class Delete(ClientFrame, tag="delete", frozen=True):
    """Delete message ``id`` (its author, or a workspace admin): it becomes a tombstone."""

    channel: Channel
    id: MessageId
    cmid: ClientMsgId


class React(ClientFrame, tag="react", frozen=True):
    """Add (``add``) or remove one's ``emoji`` reaction on message ``id``. Idempotent:
    adding twice is one reaction."""

    channel: Channel
    id: MessageId
    cmid: ClientMsgId
    emoji: Emoji
    add: bool = True


class Read(ClientFrame, tag="read", frozen=True):
    """This user has read ``channel`` up to ``offset`` (forward only; clamped to the
    log's head). Syncs the user's other devices (a ``read`` event in their log
    ``u.<user>``) and, in a DM, tells the others (a ``receipt``). No reply."""

    channel: Channel
    offset: Annotated[int, Meta(ge=1, le=2**53)]


class Delivered(ClientFrame, tag="delivered", frozen=True):
    """DMs: this device received ``channel`` up to ``offset`` (a delivered receipt for
    the others). No reply."""

    channel: Channel
    offset: Annotated[int, Meta(ge=1, le=2**53)]


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
    Auth
    | Resume
    | Subscribe
    | Unsubscribe
    | Publish
    | Edit
    | Delete
    | React
    | Read
    | Delivered
    | Typing
    | Ping
    | PresenceWatch
    | PresenceSet
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
    files: list[str] = []  # attached file ids: GET /v1/files/{id} for each


class Ack(ServerFrame, tag="ack", frozen=True):
    """A publish (or edit, delete, react) was accepted and is durable at ``offset`` of
    ``channel`` (for a thread reply: the thread's log). ``version``: the message's
    version after an edit or delete."""

    cmid: str
    channel: str
    offset: int
    epoch: str
    id: str
    duplicate: bool = False
    version: int = 0


# Events below are entries of a channel's log like messages: they carry the log's
# ``offset`` and ``epoch``, are replayed on subscribe and resume, and count for positions.


class MessageUpdated(ServerFrame, tag="message_updated", frozen=True):
    """Message ``id`` was edited by its author ``by``: now ``body`` at ``version``."""

    channel: str
    offset: int
    epoch: str
    id: str
    version: int
    body: str
    by: str
    ts: int


class MessageDeleted(ServerFrame, tag="message_deleted", frozen=True):
    """Message ``id`` is now a tombstone (its body and reactions are gone)."""

    channel: str
    offset: int
    epoch: str
    id: str
    version: int
    by: str
    ts: int


class ReactionEvent(ServerFrame, tag="reaction", frozen=True, omit_defaults=False):
    """``user`` added (``added``) or removed ``emoji`` on message ``id``; ``count`` is the
    number of users with that reaction now."""

    channel: str
    offset: int
    epoch: str
    id: str
    emoji: str
    user: str
    added: bool
    count: int
    ts: int


class ThreadEvent(ServerFrame, tag="thread", frozen=True, omit_defaults=False):
    """The thread under message ``id`` got a reply from ``user``: ``replies`` in all, the
    last at ``last_reply_ms``; ``participants``: who replied (first 20). The replies
    themselves are in the thread's log, ``<channel>:t<offset of id>``: subscribe to it."""

    channel: str
    offset: int
    epoch: str
    id: str
    user: str
    replies: int
    last_reply_ms: int
    participants: list[str]
    ts: int


class MemberEvent(ServerFrame, tag="member", frozen=True, omit_defaults=False):
    """``user`` joined (``joined``) or left the channel (in a workspace's log ``ws.<id>``:
    the workspace); ``by``: who made the change."""

    channel: str
    offset: int
    epoch: str
    user: str
    joined: bool
    by: str
    ts: int
    role: str | None = None


class ReadEvent(ServerFrame, tag="read", frozen=True):
    """In the user's own log ``u.<user>``: one of the user's devices read ``target`` up
    to ``read_offset`` (keep the other devices' unread state in step)."""

    channel: str
    offset: int
    epoch: str
    target: str
    read_offset: int
    ts: int


class NotificationEvent(ServerFrame, tag="notification", frozen=True):
    """In the user's own log ``u.<user>``: a new notification (a mention, a DM, a reply
    in a thread the user is in). List and mark them over REST."""

    channel: str
    offset: int
    epoch: str
    id: str
    kind: str
    target: str
    message_id: str
    message_offset: int
    sender: str
    preview: str
    ts: int


class ReceiptEvent(ServerFrame, tag="receipt", frozen=True, omit_defaults=False):
    """DMs, ephemeral (not in the log, not replayed: fetch current receipts over REST
    after a reconnect): ``user`` has received up to ``delivered`` and read up to ``read``."""

    channel: str
    user: str
    delivered: int
    read: int


class ChannelInfo(msgspec.Struct, frozen=True):
    id: str
    name: str
    kind: str
    topic: str
    archived: bool
    position: int
    version: int


class ChannelEvent(ServerFrame, tag="channel", frozen=True):
    """In a workspace's log (``ws.<id>``) and in the channel's own log: the channel was
    ``created`` or ``updated`` (topic, position, archived) by ``by``."""

    channel: str
    offset: int
    epoch: str
    what: str
    info: ChannelInfo
    by: str
    ts: int


class TypingEvent(ServerFrame, tag="typing", frozen=True):
    """``user`` is typing in ``channel`` until ``expires_ms`` (server time, ms since the
    Unix epoch), unless another ``typing`` event for them arrives first."""

    channel: str
    user: str
    expires_ms: int = 0


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
    | MessageUpdated
    | MessageDeleted
    | ReactionEvent
    | ThreadEvent
    | MemberEvent
    | ChannelEvent
    | ReadEvent
    | NotificationEvent
    | ReceiptEvent
    | Ack
    | TypingEvent
    | PresenceEvent
    | Pong
    | Error
)
