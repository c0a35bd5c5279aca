"""SQLite read-state store: read cursors, unread counts, receipts, notifications in one file.

Its own file (``<data_dir>/read-state.sqlite3`` by convention), neither the message
store's nor the domain or message-state stores': SQLite has one writer per file, and
read marks arrive at least at message rate (every member reads every channel), so their
transactions must not queue behind message commits nor other stores' transactions
behind them. No call writes a record of another store.

Tables (``docs/data-model.md``, "ReadStateStore", maps them to the DynamoDB items):

* ``cursors``, primary key ``(channel, user_id)``: the read cursor and the delivered
  offset of a user in a channel (``read_offset = 0``: no read cursor yet).
* ``channel_heads``, primary key ``channel``: the highest noted offset and the running
  counts of messages and of ``@channel`` messages.
* ``noted``, primary key ``(channel, "offset")``: per noted message its sender and the
  running counts through it (``seq``, ``eseq``), so the counts at a cursor are one
  indexed lookup (the last noted message at or below it).
* ``marks``, primary key ``(channel, user_id, "offset")``: the messages a user sent
  (``own = 1``) or was mentioned in by another (``own = 0``), with the message's
  ``@channel`` flag: what is subtracted from (own) or added to (direct mentions) the
  channel-wide counts.
* ``notifications``, primary key ``(user_id, id)``, indexes by ``(user_id, created_ms,
  id)`` for the newest-first listing and by ``expires_ms`` for the lazy sweep (every
  notification write deletes up to 100 expired rows).

Unread counts for a cursor ``c`` (0 without one), with ``(seq, eseq)`` the running counts
of the last noted message at or below ``c``::

    messages = (count - seq) - own marks after c
    mentions = (everyone - eseq) - own @channel marks after c + direct, not @channel, marks after c

Connection handling, durability modes and error translation (every ``sqlite3``/``OSError``
exception becomes :class:`gateway.errors.StoreUnavailable`, the transaction rolled back)
are those of the other SQLite stores (:mod:`gateway.store._sqlite_runner`). Every change
is one ``BEGIN IMMEDIATE`` transaction; every read of several rows one ``BEGIN``
(deferred) transaction, so it sees one snapshot.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

from gateway.domain.errors import BadCursor, Conflict
from gateway.store._cursor import CursorCodec
from gateway.store._domain_sql import page
from gateway.store._sqlite_runner import RunnerStore
from gateway.store._sqlite_wal import running, transaction
from gateway.store.domain import Page
from gateway.store.message_state import check_id, check_offset
from gateway.store.read_state import (
    MAX_RECEIPTS,
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

__all__ = ["SCHEMA", "SqliteReadStateStore", "open_sqlite_read_state"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS cursors (
    channel          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    read_offset      INTEGER NOT NULL,   -- 0: no read cursor
    read_ms          INTEGER NOT NULL,
    delivered_offset INTEGER NOT NULL,   -- as marked (receipts report max with read)
    delivered_ms     INTEGER NOT NULL,
    PRIMARY KEY (channel, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channel_heads (
    channel  TEXT NOT NULL PRIMARY KEY,
    head     INTEGER NOT NULL,           -- the highest noted offset
    messages INTEGER NOT NULL,           -- noted messages
    everyone INTEGER NOT NULL            -- of which @channel
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS noted (
    channel  TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    sender   TEXT NOT NULL,
    seq      INTEGER NOT NULL,           -- channel_heads.messages through this one
    eseq     INTEGER NOT NULL,           -- channel_heads.everyone through this one
    PRIMARY KEY (channel, "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS marks (
    channel  TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    own      INTEGER NOT NULL,           -- 1: sent by user_id; 0: mentions user_id
    everyone INTEGER NOT NULL,           -- the message is @channel
    PRIMARY KEY (channel, user_id, "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notifications (
    user_id    TEXT NOT NULL,
    id         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    channel    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    "offset"   INTEGER NOT NULL,
    sender     TEXT NOT NULL,
    preview    TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    read       INTEGER NOT NULL,
    read_ms    INTEGER NOT NULL,
    PRIMARY KEY (user_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS notifications_by_created ON notifications (user_id, created_ms, id);
CREATE INDEX IF NOT EXISTS notifications_by_expiry ON notifications (expires_ms);
"""

SWEEP_BATCH = 100  # expired notifications deleted by one notification write

_CURSOR = (
    "SELECT read_offset, read_ms, delivered_offset, delivered_ms FROM cursors"
    " WHERE channel = ? AND user_id = ?"
)
_NOTIFICATION = (
    'SELECT id, user_id, kind, channel, message_id, "offset", sender, preview, created_ms,'
    " expires_ms, read, read_ms FROM notifications"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A deferred read transaction: the reads inside see one snapshot."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _receipt(user: str, channel: str, row: Any) -> Receipt:
    read, read_ms, delivered, delivered_ms = row
    if read > delivered:  # reading implies delivery
        delivered, delivered_ms = read, read_ms
    return Receipt(
        user=user,
        channel=channel,
        delivered=delivered,
        delivered_ms=delivered_ms,
        read=read,
        read_ms=read_ms,
    )


def _notification_row(row: Any) -> Notification:
    id_, user, kind, channel, message_id, offset, sender, preview, created, *rest = row
    expires, read, read_ms = rest
    return Notification(
        id=id_,
        user=user,
        kind=kind,
        channel=channel,
        message_id=message_id,
        offset=offset,
        sender=sender,
        preview=preview,
        created_ms=created,
        expires_ms=expires,
        read=bool(read),
        read_ms=read_ms,
    )


# -- operations (synchronous, on the store's connection) -------------------------------


def _mark_read(
    conn: sqlite3.Connection, user: str, channel: str, offset: int, now_ms: int
) -> ReadCursor:
    with transaction(conn):
        row = conn.execute(_CURSOR, (channel, user)).fetchone()
        if row is not None and row[0] >= offset:
            return ReadCursor(user=user, channel=channel, offset=row[0], updated_ms=row[1])
        conn.execute(
            "INSERT INTO cursors (channel, user_id, read_offset, read_ms, delivered_offset,"
            " delivered_ms) VALUES (?, ?, ?, ?, 0, 0) ON CONFLICT (channel, user_id)"
            " DO UPDATE SET read_offset = excluded.read_offset, read_ms = excluded.read_ms",
            (channel, user, offset, now_ms),
        )
        return ReadCursor(user=user, channel=channel, offset=offset, updated_ms=now_ms)


def _mark_delivered(
    conn: sqlite3.Connection, user: str, channel: str, offset: int, now_ms: int
) -> Receipt:
    with transaction(conn):
        row = conn.execute(_CURSOR, (channel, user)).fetchone()
        if row is not None and row[2] >= offset:
            return _receipt(user, channel, row)
        conn.execute(
            "INSERT INTO cursors (channel, user_id, read_offset, read_ms, delivered_offset,"
            " delivered_ms) VALUES (?, ?, 0, 0, ?, ?) ON CONFLICT (channel, user_id)"
            " DO UPDATE SET delivered_offset = excluded.delivered_offset,"
            " delivered_ms = excluded.delivered_ms",
            (channel, user, offset, now_ms),
        )
        read, read_ms = (0, 0) if row is None else row[:2]
        return _receipt(user, channel, (read, read_ms, offset, now_ms))


def _cursors(conn: sqlite3.Connection, user: str, channels: Sequence[str]) -> dict[str, ReadCursor]:
    marks = ", ".join("?" * len(channels))
    rows = conn.execute(
        "SELECT channel, read_offset, read_ms FROM cursors"
        f" WHERE user_id = ? AND channel IN ({marks}) AND read_offset > 0",
        (user, *channels),
    ).fetchall()
    found = {ch: ReadCursor(user=user, channel=ch, offset=o, updated_ms=ms) for ch, o, ms in rows}
    return {ch: found[ch] for ch in channels if ch in found}  # in the order asked


def _receipts(conn: sqlite3.Connection, channel: str) -> list[Receipt]:
    rows = conn.execute(
        "SELECT user_id, read_offset, read_ms, delivered_offset, delivered_ms FROM cursors"
        " WHERE channel = ? ORDER BY user_id LIMIT ?",
        (channel, MAX_RECEIPTS),
    ).fetchall()
    return [_receipt(row[0], channel, row[1:]) for row in rows]


def _note_message(
    conn: sqlite3.Connection,
    channel: str,
    offset: int,
    *,
    sender: str,
    mentions: Sequence[str],
    everyone: bool,
) -> bool:
    with transaction(conn):
        key = (channel, offset)
        if conn.execute('SELECT 1 FROM noted WHERE channel = ? AND "offset" = ?', key).fetchone():
            return False  # a repeat: the first call's facts stand
        head = conn.execute(
            "SELECT head, messages, everyone FROM channel_heads WHERE channel = ?", (channel,)
        ).fetchone()
        top, count, ecount = (0, 0, 0) if head is None else head
        if offset < top:
            raise Conflict(
                f"{channel}: offset {offset} is below the highest noted offset {top}",
                reason="order",
            )
        count, ecount = count + 1, ecount + int(everyone)
        conn.execute(
            "INSERT INTO channel_heads (channel, head, messages, everyone) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (channel) DO UPDATE SET head = excluded.head,"
            " messages = excluded.messages, everyone = excluded.everyone",
            (channel, offset, count, ecount),
        )
        conn.execute(
            'INSERT INTO noted (channel, "offset", sender, seq, eseq) VALUES (?, ?, ?, ?, ?)',
            (channel, offset, sender, count, ecount),
        )
        flag = int(everyone)
        rows = [(channel, sender, offset, 1, flag)]
        rows += [(channel, u, offset, 0, flag) for u in mentions if u != sender]
        conn.executemany(
            'INSERT INTO marks (channel, user_id, "offset", own, everyone) VALUES (?, ?, ?, ?, ?)',
            rows,
        )
        return True


def _unread_one(conn: sqlite3.Connection, user: str, channel: str) -> Unread:
    head = conn.execute(
        "SELECT head, messages, everyone FROM channel_heads WHERE channel = ?", (channel,)
    ).fetchone()
    if head is None:
        return Unread()
    top, count, ecount = head
    row = conn.execute(
        "SELECT read_offset FROM cursors WHERE channel = ? AND user_id = ?", (channel, user)
    ).fetchone()
    cursor = 0 if row is None else row[0]
    if cursor >= top:
        return Unread()
    at = conn.execute(
        'SELECT seq, eseq FROM noted WHERE channel = ? AND "offset" <= ?'
        ' ORDER BY "offset" DESC LIMIT 1',
        (channel, cursor),
    ).fetchone()
    seq, eseq = (0, 0) if at is None else at
    own, own_everyone, direct = conn.execute(
        "SELECT COALESCE(SUM(own), 0), COALESCE(SUM(own * everyone), 0),"
        " COALESCE(SUM((1 - own) * (1 - everyone)), 0)"
        ' FROM marks WHERE channel = ? AND user_id = ? AND "offset" > ?',
        (channel, user, cursor),
    ).fetchone()
    return Unread(
        messages=count - seq - own,
        mentions=ecount - eseq - own_everyone + direct,
    )


def _unread(conn: sqlite3.Connection, user: str, channels: Sequence[str]) -> dict[str, Unread]:
    with _snapshot(conn):
        return {channel: _unread_one(conn, user, channel) for channel in channels}


def _sweep(conn: sqlite3.Connection, now: int) -> None:
    """Delete up to :data:`SWEEP_BATCH` expired notifications (of any user)."""
    conn.execute(
        "DELETE FROM notifications WHERE (user_id, id) IN (SELECT user_id, id FROM"
        " notifications WHERE expires_ms <= ? LIMIT ?)",
        (now, SWEEP_BATCH),
    )


def _notify(conn: sqlite3.Connection, n: Notification, now: int) -> bool:
    with transaction(conn):
        _sweep(conn, now)
        if n.expires_ms <= now:
            return False  # expired on arrival: as if stored and gone
        row = conn.execute(
            "SELECT expires_ms FROM notifications WHERE user_id = ? AND id = ?", (n.user, n.id)
        ).fetchone()
        if row is not None and row[0] > now:
            return False  # a repeat: the first one stands
        conn.execute(
            "INSERT OR REPLACE INTO notifications (user_id, id, kind, channel, message_id,"
            ' "offset", sender, preview, created_ms, expires_ms, read, read_ms)'
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)",
            (
                n.user,
                n.id,
                n.kind,
                n.channel,
                n.message_id,
                n.offset,
                n.sender,
                n.preview,
                n.created_ms,
                n.expires_ms,
            ),
        )
        return True


def _list_notifications(
    conn: sqlite3.Connection,
    codec: CursorCodec,
    user: str,
    limit: int,
    *,
    cursor: str | None,
    unread_only: bool,
    now: int,
) -> Page[Notification]:
    scope = f"notifications\x00{user}\x00{int(unread_only)}"
    sql = f"{_NOTIFICATION} WHERE user_id = ? AND expires_ms > ?"
    args: list[Any] = [user, now]
    if unread_only:
        sql += " AND read = 0"
    if cursor is not None:
        created, id_ = codec.decode(scope, cursor, 2)
        if not isinstance(created, int) or not isinstance(id_, str):
            raise BadCursor()
        sql += " AND (created_ms, id) < (?, ?)"
        args += [created, id_]
    rows = conn.execute(
        f"{sql} ORDER BY created_ms DESC, id DESC LIMIT ?", (*args, limit + 1)
    ).fetchall()
    return page(
        codec, scope, rows, limit, item=_notification_row, key=lambda n: (n.created_ms, n.id)
    )


def _mark_notifications_read(
    conn: sqlite3.Connection, user: str, ids: list[str] | None, now_ms: int, now: int
) -> int:
    with transaction(conn):
        _sweep(conn, now)
        sql = (
            "UPDATE notifications SET read = 1, read_ms = ?"
            " WHERE user_id = ? AND read = 0 AND expires_ms > ?"
        )
        args: list[Any] = [now_ms, user, now]
        if ids is not None:
            sql += f" AND id IN ({', '.join('?' * len(ids))})"
            args += ids
        return conn.execute(sql, args).rowcount


# -- the store ---------------------------------------------------------------------------


class SqliteReadStateStore(RunnerStore):
    """A :class:`gateway.store.read_state.ReadStateStore` on one SQLite file.

    ``path`` is a file path (its parent directory is created) or ``":memory:"``;
    ``cursor_key`` (at least 16 bytes) signs paging cursors; ``clock`` gives the time in
    milliseconds against which notifications expire."""

    def __init__(
        self,
        path: str,
        cursor_key: bytes,
        *,
        durability: str = "full",
        fsync_interval: float = 1.0,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        super().__init__(path, SCHEMA, durability=durability, fsync_interval=fsync_interval)
        self._codec = CursorCodec(cursor_key)
        self._clock = clock

    # -- read cursors --------------------------------------------------------------------

    async def mark_read(self, user: str, channel: str, offset: int, *, now_ms: int) -> ReadCursor:
        check_id(user, "user")
        check_id(channel, "channel")
        check_offset(offset)
        check_millis(now_ms, "now_ms")
        return await self._write(
            "mark_read", lambda c: _mark_read(c, user, channel, offset, now_ms)
        )

    async def get_cursor(self, user: str, channel: str) -> ReadCursor | None:
        check_id(user, "user")
        check_id(channel, "channel")
        found = await self._read("get_cursor", lambda c: _cursors(c, user, [channel]))
        return found.get(channel)

    async def list_cursors(self, user: str, channels: Sequence[str]) -> dict[str, ReadCursor]:
        check_id(user, "user")
        wanted = check_channels(channels)
        if not wanted:
            return {}
        return await self._read("list_cursors", lambda c: _cursors(c, user, wanted))

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
        check_offset(offset)
        check_id(sender, "sender")
        users = check_mentions(mentions)
        flag = bool(everyone)
        return await self._write(
            "note_message",
            lambda c: _note_message(
                c, channel, offset, sender=sender, mentions=users, everyone=flag
            ),
        )

    async def unread(self, user: str, channels: Sequence[str]) -> dict[str, Unread]:
        check_id(user, "user")
        wanted = check_channels(channels)
        if not wanted:
            return {}
        return await self._read("unread", lambda c: _unread(c, user, wanted))

    # -- receipts --------------------------------------------------------------------------

    async def mark_delivered(self, user: str, channel: str, offset: int, *, now_ms: int) -> Receipt:
        check_id(user, "user")
        check_id(channel, "channel")
        check_offset(offset)
        check_millis(now_ms, "now_ms")
        return await self._write(
            "mark_delivered", lambda c: _mark_delivered(c, user, channel, offset, now_ms)
        )

    async def receipts(self, channel: str) -> list[Receipt]:
        check_id(channel, "channel")
        return await self._read("receipts", lambda c: _receipts(c, channel))

    # -- notifications ---------------------------------------------------------------------

    async def notify(self, user: str, notification: Notification) -> bool:
        n = check_notification(user, notification)
        now = self._clock()
        return await self._write("notify", lambda c: _notify(c, n, now))

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
        return await self._read(
            "list_notifications",
            lambda c: _list_notifications(
                c, self._codec, user, n, cursor=cursor, unread_only=only, now=now
            ),
        )

    async def mark_notifications_read(
        self, user: str, ids: Sequence[str] | Literal["all"], *, now_ms: int
    ) -> int:
        check_id(user, "user")
        wanted = check_mark_ids(ids)
        check_millis(now_ms, "now_ms")
        if wanted == []:
            return 0
        now = self._clock()
        return await self._write(
            "mark_notifications_read",
            lambda c: _mark_notifications_read(c, user, wanted, now_ms, now),
        )

    # -- lifecycle -------------------------------------------------------------------------

    def statistics(self) -> ReadStateStatistics:
        """A snapshot: read calls, committed write calls, refused calls."""
        return self._statistics(ReadStateStatistics)


@asynccontextmanager
async def open_sqlite_read_state(
    path: str,
    cursor_key: bytes,
    *,
    durability: str = "full",
    fsync_interval: float = 1.0,
    clock: Callable[[], int] = _now_ms,
) -> AsyncIterator[SqliteReadStateStore]:
    """Open (creating the parent directory and the schema) and close a
    :class:`SqliteReadStateStore`, running its checkpointer in interval mode."""
    store = SqliteReadStateStore(
        path, cursor_key, durability=durability, fsync_interval=fsync_interval, clock=clock
    )
    async with running(store):
        yield store
