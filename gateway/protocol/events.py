"""Log entries that are not messages: what they store, and the frame each becomes.

A channel's log holds messages (``Record.kind == ""``) and events about them or about
the channel (edits, deletes, reactions, thread summaries, membership and channel
changes). Events are appended, ordered, replayed and resumed exactly like messages, so a
client that resumes from its last offset gets every change it missed, once. An event's
``Record.body`` is the JSON of its payload below; :func:`record_frame` turns any record
into the frame clients receive.
"""

from __future__ import annotations

import msgspec

from gateway.model import Record
from gateway.protocol import frames as f

__all__ = [
    "CHANNEL",
    "DELETE",
    "EDIT",
    "KINDS",
    "MEMBER",
    "NOTIFICATION",
    "REACT",
    "READ",
    "THREAD",
    "ChannelPayload",
    "DeletePayload",
    "EditPayload",
    "MemberPayload",
    "NotificationPayload",
    "Payload",
    "ReactPayload",
    "ReadPayload",
    "ThreadPayload",
    "encode_payload",
    "record_frame",
]

EDIT, DELETE, REACT, THREAD, MEMBER, CHANNEL, READ, NOTIFICATION = (
    "edit",
    "delete",
    "react",
    "thread",
    "member",
    "channel",
    "read",
    "notification",
)
KINDS = frozenset({EDIT, DELETE, REACT, THREAD, MEMBER, CHANNEL, READ, NOTIFICATION})


class EditPayload(msgspec.Struct, frozen=True):
    id: str
    version: int
    body: str


class DeletePayload(msgspec.Struct, frozen=True):
    id: str
    version: int


class ReactPayload(msgspec.Struct, frozen=True):
    id: str
    emoji: str
    added: bool
    count: int


class ThreadPayload(msgspec.Struct, frozen=True):
    id: str
    replies: int
    last_reply_ms: int
    participants: list[str]


class MemberPayload(msgspec.Struct, frozen=True):
    user: str
    joined: bool
    role: str | None = None


class ChannelPayload(msgspec.Struct, frozen=True):
    what: str  # "created" | "updated"
    info: f.ChannelInfo


class ReadPayload(msgspec.Struct, frozen=True):
    target: str
    read_offset: int


class NotificationPayload(msgspec.Struct, frozen=True):
    id: str
    kind: str
    target: str
    message_id: str
    message_offset: int
    preview: str


Payload = (
    EditPayload
    | DeletePayload
    | ReactPayload
    | ThreadPayload
    | MemberPayload
    | ChannelPayload
    | ReadPayload
    | NotificationPayload
)

_encode = msgspec.json.Encoder().encode
_DECODERS: dict[str, msgspec.json.Decoder[Payload]] = {
    EDIT: msgspec.json.Decoder(EditPayload),
    DELETE: msgspec.json.Decoder(DeletePayload),
    REACT: msgspec.json.Decoder(ReactPayload),
    THREAD: msgspec.json.Decoder(ThreadPayload),
    MEMBER: msgspec.json.Decoder(MemberPayload),
    CHANNEL: msgspec.json.Decoder(ChannelPayload),
    READ: msgspec.json.Decoder(ReadPayload),
    NOTIFICATION: msgspec.json.Decoder(NotificationPayload),
}


def encode_payload(payload: Payload) -> str:
    return _encode(payload).decode()


def record_frame(r: Record) -> f.ServerFrame:
    """The frame a subscriber receives for log entry ``r``."""
    if not r.kind:
        return f.MessageEvent(
            channel=r.channel,
            offset=r.offset,
            epoch=r.epoch,
            id=r.id,
            sender=r.sender,
            cmid=r.cmid,
            body=r.body,
            ts=r.ts,
            thread=r.thread,
            files=list(r.files),
        )
    p = _DECODERS[r.kind].decode(r.body)
    c, o, e, ts, by = r.channel, r.offset, r.epoch, r.ts, r.sender
    if isinstance(p, EditPayload):
        return f.MessageUpdated(
            channel=c, offset=o, epoch=e, id=p.id, version=p.version, body=p.body, by=by, ts=ts
        )
    if isinstance(p, DeletePayload):
        return f.MessageDeleted(
            channel=c, offset=o, epoch=e, id=p.id, version=p.version, by=by, ts=ts
        )
    if isinstance(p, ReactPayload):
        return f.ReactionEvent(
            channel=c,
            offset=o,
            epoch=e,
            id=p.id,
            emoji=p.emoji,
            user=by,
            added=p.added,
            count=p.count,
            ts=ts,
        )
    if isinstance(p, ThreadPayload):
        return f.ThreadEvent(
            channel=c,
            offset=o,
            epoch=e,
            id=p.id,
            user=by,
            replies=p.replies,
            last_reply_ms=p.last_reply_ms,
            participants=p.participants,
            ts=ts,
        )
    if isinstance(p, MemberPayload):
        return f.MemberEvent(
            channel=c, offset=o, epoch=e, user=p.user, joined=p.joined, role=p.role, by=by, ts=ts
        )
    if isinstance(p, ReadPayload):
        return f.ReadEvent(
            channel=c, offset=o, epoch=e, target=p.target, read_offset=p.read_offset, ts=ts
        )
    if isinstance(p, NotificationPayload):
        return f.NotificationEvent(
            channel=c,
            offset=o,
            epoch=e,
            id=p.id,
            kind=p.kind,
            target=p.target,
            message_id=p.message_id,
            message_offset=p.message_offset,
            sender=by,
            preview=p.preview,
            ts=ts,
        )
    return f.ChannelEvent(channel=c, offset=o, epoch=e, what=p.what, info=p.info, by=by, ts=ts)
