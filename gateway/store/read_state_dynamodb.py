"""DynamoDB read-state store: read cursors, unread counts, receipts, notifications.

Three tables, ``<prefix>-read-cursors`` (key ``channel`` + ``user``), ``<prefix>-unread``
(key ``channel`` + ``sk``: per channel a head item, message, mark and per-user summary
items) and ``<prefix>-notifications`` (key ``user`` + ``id``, LSIs ``by_created`` and the
sparse ``unread``, TTL ``expires``), defined in :mod:`gateway.store.tables` and never
created here (items in :mod:`gateway.store._read_state_dynamo_items` and
``docs/data-model.md``, "ReadStateStore"). Every call goes through :mod:`gateway.aws`
like the other DynamoDB stores: throttling and transient failures are retried there with
jittered backoff, then raised as :class:`gateway.aws.AwsUnavailable`, a
:class:`gateway.errors.StoreUnavailable`; a missing table or a closed store is
:class:`StoreUnavailable` too. All reads are strongly consistent (the LSIs' too).

How it keeps the :class:`gateway.store.read_state.ReadStateStore` guarantees:

* **Atomic per call.** A mark is one conditional ``UpdateItem`` of the cursor item
  (``read < :offset``, or ``delivered < :offset``); a failed condition hands back the
  stored cursor (``ALL_OLD``), so marks are forward only and idempotent. ``note_message``
  is one ``TransactWriteItems`` (message item absent, head item as read, mark and summary
  items) with a fresh ``ClientRequestToken``, reused by the bridge's retries; a
  cancelled one is decided again from the stored head (``ALL_OLD``). ``notify`` is one
  conditional ``PutItem``. ``mark_notifications_read`` is one ``UpdateItem`` per id, each
  atomic, the call not (as documented).
* **Counting** (:mod:`gateway.store._read_state_dynamo_counts`): running counts per
  message item, the counts at a cursor snapshotted when it is marked, the user's own and
  mention marks queried only when the user's summary item shows some after the cursor.
* **Expiry** is judged by ``clock()`` on every request, never left to DynamoDB's TTL
  sweep (late by days): expired notifications are filtered out of every read and
  overwritten by ``notify``.
* **Paging** uses :mod:`gateway.store._cursor` with the SQLite adapter's scope and key
  (``(created_ms, id)``), so a cursor means the same on both adapters.

Limits beyond the contract's: offsets and times above ``2**63 - 1`` (SQLite's INTEGER
range) are refused as :class:`~gateway.domain.errors.InvalidField`, because sort keys pad
them to 19 digits.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Literal

from gateway.aws import Aws
from gateway.domain.errors import BadCursor, InvalidField
from gateway.store import _read_state_dynamo_counts as counts
from gateway.store import _read_state_dynamo_notifications as notes
from gateway.store._cursor import CursorCodec
from gateway.store._dynamo import CountedStore, check_ready
from gateway.store._read_state_dynamo_items import MAX_INT
from gateway.store._read_state_dynamo_table import ReadTables
from gateway.store.domain import Page
from gateway.store.message_state import check_id, check_offset
from gateway.store.read_state import (
    Notification,
    ReadCursor,
    ReadStateStatistics,
    Receipt,
    Unread,
    check_channels,
    check_limit,
    check_mark_ids,
    check_mentions,
    check_millis,
    check_notification,
)
from gateway.store.tables import READ_STATE_TABLES

__all__ = ["DynamoReadStateStore", "open_dynamodb_read_state"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _offset(value: int, field: str = "offset") -> int:
    check_offset(value, field)
    if value > MAX_INT:
        raise InvalidField(f"{field} must be at most {MAX_INT}", field=field)
    return value


def _millis(value: int, field: str) -> int:
    check_millis(value, field)
    if value > MAX_INT:
        raise InvalidField(f"{field} must be at most {MAX_INT}", field=field)
    return value


class DynamoReadStateStore(CountedStore[ReadStateStatistics]):
    """A :class:`gateway.store.read_state.ReadStateStore` on the read-state tables.

    Any number of handles, on any number of nodes, may share the tables. ``cursor_key``
    (at least 16 bytes) signs paging cursors; ``clock`` gives the time in milliseconds
    against which notifications expire. Make it with :func:`open_dynamodb_read_state`,
    which checks the tables first."""

    def __init__(
        self, aws: Aws, prefix: str, cursor_key: bytes, *, clock: Callable[[], int] = _now_ms
    ) -> None:
        self.aws = aws
        self.prefix = prefix
        self._tables = ReadTables(aws, prefix)
        self._codec = CursorCodec(cursor_key)
        self._clock = clock
        super().__init__(self._tables, ReadStateStatistics())

    @property
    def tables(self) -> tuple[str, str, str]:
        """The table names: read cursors, unread, notifications."""
        t = self._tables
        return t.cursors, t.unread, t.notifications

    # -- read cursors --------------------------------------------------------------------

    async def mark_read(self, user: str, channel: str, offset: int, *, now_ms: int) -> ReadCursor:
        check_id(user, "user")
        check_id(channel, "channel")
        _offset(offset)
        _millis(now_ms, "now_ms")
        return await self._run(
            True, lambda: counts.mark_read(self._tables, user, channel, offset, now_ms)
        )

    async def get_cursor(self, user: str, channel: str) -> ReadCursor | None:
        check_id(user, "user")
        check_id(channel, "channel")
        return await self._run(False, lambda: counts.get_cursor(self._tables, user, channel))

    async def list_cursors(self, user: str, channels: Sequence[str]) -> dict[str, ReadCursor]:
        check_id(user, "user")
        wanted = check_channels(channels)
        if not wanted:
            return {}
        return await self._run(False, lambda: counts.list_cursors(self._tables, user, wanted))

    # -- unread and mention counts -------------------------------------------------------

    async def note_message(
        self,
        channel: str,
        offset: int,
        *,
        sender: str,
        mentions: Sequence[str],
        everyone: bool,
    ) -> bool:
        check_id(channel, "channel")
        _offset(offset)
        check_id(sender, "sender")
        users = check_mentions(mentions)
        flag = bool(everyone)
        return await self._run(
            True,
            lambda: counts.note_message(
                self._tables, channel, offset, sender=sender, mentions=users, everyone=flag
            ),
        )

    async def unread(self, user: str, channels: Sequence[str]) -> dict[str, Unread]:
        check_id(user, "user")
        wanted = check_channels(channels)
        if not wanted:
            return {}
        return await self._run(False, lambda: counts.unread(self._tables, user, wanted))

    # -- receipts --------------------------------------------------------------------------

    async def mark_delivered(self, user: str, channel: str, offset: int, *, now_ms: int) -> Receipt:
        check_id(user, "user")
        check_id(channel, "channel")
        _offset(offset)
        _millis(now_ms, "now_ms")
        return await self._run(
            True, lambda: counts.mark_delivered(self._tables, user, channel, offset, now_ms)
        )

    async def receipts(self, channel: str) -> list[Receipt]:
        check_id(channel, "channel")
        return await self._run(False, lambda: counts.receipts(self._tables, channel))

    # -- notifications ---------------------------------------------------------------------

    async def notify(self, user: str, notification: Notification) -> bool:
        n = check_notification(user, notification)
        _offset(n.offset)
        _millis(n.created_ms, "created_ms")
        _millis(n.expires_ms, "expires_ms")
        now = self._clock()
        return await self._run(True, lambda: notes.notify(self._tables, n, now))

    async def list_notifications(
        self,
        user: str,
        *,
        limit: int,
        cursor: str | None = None,
        unread_only: bool = False,
    ) -> Page[Notification]:
        check_id(user, "user")
        n = check_limit(limit)
        if cursor is not None and not isinstance(cursor, str):
            raise BadCursor()
        only = bool(unread_only)
        now = self._clock()
        return await self._run(
            False,
            lambda: notes.list_notifications(
                self._tables, self._codec, user, n, cursor=cursor, unread_only=only, now=now
            ),
        )

    async def mark_notifications_read(
        self, user: str, ids: Sequence[str] | Literal["all"], *, now_ms: int
    ) -> int:
        check_id(user, "user")
        wanted = check_mark_ids(ids)
        _millis(now_ms, "now_ms")
        if wanted == []:
            return 0
        now = self._clock()
        return await self._run(
            True,
            lambda: notes.mark_notifications_read(self._tables, user, wanted, now_ms, now),
        )


@asynccontextmanager
async def open_dynamodb_read_state(
    aws: Aws, prefix: str, cursor_key: bytes, *, clock: Callable[[], int] = _now_ms
) -> AsyncIterator[DynamoReadStateStore]:
    """A :class:`DynamoReadStateStore` on the read-state tables under ``prefix``, after
    checking them: raises :class:`StoreUnavailable` naming what is missing or wrong
    (deployment creates tables, see :func:`gateway.store.tables.create_tables`)."""
    store = DynamoReadStateStore(aws, prefix, cursor_key, clock=clock)  # checks the key first
    await check_ready(aws, prefix, READ_STATE_TABLES, "read-state tables")
    async with aclosing(store):
        yield store
