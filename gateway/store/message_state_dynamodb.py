"""DynamoDB message-state store: edits, deletes, reactions and thread summaries.

Two tables, ``<prefix>-message-state`` (one item per changed message, the messages table's
key ``channel`` + ``offset``) and ``<prefix>-reactions`` (one item per user reaction, key
``channel`` + ``rk``), defined in :mod:`gateway.store.tables` and never created here (items
in :mod:`gateway.store._message_state_dynamo_items` and ``docs/data-model.md``). Every call
goes through :mod:`gateway.aws` like the other DynamoDB stores: throttling and transient
failures are retried there with jittered backoff, then raised as
:class:`gateway.aws.AwsUnavailable`, a :class:`gateway.errors.StoreUnavailable`; a
missing table or a closed store is :class:`StoreUnavailable` too. All reads are strongly
consistent.

How it keeps the :class:`gateway.store.message_state.MessageStateStore` guarantees:

* **Atomic per call.** ``edit``, ``delete`` and ``note_reply`` write the state item with
  one conditional ``UpdateItem`` (or ``PutItem`` when it creates it); ``react`` writes the
  reaction item and the state item in one ``TransactWriteItems``. A failed condition writes
  nothing and hands back the stored item (``ALL_OLD``), from which the call tells a retry,
  a refusal or a race apart, and decides again
  (:data:`~gateway.store._message_state_dynamo_table.MAX_DECISIONS` rounds, then
  :class:`StoreUnavailable`).
* **Deletes.** The tombstone is one ``UpdateItem``; the per-user reaction items are then
  swept (``Query`` + ``BatchWriteItem``), also by a repeated delete. A sweep that fails is
  logged (the tombstone stands); :meth:`my_reactions` reads the tombstone with the
  reaction items, so what a sweep left behind is never returned, and ``react`` refuses a
  deleted message in the same transaction, so no reaction item is added after it.
* **Idempotent retries.** Each transaction carries a ``ClientRequestToken`` that the
  bridge's retries reuse; a retried ``UpdateItem`` is recognised by its condition (the
  stored ``op`` of an edit, a tombstone, raised reply counters).

Refusals are :class:`gateway.domain.errors.DomainError`; other refusals by DynamoDB
(validation errors: a bug) raise :class:`gateway.aws.AwsError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager

from gateway.aws import Aws
from gateway.domain.errors import InvalidField
from gateway.store import _message_state_dynamo_ops as ops
from gateway.store._dynamo import CountedStore, check_ready
from gateway.store._message_state_dynamo_table import StateTables
from gateway.store.message_state import (
    MAX_GET_STATES,
    MessageState,
    MessageStateStatistics,
    check_body,
    check_emoji,
    check_id,
    check_offset,
    check_op,
)
from gateway.store.tables import MESSAGE_STATE_TABLES

__all__ = ["DynamoMessageStateStore", "open_dynamodb_message_state"]


def _millis(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidField(f"{field} must be an integer >= 0", field=field)
    return value


class DynamoMessageStateStore(CountedStore[MessageStateStatistics]):
    """A :class:`gateway.store.message_state.MessageStateStore` on the
    ``<prefix>-message-state`` and ``<prefix>-reactions`` tables.

    Any number of handles, on any number of nodes, may share the tables. Make it with
    :func:`open_dynamodb_message_state`, which checks the tables first.
    """

    def __init__(self, aws: Aws, prefix: str) -> None:
        self.aws = aws
        self.prefix = prefix
        self._tables = StateTables(aws, prefix)
        self.table = self._tables.state
        self.reactions_table = self._tables.reactions
        super().__init__(self._tables, MessageStateStatistics())

    @property
    def sweeps_failed(self) -> int:
        """Deletes whose reaction items were not all swept (left to a repeated delete)."""
        return self._tables.sweeps_failed

    async def get_states(self, channel: str, offsets: Sequence[int]) -> dict[int, MessageState]:
        check_id(channel, "channel")
        if isinstance(offsets, (str, bytes)) or len(offsets) > MAX_GET_STATES:
            raise InvalidField(
                f"offsets must be a sequence of at most {MAX_GET_STATES}", field="offsets"
            )
        wanted = sorted({check_offset(o, "offsets") for o in offsets})
        if not wanted:
            return {}
        return await self._run(False, lambda: ops.get_states(self._tables, channel, wanted))

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
        return await self._run(
            True,
            lambda: ops.edit(
                self._tables,
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
        return await self._run(
            True,
            lambda: ops.delete(self._tables, channel, offset, author=author, op=op, now_ms=now_ms),
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
        return await self._run(
            True,
            lambda: ops.react(
                self._tables,
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
        return await self._run(False, lambda: ops.my_reactions(self._tables, channel, offset, user))

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
        return await self._run(
            True,
            lambda: ops.note_reply(
                self._tables,
                channel,
                parent,
                author=author,
                user=user,
                reply_offset=reply_offset,
                reply_ms=reply_ms,
            ),
        )


@asynccontextmanager
async def open_dynamodb_message_state(
    aws: Aws, prefix: str
) -> AsyncIterator[DynamoMessageStateStore]:
    """A :class:`DynamoMessageStateStore` on the message-state tables under ``prefix``,
    after checking them: raises :class:`StoreUnavailable` naming what is missing or wrong
    (deployment creates tables, see :func:`gateway.store.tables.create_tables`)."""
    await check_ready(aws, prefix, MESSAGE_STATE_TABLES, "message-state tables")
    store = DynamoMessageStateStore(aws, prefix)
    async with aclosing(store):
        yield store
