"""DynamoDB items of the read-state store: keys, sort keys, item codecs, update requests.

The layout is ``docs/data-model.md`` ("ReadStateStore"):

* ``<prefix>-read-cursors``, key ``channel`` + ``user``: ``read``, ``read_ms``,
  ``delivered``, ``delivered_ms`` and the counts at the read cursor when it was marked
  (``seq``, ``eseq``, ``snap_head``).
* ``<prefix>-unread``, key ``channel`` + ``sk``: the head item ``H`` (``head``,
  ``messages``, ``everyone``), message items ``M#<offset>`` (``sender``, ``seq``,
  ``eseq``), mark items ``U#<len(user)>:<user>#<offset>`` (``own``, ``everyone``) and
  per-user summary items ``P#<len(user)>:<user>`` (``marks_head``).
* ``<prefix>-notifications``, key ``user`` + ``id``: every :class:`Notification` field,
  ``ck``/``uk`` (the LSI sort keys ``<created_ms>#<id>``; ``uk`` only while unread) and
  ``expires`` (the TTL, seconds).

Offsets and times in sort keys are zero-padded to :data:`KEY_DIGITS` digits (every
``int64``: the store refuses larger values), so string order is numeric order; user ids
are length-prefixed because they may contain ``#``.
"""

from __future__ import annotations

from typing import Any

from gateway.store.read_state import Notification

__all__ = [
    "HEAD",
    "KEY_DIGITS",
    "MAX_INT",
    "CursorState",
    "Item",
    "cursor_key",
    "head_key",
    "head_values",
    "item_notification",
    "mark_delivered_update",
    "mark_read_update",
    "mark_sk",
    "message_sk",
    "notification_item",
    "padded",
    "sort_key",
    "summary_sk",
    "unread_key",
]

Item = dict[str, Any]

MAX_INT = 2**63 - 1  # the largest offset or time the store takes (SQLite's INTEGER too)
KEY_DIGITS = len(str(MAX_INT))  # 19
HEAD = "H"


def padded(value: int) -> str:
    """``value`` (0..:data:`MAX_INT`; larger ones are clamped) as a fixed-width string."""
    return f"{min(max(value, 0), MAX_INT):0{KEY_DIGITS}d}"


def _user(user: str) -> str:
    return f"{len(user)}:{user}"


def message_sk(offset: int) -> str:
    return f"M#{padded(offset)}"


def mark_sk(user: str, offset: int) -> str:
    return f"U#{_user(user)}#{padded(offset)}"


def summary_sk(user: str) -> str:
    return f"P#{_user(user)}"


def sort_key(created_ms: int, nid: str) -> str:
    """The notifications' LSI sort key: ``(created_ms, id)`` order as a string."""
    return f"{padded(created_ms)}#{nid}"


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _int(item: Item, name: str) -> int:
    value = item.get(name)
    return 0 if value is None else int(value["N"])


# -- read cursors ---------------------------------------------------------------------------


def cursor_key(channel: str, user: str) -> Item:
    return {"channel": {"S": channel}, "user": {"S": user}}


class CursorState:
    """A decoded cursor item (absent attributes read 0)."""

    __slots__ = ("delivered", "delivered_ms", "eseq", "read", "read_ms", "seq", "snap_head")

    def __init__(self, item: Item | None) -> None:
        item = item or {}
        self.read = _int(item, "read")
        self.read_ms = _int(item, "read_ms")
        self.delivered = _int(item, "delivered")
        self.delivered_ms = _int(item, "delivered_ms")
        self.seq = _int(item, "seq")
        self.eseq = _int(item, "eseq")
        self.snap_head = _int(item, "snap_head")

    @property
    def exact(self) -> bool:
        """Whether ``seq``/``eseq`` are the counts at ``read`` for good: the head had
        reached the cursor when they were read, so nothing at or below it can be noted
        any more (in-order noting). No cursor: the counts at 0 are 0."""
        return self.read == 0 or self.snap_head >= self.read


_CURSOR_NAMES = {"#r": "read", "#rm": "read_ms", "#d": "delivered", "#dm": "delivered_ms"}


def mark_read_update(offset: int, now_ms: int, seq: int, eseq: int, snap_head: int) -> Item:
    """Raise ``read`` to ``offset`` with the counts at it, if it is below (or absent)."""
    return {
        "UpdateExpression": (
            "SET #r = :o, #rm = :ms, #seq = :seq, #eseq = :eseq, #sh = :sh,"
            " #d = if_not_exists(#d, :zero), #dm = if_not_exists(#dm, :zero)"
        ),
        "ConditionExpression": "attribute_not_exists(#r) OR #r < :o",
        "ExpressionAttributeNames": {
            **_CURSOR_NAMES,
            "#seq": "seq",
            "#eseq": "eseq",
            "#sh": "snap_head",
        },
        "ExpressionAttributeValues": {
            ":o": _n(offset),
            ":ms": _n(now_ms),
            ":seq": _n(seq),
            ":eseq": _n(eseq),
            ":sh": _n(snap_head),
            ":zero": _n(0),
        },
    }


def mark_delivered_update(offset: int, now_ms: int) -> Item:
    """Raise ``delivered`` to ``offset`` if it is below (or absent)."""
    return {
        "UpdateExpression": (
            "SET #d = :o, #dm = :ms, #r = if_not_exists(#r, :zero), #rm = if_not_exists(#rm, :zero)"
        ),
        "ConditionExpression": "attribute_not_exists(#d) OR #d < :o",
        "ExpressionAttributeNames": _CURSOR_NAMES,
        "ExpressionAttributeValues": {":o": _n(offset), ":ms": _n(now_ms), ":zero": _n(0)},
    }


# -- the unread table -------------------------------------------------------------------------


def unread_key(channel: str, sk: str) -> Item:
    return {"channel": {"S": channel}, "sk": {"S": sk}}


def head_key(channel: str) -> Item:
    return unread_key(channel, HEAD)


def head_values(item: Item | None) -> tuple[int, int, int]:
    """``(head, messages, everyone)`` of a head item; zeros if there is none."""
    if item is None:
        return 0, 0, 0
    return _int(item, "head"), _int(item, "messages"), _int(item, "everyone")


# -- notifications ----------------------------------------------------------------------------


def notification_item(n: Notification) -> Item:
    """The unread notification's item, with its LSI keys and TTL (``expires``, seconds,
    rounded up so that DynamoDB never deletes it before ``expires_ms``)."""
    ck = sort_key(n.created_ms, n.id)
    return {
        "user": {"S": n.user},
        "id": {"S": n.id},
        "kind": {"S": n.kind},
        "channel": {"S": n.channel},
        "message_id": {"S": n.message_id},
        "offset": _n(n.offset),
        "sender": {"S": n.sender},
        "preview": {"S": n.preview},
        "created_ms": _n(n.created_ms),
        "expires_ms": _n(n.expires_ms),
        "read": {"BOOL": False},
        "read_ms": _n(0),
        "ck": {"S": ck},
        "uk": {"S": ck},
        "expires": _n(-(-n.expires_ms // 1000)),
    }


def item_notification(item: Item) -> Notification:
    return Notification(
        id=item["id"]["S"],
        user=item["user"]["S"],
        kind=item["kind"]["S"],
        channel=item["channel"]["S"],
        message_id=item["message_id"]["S"],
        offset=_int(item, "offset"),
        sender=item["sender"]["S"],
        preview=item["preview"]["S"],
        created_ms=_int(item, "created_ms"),
        expires_ms=_int(item, "expires_ms"),
        read=item["read"]["BOOL"],
        read_ms=_int(item, "read_ms"),
    )
