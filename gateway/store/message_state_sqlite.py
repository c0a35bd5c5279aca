"""SQLite message-state store: edits, deletes, reactions and thread summaries in one file.

Its own file (``<data_dir>/message_state.sqlite3`` by convention), neither the message
store's nor the domain store's: SQLite has one writer per file, and reactions arrive at
message rate, so their transactions must not queue behind message commits nor domain
transactions behind them. No call writes a record of another store.

Two tables mirror the DynamoDB items of ``docs/data-model.md``: ``message_state`` (one row
per changed message, primary key ``(channel, "offset")``, the reaction counts as a JSON
object and the thread participants as a JSON array) and ``reactions`` (one row per user
reaction, primary key ``(channel, "offset", emoji, user_id)``, plus an index by user for
:meth:`SqliteMessageStateStore.my_reactions`).

Connection handling, durability modes (``"full"``: fsynced on return, in a worker
thread; ``"interval"``: inline, in the WAL on return, fsynced within ``fsync_interval``)
and error translation (every ``sqlite3``/``OSError`` exception becomes
:class:`gateway.errors.StoreUnavailable`, the transaction rolled back) are those of the
domain store (:mod:`gateway.store._sqlite_runner`). Every change is one
``BEGIN IMMEDIATE`` transaction: the checks read the row and the writes follow under the
same write lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from gateway.domain.errors import Conflict, InvalidField, LimitExceeded, StaleVersion
from gateway.store._sqlite_runner import RunnerStore
from gateway.store._sqlite_wal import running, transaction
from gateway.store.message_state import (
    MAX_GET_STATES,
    MAX_PARTICIPANTS,
    MessageState,
    MessageStateStatistics,
    check_body,
    check_emoji,
    check_id,
    check_offset,
    check_op,
)

__all__ = ["SCHEMA", "SqliteMessageStateStore", "open_sqlite_message_state"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS message_state (
    channel       TEXT NOT NULL,
    "offset"      INTEGER NOT NULL,
    author        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    body          TEXT,                  -- NULL: as posted
    deleted       INTEGER NOT NULL,
    edited_ms     INTEGER NOT NULL,
    reactions     TEXT NOT NULL,         -- JSON object: emoji -> count (> 0)
    replies       INTEGER NOT NULL,
    last_reply_ms INTEGER NOT NULL,
    participants  TEXT NOT NULL,         -- JSON array of user ids, first-reply order
    op            TEXT NOT NULL,
    PRIMARY KEY (channel, "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reactions (
    channel TEXT NOT NULL,
    "offset" INTEGER NOT NULL,
    emoji   TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (channel, "offset", emoji, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reactions_by_user ON reactions (channel, "offset", user_id);
"""

_STATE = (
    'SELECT channel, "offset", author, version, body, deleted, edited_ms, reactions,'
    " replies, last_reply_ms, participants, op FROM message_state"
)
_SAVE = (
    'INSERT OR REPLACE INTO message_state (channel, "offset", author, version, body, deleted,'
    " edited_ms, reactions, replies, last_reply_ms, participants, op)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_REACTION_KEY = 'channel = ? AND "offset" = ? AND emoji = ? AND user_id = ?'

_reactions_decoder = msgspec.json.Decoder(dict[str, int])
_participants_decoder = msgspec.json.Decoder(tuple[str, ...])


def _state_row(row: Any) -> MessageState:
    channel, offset, author, version, body, deleted, edited_ms, reactions, replies, *rest = row
    last_reply_ms, participants, op = rest
    return MessageState(
        channel=channel,
        offset=offset,
        author=author,
        version=version,
        body=body,
        deleted=bool(deleted),
        edited_ms=edited_ms,
        reactions=_reactions_decoder.decode(reactions),
        replies=replies,
        last_reply_ms=last_reply_ms,
        participants=_participants_decoder.decode(participants),
        op=op,
    )


def _save(conn: sqlite3.Connection, s: MessageState) -> None:
    conn.execute(
        _SAVE,
        (
            s.channel,
            s.offset,
            s.author,
            s.version,
            s.body,
            int(s.deleted),
            s.edited_ms,
            msgspec.json.encode(s.reactions).decode(),
            s.replies,
            s.last_reply_ms,
            msgspec.json.encode(s.participants).decode(),
            s.op,
        ),
    )


def _current(
    conn: sqlite3.Connection, channel: str, offset: int, author: str
) -> tuple[MessageState, bool]:
    """The stored state (or the state as posted, ``False``: no row); ``Conflict``
    (reason ``"author"``) if the stored author is not ``author``."""
    row = conn.execute(f'{_STATE} WHERE channel = ? AND "offset" = ?', (channel, offset)).fetchone()
    if row is None:
        return MessageState(channel=channel, offset=offset, author=author), False
    state = _state_row(row)
    if state.author != author:
        raise Conflict(f"message {channel}/{offset} is not by {author!r}", reason="author")
    return state, True


def _deleted(state: MessageState) -> Conflict:
    return Conflict(f"message {state.channel}/{state.offset} is deleted", reason="deleted")


def _millis(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidField(f"{field} must be an integer >= 0", field=field)
    return value


# -- operations (synchronous, on the store's connection) -------------------------------


def _get_states(
    conn: sqlite3.Connection, channel: str, offsets: Sequence[int]
) -> dict[int, MessageState]:
    marks = ", ".join("?" * len(offsets))
    rows = conn.execute(
        f'{_STATE} WHERE channel = ? AND "offset" IN ({marks})', (channel, *offsets)
    ).fetchall()
    return {row[1]: _state_row(row) for row in rows}


def _edit(
    conn: sqlite3.Connection,
    channel: str,
    offset: int,
    *,
    author: str,
    expected_version: int,
    body: str,
    op: str,
    now_ms: int,
) -> MessageState:
    with transaction(conn):
        state, _ = _current(conn, channel, offset, author)
        if state.op == op:
            return state  # a retry of the edit (or delete) that was applied last
        if state.deleted:
            raise _deleted(state)
        if state.version != expected_version:
            raise StaleVersion(
                f"message {channel}/{offset} is at version {state.version}, not {expected_version}",
                current=state.version,
            )
        new = msgspec.structs.replace(
            state, version=state.version + 1, body=body, edited_ms=now_ms, op=op
        )
        _save(conn, new)
        return new


def _delete(
    conn: sqlite3.Connection, channel: str, offset: int, *, author: str, op: str, now_ms: int
) -> tuple[bool, MessageState]:
    with transaction(conn):
        state, _ = _current(conn, channel, offset, author)
        if state.deleted:
            return False, state
        new = msgspec.structs.replace(
            state,
            version=state.version + 1,
            body="",
            deleted=True,
            edited_ms=now_ms,
            reactions={},
            op=op,
        )
        conn.execute('DELETE FROM reactions WHERE channel = ? AND "offset" = ?', (channel, offset))
        _save(conn, new)
        return True, new


def _react(
    conn: sqlite3.Connection,
    channel: str,
    offset: int,
    *,
    author: str,
    user: str,
    emoji: str,
    add: bool,
    max_kinds: int,
) -> tuple[bool, MessageState]:
    key = (channel, offset, emoji, user)
    with transaction(conn):
        state, _ = _current(conn, channel, offset, author)
        if state.deleted:
            raise _deleted(state)
        present = conn.execute(f"SELECT 1 FROM reactions WHERE {_REACTION_KEY}", key).fetchone()
        if add == (present is not None):
            return False, state  # already there / already gone: nothing to write
        counts = dict(state.reactions)
        if add:
            if emoji not in counts and len(counts) >= max_kinds:
                raise LimitExceeded(
                    f"message {channel}/{offset} has {len(counts)} kinds of reactions"
                    f" (at most {max_kinds})",
                    reason="reactions",
                )
            conn.execute(
                'INSERT INTO reactions (channel, "offset", emoji, user_id) VALUES (?, ?, ?, ?)',
                key,
            )
            counts[emoji] = counts.get(emoji, 0) + 1
        else:
            conn.execute(f"DELETE FROM reactions WHERE {_REACTION_KEY}", key)
            if (n := counts.get(emoji, 0) - 1) > 0:
                counts[emoji] = n
            else:
                counts.pop(emoji, None)
        new = msgspec.structs.replace(state, reactions=counts)
        _save(conn, new)
        return True, new


def _my_reactions(conn: sqlite3.Connection, channel: str, offset: int, user: str) -> frozenset[str]:
    rows = conn.execute(
        'SELECT emoji FROM reactions WHERE channel = ? AND "offset" = ? AND user_id = ?',
        (channel, offset, user),
    ).fetchall()
    return frozenset(emoji for (emoji,) in rows)


def _note_reply(
    conn: sqlite3.Connection,
    channel: str,
    parent: int,
    *,
    author: str,
    user: str,
    reply_offset: int,
    reply_ms: int,
) -> MessageState:
    with transaction(conn):
        state, stored = _current(conn, channel, parent, author)
        participants = state.participants
        if user not in participants and len(participants) < MAX_PARTICIPANTS:
            participants = (*participants, user)
        new = msgspec.structs.replace(
            state,
            replies=max(state.replies, reply_offset),
            last_reply_ms=max(state.last_reply_ms, reply_ms),
            participants=participants,
        )
        if stored and new == state:
            return state  # a repeat (or an older reply): nothing to write
        _save(conn, new)
        return new


# -- the store ---------------------------------------------------------------------------


class SqliteMessageStateStore(RunnerStore):
    """A :class:`gateway.store.message_state.MessageStateStore` on one SQLite file.

    ``path`` is a file path (its parent directory is created) or ``":memory:"``."""

    def __init__(self, path: str, *, durability: str = "full", fsync_interval: float = 1.0):
        super().__init__(path, SCHEMA, durability=durability, fsync_interval=fsync_interval)

    async def get_states(self, channel: str, offsets: Sequence[int]) -> dict[int, MessageState]:
        check_id(channel, "channel")
        if isinstance(offsets, (str, bytes)) or len(offsets) > MAX_GET_STATES:
            raise InvalidField(
                f"offsets must be a sequence of at most {MAX_GET_STATES}", field="offsets"
            )
        wanted = sorted({check_offset(o, "offsets") for o in offsets})
        if not wanted:
            return {}
        return await self._read("get_states", lambda c: _get_states(c, channel, wanted))

    async def edit(
        self,
        channel: str,
        offset: int,
        *,
        author: str,
        expected_version: int,
        body: str,
        op: str,
        now_ms: int,
    ) -> MessageState:
        check_id(channel, "channel")
        check_offset(offset)
        check_id(author, "author")
        check_offset(expected_version, "expected_version")
        check_body(body)
        check_op(op)
        _millis(now_ms, "now_ms")
        return await self._write(
            "edit",
            lambda c: _edit(
                c,
                channel,
                offset,
                author=author,
                expected_version=expected_version,
                body=body,
                op=op,
                now_ms=now_ms,
            ),
        )

    async def delete(
        self, channel: str, offset: int, *, author: str, op: str, now_ms: int
    ) -> tuple[bool, MessageState]:
        check_id(channel, "channel")
        check_offset(offset)
        check_id(author, "author")
        check_op(op)
        _millis(now_ms, "now_ms")
        return await self._write(
            "delete", lambda c: _delete(c, channel, offset, author=author, op=op, now_ms=now_ms)
        )

    async def react(
        self,
        channel: str,
        offset: int,
        *,
        author: str,
        user: str,
        emoji: str,
        add: bool,
        max_kinds: int,
    ) -> tuple[bool, MessageState]:
        check_id(channel, "channel")
        check_offset(offset)
        check_id(author, "author")
        check_id(user, "user")
        check_emoji(emoji)
        check_offset(max_kinds, "max_kinds")
        return await self._write(
            "react",
            lambda c: _react(
                c,
                channel,
                offset,
                author=author,
                user=user,
                emoji=emoji,
                add=bool(add),
                max_kinds=max_kinds,
            ),
        )

    async def my_reactions(self, channel: str, offset: int, user: str) -> frozenset[str]:
        check_id(channel, "channel")
        check_offset(offset)
        check_id(user, "user")
        return await self._read("my_reactions", lambda c: _my_reactions(c, channel, offset, user))

    async def note_reply(
        self,
        channel: str,
        parent: int,
        *,
        author: str,
        user: str,
        reply_offset: int,
        reply_ms: int,
    ) -> MessageState:
        check_id(channel, "channel")
        check_offset(parent, "parent")
        check_id(author, "author")
        check_id(user, "user")
        check_offset(reply_offset, "reply_offset")
        _millis(reply_ms, "reply_ms")
        return await self._write(
            "note_reply",
            lambda c: _note_reply(
                c,
                channel,
                parent,
                author=author,
                user=user,
                reply_offset=reply_offset,
                reply_ms=reply_ms,
            ),
        )

    # -- lifecycle -----------------------------------------------------------------------

    def statistics(self) -> MessageStateStatistics:
        """A snapshot: read calls, committed write calls, refused calls."""
        return self._statistics(MessageStateStatistics)


@asynccontextmanager
async def open_sqlite_message_state(
    path: str, *, durability: str = "full", fsync_interval: float = 1.0
) -> AsyncIterator[SqliteMessageStateStore]:
    """Open (creating the parent directory and the schema) and close a
    :class:`SqliteMessageStateStore`, running its checkpointer in interval mode."""
    store = SqliteMessageStateStore(path, durability=durability, fsync_interval=fsync_interval)
    async with running(store):
        yield store
