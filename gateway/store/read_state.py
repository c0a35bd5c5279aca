"""The read-state store: read cursors, unread and mention counts, DM receipts, notifications.

Per (user, channel) a **read cursor** (the last offset the user has read, forward only) and
a **delivered** offset (for DM receipts); per channel a running count of its **messages**
(events are not counted) fed by :meth:`ReadStateStore.note_message`, from which the
unread and mention counts of any cursor are computed without reading the log; per user
**notifications** (mentions, DMs, replies) with an expiry.

This store does not see the channel logs nor decide who may read what: the service
(which does) calls :meth:`~ReadStateStore.note_message` for each new message, in log
order, before delivering it, and clamps the offsets it marks to the log's head.

Shaped for DynamoDB like :mod:`gateway.store.message_state`: each method is one
``GetItem``/``BatchGetItem``/``Query`` (per channel) or one conditional write /
``TransactWriteItems``, each docstring names its access pattern, and
``docs/data-model.md`` ("ReadStateStore") maps every pattern to tables and keys.

Adapters: :mod:`gateway.store.read_state_sqlite` (embedded default). Every adapter passes
``tests/contract/test_read_state_contract.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, Protocol

import msgspec
from msgspec import Meta

from gateway.domain.errors import InvalidField
from gateway.domain.model import revalidated
from gateway.store.domain import MAX_PAGE, Page
from gateway.store.message_state import MAX_ID_CHARS, check_id

__all__ = [
    "MAX_CHANNELS",
    "MAX_MARK_IDS",
    "MAX_MENTIONS",
    "MAX_PAGE",
    "MAX_PREVIEW_CHARS",
    "MAX_RECEIPTS",
    "Notification",
    "NotificationKind",
    "Page",
    "ReadCursor",
    "ReadStateStatistics",
    "ReadStateStore",
    "Receipt",
    "Unread",
    "check_channels",
    "check_limit",
    "check_mark_ids",
    "check_mentions",
    "check_millis",
    "check_notification",
]

MAX_CHANNELS = 100  # channels per list_cursors / unread call (DynamoDB: BatchGetItem keys)
MAX_MENTIONS = 32  # distinct users mentioned by one message (one TransactWriteItems)
MAX_RECEIPTS = 100  # participants returned by receipts (DMs have at most 9)
MAX_MARK_IDS = 100  # notification ids per mark_notifications_read call
MAX_PREVIEW_CHARS = 200

_END = r"$(?!\n)"
_PRINTABLE = r"[^\x00-\x1f\x7f]"

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=f"^{_PRINTABLE}+{_END}")]
"""A user, channel, notification or message id: like :func:`check_id`."""
Offset = Annotated[int, Meta(ge=1)]
Millis = Annotated[int, Meta(ge=0)]
Preview = Annotated[str, Meta(max_length=MAX_PREVIEW_CHARS)]
NotificationKind = Literal["mention", "dm", "reply"]


class ReadCursor(msgspec.Struct, frozen=True, kw_only=True):
    """``user`` has read ``channel`` up to and including ``offset``."""

    user: str
    channel: str
    offset: int  # >= 1: the last offset read (messages and events alike)
    updated_ms: int  # when it last moved


class Unread(msgspec.Struct, frozen=True, kw_only=True):
    """What ``user`` has not read in a channel (see :meth:`ReadStateStore.unread`)."""

    messages: int = 0  # noted messages after the cursor, not the user's own
    mentions: int = 0  # of those: mentioning the user, or @channel/@everyone


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """How far ``user`` has received and read ``channel``. Reading implies delivery:
    ``delivered >= read`` always."""

    user: str
    channel: str
    delivered: int = 0  # max(marked delivered, read); 0: nothing yet
    delivered_ms: int = 0  # the time of the mark that set ``delivered``
    read: int = 0  # the read cursor's offset; 0: none
    read_ms: int = 0


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One notification of ``user``. Every limit is a ``Meta``; the store checks them
    (:func:`check_notification`). ``read``/``read_ms`` are the store's: a notification
    passed to :meth:`ReadStateStore.notify` must have ``read=False``, ``read_ms=0``."""

    id: Id  # unique per user: the idempotency key of notify
    user: Id
    kind: NotificationKind
    channel: Id
    message_id: Id
    offset: Offset
    sender: Id
    preview: Preview = ""  # at most 200 characters of the message
    created_ms: Millis
    expires_ms: Millis  # > created_ms; from then on it is never returned
    read: bool = False
    read_ms: Millis = 0


class ReadStateStatistics(msgspec.Struct):
    reads: int = 0  # reading calls
    writes: int = 0  # calls of changing methods that returned (no-ops too)
    refusals: int = 0  # calls refused by a stored-state check (not input validation)


# -- validation (pure) ---------------------------------------------------------------------


def check_millis(value: int, field: str) -> int:
    """``value`` if it is an ``int`` >= 0, else ``InvalidField`` (field ``field``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidField(f"{field} must be an integer >= 0, not {value!r}", field=field)
    return value


def check_limit(limit: int) -> int:
    """``limit`` if it is 1..:data:`MAX_PAGE`, else ``InvalidField`` (field ``limit``)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidField(f"limit must be 1..{MAX_PAGE}, not {limit!r}", field="limit")
    return limit


def _ids(values: Sequence[str], field: str, most: int) -> list[str]:
    """Distinct ids of ``values`` in first-seen order, each :func:`check_id`, at most
    ``most`` of them (repeats are ignored, up to ``4 * most`` values in all)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidField(f"{field} must be a sequence of ids", field=field)
    if len(values) > 4 * most:
        raise InvalidField(f"{field}: at most {most}", field=field)
    distinct = list(dict.fromkeys(check_id(v, field) for v in values))
    if len(distinct) > most:
        raise InvalidField(f"{field}: at most {most}", field=field)
    return distinct


def check_channels(channels: Sequence[str]) -> list[str]:
    """Distinct channel ids, at most :data:`MAX_CHANNELS` (field ``channels``)."""
    return _ids(channels, "channels", MAX_CHANNELS)


def check_mentions(mentions: Sequence[str]) -> list[str]:
    """Distinct user ids, at most :data:`MAX_MENTIONS` (field ``mentions``)."""
    return _ids(mentions, "mentions", MAX_MENTIONS)


def check_mark_ids(ids: Sequence[str] | Literal["all"]) -> list[str] | None:
    """``None`` for ``"all"``, else distinct ids, at most :data:`MAX_MARK_IDS` (field
    ``ids``; a single id must be passed as a one-element list)."""
    if isinstance(ids, str) and ids == "all":
        return None
    return _ids(ids, "ids", MAX_MARK_IDS)


def check_notification(user: str, notification: Notification) -> Notification:
    """``notification`` if it meets every limit, belongs to ``user``, expires after it
    was created and is not read; else ``InvalidField`` naming the field."""
    check_id(user, "user")
    if not isinstance(notification, Notification):
        raise InvalidField("notification must be a Notification", field="notification")
    n = revalidated(notification)
    if n.user != user:
        raise InvalidField("notification.user is not the user notified", field="user")
    if n.expires_ms <= n.created_ms:
        raise InvalidField("expires_ms must be after created_ms", field="expires_ms")
    if n.read or n.read_ms:
        raise InvalidField("a new notification is unread", field="read")
    return n


# -- the store -----------------------------------------------------------------------------


class ReadStateStore(Protocol):
    """Read cursors, unread/mention counts, DM receipts and notifications.

    Guarantees every adapter gives:

    * **Atomic per call, strongly consistent.** Each method makes all of its changes or
      none; reads see every write that returned. On a backend failure it raises
      :class:`gateway.errors.StoreUnavailable` (retryable) and nothing of the call is
      stored.
    * **Forward only.** Read cursors and delivered offsets only move up: marking an offset
      at or below the stored one writes nothing and returns the stored state, so marks
      are idempotent and concurrent marks end at the highest.
    * **Counting.** Only what :meth:`note_message` was told counts. It must be called in
      log order per channel (the channel's single appender does, retrying a failed note
      before the next one): a repeat of a noted offset is a no-op, a *new* offset below
      the highest noted one is refused (``Conflict``, reason ``"order"``), because the
      running counts cannot be rewritten in DynamoDB. Counts are exact if each message is
      noted before it is delivered and marks never pass the log's head.
    * **Own messages never count**: not as unread, not as a mention (also not an
      ``@channel`` of one's own). A user with no cursor has read nothing: every noted
      message of others counts (the service marks a channel read when a user joins it).
    * **Notifications** are idempotent by (user, id); once ``clock() >= expires_ms`` one
      is as if absent: never listed nor marked, and its id may be notified again. SQLite
      deletes expired ones lazily, DynamoDB by TTL.
    * **Paging** as :class:`gateway.store.domain.DomainStore`'s: ``limit`` 1..200, opaque
      cursors signed by the store's ``cursor_key``, valid only for the listing (user and
      ``unread_only``) that returned them, else :class:`~gateway.domain.errors.BadCursor`.
    * **Validation** before any I/O: ids (:func:`~gateway.store.message_state.check_id`),
      offsets >= 1, times >= 0, list sizes and :class:`Notification` limits raise
      :class:`~gateway.domain.errors.InvalidField` with ``field``.
    """

    # -- read cursors ------------------------------------------------------------------

    async def mark_read(self, user: str, channel: str, offset: int, *, now_ms: int) -> ReadCursor:
        """Move ``user``'s cursor in ``channel`` up to ``offset`` (``updated_ms = now_ms``);
        at or below the stored one: the stored cursor, nothing written. DynamoDB:
        ``GetItem`` the channel's head item, then ``Query`` the counts at ``offset`` (a
        snapshot for :meth:`unread`), then one conditional ``UpdateItem`` of the cursor
        item (``read < :offset``; ALL_OLD on failure)."""
        ...

    async def get_cursor(self, user: str, channel: str) -> ReadCursor | None:
        """The cursor, ``None`` if ``user`` never marked ``channel`` read. DynamoDB:
        ``GetItem`` cursor item ``(channel, user)``."""
        ...

    async def list_cursors(self, user: str, channels: Sequence[str]) -> dict[str, ReadCursor]:
        """The cursors of ``user`` in those of ``channels`` (at most
        :data:`MAX_CHANNELS`, repeats ignored) that have one. DynamoDB: one
        ``BatchGetItem`` of the cursor items ``(channel, user)``."""
        ...

    # -- unread and mention counts -----------------------------------------------------

    async def note_message(
        self,
        channel: str,
        offset: int,
        *,
        sender: str,
        mentions: Sequence[str],
        everyone: bool,
    ) -> bool:
        """Count message ``offset`` of ``channel``, by ``sender``, mentioning ``mentions``
        (at most :data:`MAX_MENTIONS` distinct users; the sender is ignored) and, if
        ``everyone``, the whole channel (``@channel``/``@everyone``). ``True`` if counted
        now, ``False`` for a noted offset (nothing written, the first call's facts
        stand). A new offset below the highest noted: ``Conflict`` (``"order"``).
        DynamoDB: ``GetItem`` the channel's head item, then one ``TransactWriteItems``:
        the message item (``attribute_not_exists``), the head item (condition: the head
        read), one mark item per sender and mentioned user and their summary items'
        ``marks_head``."""
        ...

    async def unread(self, user: str, channels: Sequence[str]) -> dict[str, Unread]:
        """For each of ``channels`` (at most :data:`MAX_CHANNELS`; every one gets an
        entry, zero for channels never noted): the messages noted after ``user``'s cursor
        that are not the user's own, and how many of them mention the user directly or
        are ``@channel``, each message counted once. DynamoDB: one ``BatchGetItem`` of
        the cursor, head and user-summary items (three requests for 100 channels); per
        channel, one ``Query`` of the user's mark items after the cursor only if there
        are some, and one ``Query`` of the counts at the cursor only if its snapshot may
        be stale."""
        ...

    # -- receipts ------------------------------------------------------------------------

    async def mark_delivered(self, user: str, channel: str, offset: int, *, now_ms: int) -> Receipt:
        """Move ``user``'s delivered offset in ``channel`` up to ``offset`` (forward only,
        like :meth:`mark_read`); returns the user's receipt. DynamoDB: one conditional
        ``UpdateItem`` of the cursor item (``delivered < :offset``)."""
        ...

    async def receipts(self, channel: str) -> list[Receipt]:
        """The receipts of every user who has marked ``channel`` delivered or read, by
        user id, at most :data:`MAX_RECEIPTS` (the first by id; meant for DMs).
        DynamoDB: one ``Query`` of the cursor items of ``channel``, ``Limit`` 100."""
        ...

    # -- notifications -------------------------------------------------------------------

    async def notify(self, user: str, notification: Notification) -> bool:
        """Store ``notification`` for ``user`` (``notification.user == user``). ``True``
        if stored now; ``False`` if ``(user, id)`` is stored and not expired (nothing
        written, the first one stands). Expired on arrival: ``False``, not stored.
        DynamoDB: one ``PutItem``, condition ``attribute_not_exists(id) OR expires_ms <=
        :now``; TTL attribute ``expires`` (seconds)."""
        ...

    async def list_notifications(
        self,
        user: str,
        *,
        limit: int,
        cursor: str | None = None,
        unread_only: bool = False,
    ) -> Page[Notification]:
        """``user``'s unexpired notifications, newest first (by ``created_ms``, then id
        descending), only unread ones if ``unread_only``. DynamoDB: one ``Query`` of the
        LSI ``by_created`` (or, ``unread_only``, the sparse LSI ``unread``), descending,
        ``ConsistentRead``, filter ``expires_ms > :now``."""
        ...

    async def mark_notifications_read(
        self, user: str, ids: Sequence[str] | Literal["all"], *, now_ms: int
    ) -> int:
        """Mark ``ids`` (at most :data:`MAX_MARK_IDS`) or ``"all"`` of ``user``'s unexpired
        unread notifications read (``read_ms = now_ms``); the number that were unread.
        Unknown, expired and read ids are skipped. DynamoDB: one conditional
        ``UpdateItem`` per id (``read = false``), in parallel; ``"all"``: pages of the
        sparse LSI ``unread``, then the same updates."""
        ...

    def statistics(self) -> ReadStateStatistics: ...

    async def aclose(self) -> None: ...
