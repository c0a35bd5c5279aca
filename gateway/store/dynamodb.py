"""DynamoDB message store: the durable history shared by every gateway node.

Tables (defined in :mod:`gateway.store.tables`, never created here): ``<prefix>-logs``
(channel -> epoch, head), ``<prefix>-messages`` (channel + offset -> record) and
``<prefix>-cmids`` (channel + sender/cmid -> offset). Every call goes through
:mod:`gateway.aws` (trio-native; throttling and transient failures are retried there with
jittered exponential backoff, then raised as :class:`gateway.aws.AwsUnavailable`, a
:class:`gateway.errors.StoreUnavailable`). All reads are strongly consistent.

How it keeps the :class:`gateway.store.base.MessageStore` guarantees:

* ``open_log``: one ``GetItem`` of the log item; a new channel's epoch is created with a
  conditional ``PutItem`` (``attribute_not_exists``), so concurrent callers on any number
  of nodes agree on one epoch. ``head`` is the log item's ``head``, which every write
  raises in the same transaction as its messages, or the highest message above it (one
  ``Query``: a ``write_behind`` that failed before raising the head).
* ``write_behind`` (the Redis bus's write-behind): conditional cmid claims, then
  ``BatchWriteItem`` of the messages, then the heads; idempotent, not atomic, at half
  the write units of ``write`` (:mod:`gateway.store._dynamo_behind`).
* ``write`` of up to :data:`MAX_TRANSACTION_ITEMS` items (two per record, one per channel:
  49 records of one channel) and ~3 MB is **one** ``TransactWriteItems``: atomic. Each
  message ``Put`` is conditional on the item being absent *or identical*, each cmid
  ``Put`` on being absent or pointing at the same offset, and each log ``Update`` on the
  epoch being the records' epoch (a missing log is created with it) and on ``head`` not
  going down. A rewrite of stored records therefore succeeds and changes nothing
  (idempotent per ``(channel, offset)``); a different record at a stored offset, a cmid
  stored at another offset or another epoch cancels the whole transaction and the call
  raises :class:`StoreUnavailable` (refused), storing nothing.
* Larger writes are split into such transactions, in ``(channel, offset)`` order. They
  are **not** atomic as a whole; what they guarantee instead:

  - *refusals are all-or-nothing*: before the first transaction, consistent reads (one
    ``GetItem`` and one range ``Query`` per channel, ``BatchGetItem`` of the cmids) check
    every record; a conflict raises before anything is written. Only a concurrent writer
    of the same offsets (which the bus never runs) can still cause a refusal midway;
  - *a failure midway* (DynamoDB unavailable after the retries) raises
    :class:`StoreUnavailable` with a prefix of the transactions stored: per channel, the
    lowest offsets of the call, contiguous if the call's offsets were; ``head`` covers
    exactly what is stored. Retrying the same call completes it (idempotent), which is
    what the bus's write-behind does.

* ``read``/``read_before``: one ``Query`` on the messages key (pages followed until
  ``limit`` records or the end). ``find_cmid``: one ``GetItem`` on the cmids table, then
  one on the messages table.

A missing table raises :class:`StoreUnavailable` naming it; other refusals by DynamoDB
(validation errors: a bug) raise :class:`gateway.aws.AwsError`.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

import trio

from gateway.aws import Aws, AwsError
from gateway.aws.bridge import THROTTLING, TRANSIENT
from gateway.errors import StoreUnavailable
from gateway.model import Position, Record
from gateway.store import _dynamo_behind
from gateway.store._dynamo import check_ready
from gateway.store.base import StoreStatistics, WriteBehindResult
from gateway.store.tables import (
    BY_SENDER,
    CMIDS,
    LOGS,
    MESSAGE_TABLES,
    MESSAGES,
    channel_sender,
    cmid_item,
    cmid_put,
    item_record,
    log_write,
    message_put,
    sender_cmid,
)

__all__ = ["MAX_TRANSACTION_BYTES", "MAX_TRANSACTION_ITEMS", "DynamoStore", "open_dynamo_store"]

MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit per TransactWriteItems
MAX_TRANSACTION_BYTES = 3_000_000  # estimated request bytes (DynamoDB's limit: 4 MB of items)


class _Refused(Exception):
    """A write conflicts with what is stored; nothing of the call was written."""


class DynamoStore:
    """A :class:`gateway.store.base.MessageStore` on DynamoDB (see the module docstring).

    Any number of handles, on any number of nodes, may share the tables; as with every
    store, only one bus should assign offsets for a channel. Make it with
    :func:`open_dynamo_store`, which checks the tables first.
    """

    def __init__(self, aws: Aws, prefix: str, *, max_items: int = MAX_TRANSACTION_ITEMS) -> None:
        if not 3 <= max_items <= MAX_TRANSACTION_ITEMS:
            raise ValueError(f"max_items must be 3..{MAX_TRANSACTION_ITEMS}")
        self.aws = aws
        self.prefix = prefix
        self.max_items = max_items
        self.logs, self.messages, self.cmids = (t.name(prefix) for t in (LOGS, MESSAGES, CMIDS))
        self.heads: dict[str, tuple[str, int]] = {}  # channel -> (epoch, head) last seen
        self._closed = False
        self.stats = StoreStatistics()
        self.transactions = 0  # TransactWriteItems calls that succeeded
        self.batch_writes = 0  # BatchWriteItem calls that answered (write_behind)
        self.unprocessed = 0  # items BatchWriteItem answered as unprocessed (sent again)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        if self._closed:
            raise StoreUnavailable(f"dynamodb store {self.prefix!r} is closed")
        try:
            return await self.aws.dynamodb(operation, **params)
        except AwsError as exc:
            if exc.aws_code == "ResourceNotFoundException":
                raise StoreUnavailable(
                    f"dynamodb store {self.prefix!r}: {operation}: a table is missing "
                    f"({self.logs}, {self.messages}, {self.cmids}): {exc.message}"
                ) from exc
            raise

    # -- logs --------------------------------------------------------------------------

    async def get_log(self, channel: str) -> tuple[str, int] | None:
        got = await self.call(
            "get_item", TableName=self.logs, Key={"channel": {"S": channel}}, ConsistentRead=True
        )
        item = got.get("Item")
        if item is None:
            return None
        return item["epoch"]["S"], int(item.get("head", {"N": "0"})["N"])

    async def open_log(self, channel: str) -> Position:
        """Epoch and highest stored offset (0 if none); creates the epoch if needed.

        The offset is the log item's head, or the highest message item's offset if that is
        higher (a write-behind that stored messages but failed before raising the head):
        a bus restarting the channel from here never hands out a stored offset again."""
        log = await self.get_log(channel)
        if log is None:
            log = await self.create_log(channel, secrets.token_hex(8))
        top = await self._query(channel, "#o > :a", {":a": log[1]}, limit=1, forward=False)
        if top:
            log = (log[0], top[0].offset)
        self.heads[channel] = log
        return Position(epoch=log[0], offset=log[1])

    async def create_log(self, channel: str, epoch: str) -> tuple[str, int]:
        """Create ``channel``'s log item in ``epoch`` unless one exists; (epoch, head) of
        the one that is there now."""
        item = {
            "channel": {"S": channel},
            "epoch": {"S": epoch},
            "head": {"N": "0"},
            "created_ms": {"N": str(time.time_ns() // 1_000_000)},
        }
        try:
            await self.call(
                "put_item",
                TableName=self.logs,
                Item=item,
                ConditionExpression="attribute_not_exists(#c)",
                ExpressionAttributeNames={"#c": "channel"},
            )
            return epoch, 0
        except AwsError as exc:
            if exc.aws_code != "ConditionalCheckFailedException":
                raise
            log = await self.get_log(channel)  # another caller created it first
            if log is None:
                raise StoreUnavailable(f"log {channel!r} vanished while opened") from exc
            return log

    # -- write -------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> None:
        """Store ``records``: atomically up to one transaction's worth, else in order with
        all-or-nothing refusals (see the module docstring)."""
        if not records:
            return
        try:
            unique = _dedupe(records)
            chunks = self._chunks(unique)
            if len(chunks) > 1:
                await self._precheck(unique)
            for chunk in chunks:
                await self._write_chunk(chunk)
        except _Refused as exc:
            raise StoreUnavailable(f"dynamodb store {self.prefix!r}: write refused: {exc}") from exc
        self.stats.writes += len(records)
        self.stats.batches += 1

    async def write_behind(self, records: Sequence[Record]) -> WriteBehindResult:
        """Copy a bus's log: cmid claims, then ``BatchWriteItem`` s, then heads (see
        :mod:`gateway.store._dynamo_behind`); not atomic, idempotent."""
        return await _dynamo_behind.write_behind(self, records)

    def _chunks(self, records: list[Record]) -> list[list[Record]]:
        chunks: list[list[Record]] = []
        chunk: list[Record] = []
        items = size = 0
        for r in records:
            new_channel = not chunk or chunk[-1].channel != r.channel
            cost = 2 + new_channel
            text = len(r.body.encode()) + len(r.sender) + len(r.cmid) + len(r.channel)
            weight = 2 * text + 400  # the item, and its values again in the condition
            if chunk and (items + cost > self.max_items or size + weight > MAX_TRANSACTION_BYTES):
                chunks.append(chunk)
                chunk, items, size, cost = [], 0, 0, 3
            chunk.append(r)
            items += cost
            size += weight
        chunks.append(chunk)
        return chunks

    async def _write_chunk(self, chunk: list[Record]) -> None:
        channels: dict[str, tuple[str, int]] = {}  # channel -> (epoch, highest offset)
        for r in chunk:
            channels[r.channel] = (r.epoch, max(r.offset, channels.get(r.channel, ("", 0))[1]))
        plain: set[str] = set()  # channels whose log needs no head update, only a check
        for _ in range(3):
            for channel, (epoch, top) in channels.items():
                known = self.heads.get(channel)
                if known is not None and known[0] == epoch and known[1] >= top:
                    plain.add(channel)
            items = [log_write(self.logs, c, e, h, c in plain) for c, (e, h) in channels.items()]
            for r in chunk:
                items.append(message_put(self.messages, r))
                items.append(cmid_put(self.cmids, r))
            try:
                await self.call(
                    "transact_write_items",
                    TransactItems=items,
                    ClientRequestToken=uuid.uuid4().hex,
                )
            except AwsError as exc:
                if exc.aws_code != "TransactionCanceledException":
                    raise
                retry = self._cancelled(exc, list(channels), chunk, plain)
                if not retry:
                    raise
                continue
            self.transactions += 1
            for channel, (epoch, top) in channels.items():
                known = self.heads.get(channel)
                if known is None or known[0] != epoch or known[1] < top:
                    self.heads[channel] = (epoch, top)
            return
        raise StoreUnavailable(f"dynamodb store {self.prefix!r}: log items keep changing")

    def _cancelled(
        self, exc: AwsError, channels: list[str], chunk: list[Record], plain: set[str]
    ) -> bool:
        """Explain a cancelled transaction: raise :class:`_Refused` for a conflict, return
        True if only a log's head was higher or lower than we thought (send it again)."""
        reasons = exc.response.get("CancellationReasons", [])
        again = False
        for i, reason in enumerate(reasons):
            if reason.get("Code") != "ConditionalCheckFailed":
                continue
            old = reason.get("Item")
            if i < len(channels):
                channel = channels[i]
                epoch = chunk[[r.channel for r in chunk].index(channel)].epoch
                if old is None:  # the log item is gone: create it again, with a head
                    self.heads.pop(channel, None)
                    plain.discard(channel)
                elif (stored := old["epoch"]["S"]) != epoch:
                    raise _Refused(f"channel {channel!r} is in epoch {stored}, not {epoch}")
                else:  # head is above this chunk's offsets: check the epoch only
                    self.heads[channel] = (epoch, int(old.get("head", {"N": "0"})["N"]))
                    plain.add(channel)
                again = True
                continue
            r = chunk[(i - len(channels)) // 2]
            if (i - len(channels)) % 2 == 0:
                raise _Refused(f"channel {r.channel!r} offset {r.offset} holds another record")
            raise _Refused(
                f"channel {r.channel!r}: sender {r.sender!r} cmid {r.cmid!r} is stored at "
                f"another offset than {r.offset}"
            )
        other = {str(r.get("Code")) for r in reasons} - {"None", "ConditionalCheckFailed"}
        return again and other <= THROTTLING | TRANSIENT  # conflicts: retried by the bridge

    async def _precheck(self, records: list[Record]) -> None:
        """Consistent reads: refuse before writing anything if any record conflicts."""
        by_channel: dict[str, list[Record]] = {}
        for r in records:
            by_channel.setdefault(r.channel, []).append(r)
        for channel, recs in by_channel.items():
            log = await self.get_log(channel)
            if log is not None and log[0] != recs[0].epoch:
                raise _Refused(f"channel {channel!r} is in epoch {log[0]}, not {recs[0].epoch}")
            ours = {r.offset: r for r in recs}
            stored = await self._query(
                channel, "#o BETWEEN :lo AND :hi", {":lo": recs[0].offset, ":hi": recs[-1].offset}
            )
            for s in stored:
                if s.offset in ours and ours[s.offset] != s:
                    raise _Refused(f"channel {channel!r} offset {s.offset} holds another record")
        for i in range(0, len(records), 100):
            keys = {(r.channel, sender_cmid(r.sender, r.cmid)): r for r in records[i : i + 100]}
            for item in await self._batch_get(self.cmids, [cmid_item(r) for r in keys.values()]):
                r = keys[(item["channel"]["S"], item["sc"]["S"])]
                if int(item["offset"]["N"]) != r.offset:
                    raise _Refused(
                        f"channel {r.channel!r}: sender {r.sender!r} cmid {r.cmid!r} is "
                        f"stored at another offset than {r.offset}"
                    )

    async def _batch_get(self, table: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = [{"channel": i["channel"], "sc": i["sc"]} for i in items]
        request: dict[str, Any] = {table: {"Keys": keys, "ConsistentRead": True}}
        found: list[dict[str, Any]] = []
        for attempt in range(self.aws.retry.attempts):
            if attempt:
                await trio.sleep(self.aws.retry.backoff(attempt - 1))
            got = await self.call("batch_get_item", RequestItems=request)
            found += got.get("Responses", {}).get(table, [])
            request = got.get("UnprocessedKeys") or {}
            if not request:
                return found
        raise StoreUnavailable(f"dynamodb store {self.prefix!r}: keys left unprocessed")

    # -- reads -------------------------------------------------------------------------

    async def _query(
        self,
        channel: str,
        condition: str,
        values: dict[str, int],
        *,
        limit: int | None = None,
        forward: bool = True,
    ) -> list[Record]:
        params: dict[str, Any] = {
            "TableName": self.messages,
            "KeyConditionExpression": f"#c = :c AND {condition}",
            "ExpressionAttributeNames": {"#c": "channel", "#o": "offset"},
            "ExpressionAttributeValues": {":c": {"S": channel}}
            | {k: {"N": str(v)} for k, v in values.items()},
            "ConsistentRead": True,
            "ScanIndexForward": forward,
        }
        records: list[Record] = []
        while True:
            if limit is not None:
                params["Limit"] = limit - len(records)
            page = await self.call("query", **params)
            records += [item_record(item) for item in page.get("Items", [])]
            last = page.get("LastEvaluatedKey")
            if not last or (limit is not None and len(records) >= limit):
                return records
            params["ExclusiveStartKey"] = last

    async def read(self, channel: str, after: int, limit: int) -> Sequence[Record]:
        """Records with ``offset > after``, ascending, at most ``limit``."""
        if limit <= 0:
            return []
        records = await self._query(channel, "#o > :a", {":a": after}, limit=limit)
        self.stats.reads += 1
        return records

    async def read_before(self, channel: str, before: int, limit: int) -> Sequence[Record]:
        """The ``limit`` records just below ``before`` (newest page), ascending."""
        if limit <= 0:
            return []
        records = await self._query(channel, "#o < :b", {":b": before}, limit=limit, forward=False)
        self.stats.reads += 1
        return records[::-1]

    async def find_cmid(self, channel: str, sender: str, cmid: str) -> Record | None:
        """The record ``sender`` sent with client message id ``cmid``, if stored."""
        key = {"channel": {"S": channel}, "sc": {"S": sender_cmid(sender, cmid)}}
        got = await self.call("get_item", TableName=self.cmids, Key=key, ConsistentRead=True)
        self.stats.reads += 1
        if "Item" not in got:
            return None
        offset = got["Item"]["offset"]
        key = {"channel": {"S": channel}, "offset": offset}
        got = await self.call("get_item", TableName=self.messages, Key=key, ConsistentRead=True)
        if "Item" not in got:
            return None
        record = item_record(got["Item"])
        return record if (record.sender, record.cmid) == (sender, cmid) else None

    async def read_by_sender(
        self, channel: str, sender: str, before: int, limit: int
    ) -> Sequence[Record]:
        """``sender``'s messages below ``before``, newest first: one ``Query`` on the
        sparse GSI ``by_sender`` (eventually consistent: a just-written message may be
        missing for a moment)."""
        if limit <= 0:
            return []
        params: dict[str, Any] = {
            "TableName": self.messages,
            "IndexName": BY_SENDER,
            "KeyConditionExpression": "#cs = :cs AND #o < :b",
            "ExpressionAttributeNames": {"#cs": "cs", "#o": "offset"},
            "ExpressionAttributeValues": {
                ":cs": {"S": channel_sender(channel, sender)},
                ":b": {"N": str(before)},
            },
            "ScanIndexForward": False,
            "Limit": limit,
        }
        page = await self.call("query", **params)
        self.stats.reads += 1
        return [item_record(item) for item in page.get("Items", [])][:limit]

    def statistics(self) -> StoreStatistics:
        """A snapshot: records written, write calls, read calls."""
        s = self.stats
        return StoreStatistics(writes=s.writes, batches=s.batches, reads=s.reads)

    async def aclose(self) -> None:
        """Later calls raise :class:`StoreUnavailable`; the :class:`Aws` stays open."""
        self._closed = True


def _dedupe(records: Sequence[Record]) -> list[Record]:
    """Sorted by (channel, offset), duplicates dropped; refuses records that contradict each
    other (two records at one offset, one cmid at two offsets, two epochs in a channel)."""
    at: dict[tuple[str, int], Record] = {}
    cmids: dict[tuple[str, str, str], int] = {}
    epochs: dict[str, str] = {}
    for r in records:
        if at.setdefault((r.channel, r.offset), r) != r:
            raise _Refused(f"two records for channel {r.channel!r} offset {r.offset}")
        if cmids.setdefault((r.channel, r.sender, r.cmid), r.offset) != r.offset:
            raise _Refused(f"channel {r.channel!r}: cmid {r.cmid!r} at two offsets")
        if epochs.setdefault(r.channel, r.epoch) != r.epoch:
            raise _Refused(f"records of channel {r.channel!r} carry two epochs")
    return [at[k] for k in sorted(at)]


@asynccontextmanager
async def open_dynamo_store(aws: Aws, prefix: str) -> AsyncIterator[DynamoStore]:
    """A :class:`DynamoStore` on the tables under ``prefix``, after checking they exist:
    raises :class:`StoreUnavailable` naming what is missing (deployment creates tables,
    see :func:`gateway.store.tables.create_tables`)."""
    await check_ready(aws, prefix, MESSAGE_TABLES, "tables")
    store = DynamoStore(aws, prefix)
    async with aclosing(store):
        yield store
