"""DynamoDB write-behind: how :meth:`DynamoStore.write_behind` copies a bus's log.

The Redis bus acknowledges a message once it is in the channel's stream; this is the later
copy to DynamoDB, shaped for cost and for partial failures rather than for atomicity:

1. **Epochs**, per channel: the log item's epoch must be the records' (a missing log item
   is created with it, conditionally). A channel in another epoch is refused, the others
   go on. Known epochs are cached, so a busy channel pays nothing here.
2. **cmid claims**: one conditional ``Put`` per record on the cmids table (absent, or
   naming the same offset), up to :data:`CLAIMS_PER_TRANSACTION` per
   ``TransactWriteItems``. A claim that fails its condition means the sender's cmid is
   stored at another offset: that record is a late duplicate (a retry the bus's
   idempotency window no longer knew) and is left out; the others are sent again without
   it. So a client message id never makes two items.
3. **Messages**: ``BatchWriteItem`` of :data:`BATCH_ITEMS` puts (1 write unit per KB,
   half a transaction's price), :data:`CONCURRENCY` requests in flight. Throttled requests
   are retried by :mod:`gateway.aws` with jittered backoff; ``UnprocessedItems`` are sent
   again after the same backoff, until a request makes no progress
   ``RetryPolicy.attempts`` times in a row, which raises
   :class:`gateway.errors.StoreUnavailable` (the bus retries the whole call later;
   every put is idempotent: same key, same item).
4. **Heads**: per channel, the log item's ``head`` is raised to the call's highest offset
   (conditional: same epoch, never down), only after every message is stored.

A failure at any step leaves what was done in place and raises; the retry redoes it
without harm (claims name the same offsets, puts write the same items, heads only rise).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from gateway.aws import AwsError
from gateway.errors import StoreUnavailable
from gateway.model import Record
from gateway.store._dynamo import Cancelled
from gateway.store.base import WriteBehindResult
from gateway.store.tables import cmid_put, log_write, message_item

if TYPE_CHECKING:
    from gateway.store.dynamodb import DynamoStore

__all__ = ["BATCH_ITEMS", "CLAIMS_PER_TRANSACTION", "CONCURRENCY", "write_behind"]

BATCH_ITEMS = 25  # DynamoDB's limit per BatchWriteItem
BATCH_BYTES = 12_000_000  # estimated request bytes per BatchWriteItem (limit: 16 MB)
CLAIMS_PER_TRANSACTION = 100  # DynamoDB's limit per TransactWriteItems
CONCURRENCY = 4  # BatchWriteItem requests in flight per call


async def write_behind(store: DynamoStore, records: Sequence[Record]) -> WriteBehindResult:
    """See the module docstring and :meth:`gateway.store.base.MessageStore.write_behind`."""
    result = WriteBehindResult()
    channels, early = _group(records, result)
    for channel in list(channels):
        why = await _check_epoch(store, channel, channels[channel][0].epoch)
        if why is not None:
            result.refused[channel] = why
            del channels[channel]
    todo = [r for recs in channels.values() for r in recs if (r.channel, r.offset) not in early]
    late = await _claim_cmids(store, todo)
    result.duplicates += [r for r in todo if (r.channel, r.offset) in late]
    keep = [r for r in todo if (r.channel, r.offset) not in late]
    await _put_messages(store, keep)
    for channel, recs in channels.items():
        await _raise_head(store, channel, recs[0].epoch, recs[-1].offset)
    store.stats.writes += len(keep)
    store.stats.batches += 1
    return result


def _group(
    records: Sequence[Record], result: WriteBehindResult
) -> tuple[dict[str, list[Record]], set[tuple[str, int]]]:
    """Per channel, unique records in offset order. Two different records at one offset or
    two epochs refuse the channel; a cmid seen at a lower offset of the call makes the
    later record a duplicate (returned as the set of its ``(channel, offset)``)."""
    at: dict[tuple[str, int], Record] = {}
    bad: dict[str, str] = {}
    epochs: dict[str, str] = {}
    for r in records:
        if at.setdefault((r.channel, r.offset), r) != r:
            bad[r.channel] = f"two records for channel {r.channel!r} offset {r.offset}"
        if epochs.setdefault(r.channel, r.epoch) != r.epoch:
            bad[r.channel] = f"records of channel {r.channel!r} carry two epochs"
    channels: dict[str, list[Record]] = {}
    first: dict[tuple[str, str, str], int] = {}
    early: set[tuple[str, int]] = set()
    for key in sorted(at):
        r = at[key]
        if r.channel in bad:
            continue
        channels.setdefault(r.channel, []).append(r)
        if first.setdefault((r.channel, r.sender, r.cmid), r.offset) != r.offset:
            early.add(key)
            result.duplicates.append(r)
    result.refused.update(bad)
    return channels, early


async def _check_epoch(store: DynamoStore, channel: str, epoch: str) -> str | None:
    """None if ``channel``'s log is in ``epoch`` (created if missing), else why not."""
    known = store.heads.get(channel)
    if known is not None and known[0] == epoch:
        return None
    log = await store.get_log(channel)
    if log is None:
        log = await store.create_log(channel, epoch)
    if log[0] != epoch:
        return f"channel {channel!r} is in epoch {log[0]}, not {epoch}"
    store.heads[channel] = log
    return None


async def _claim_cmids(store: DynamoStore, records: list[Record]) -> set[tuple[str, int]]:
    """Claim each record's cmid for its offset; the ``(channel, offset)`` of the records
    whose cmid is stored at another offset (late duplicates)."""
    late: set[tuple[str, int]] = set()
    for i in range(0, len(records), CLAIMS_PER_TRANSACTION):
        pending = records[i : i + CLAIMS_PER_TRANSACTION]
        while pending:
            try:
                await store.call(
                    "transact_write_items",
                    TransactItems=[cmid_put(store.cmids, r) for r in pending],
                    ClientRequestToken=uuid.uuid4().hex,
                )
            except AwsError as exc:
                if exc.aws_code != "TransactionCanceledException":
                    raise
                cancelled = Cancelled(exc.response.get("CancellationReasons", []))
                failed = {n for n in range(len(pending)) if cancelled.failed(n)}
                if not failed:
                    raise StoreUnavailable(f"cmid claims cancelled: {exc.message}") from exc
                late |= {(pending[n].channel, pending[n].offset) for n in failed}
                pending = [r for n, r in enumerate(pending) if n not in failed]
                continue
            store.transactions += 1
            break
    return late


def _batches(records: list[Record]) -> list[list[dict[str, Any]]]:
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    size = 0
    for r in records:
        weight = 2 * (len(r.body.encode()) + len(r.sender) + len(r.cmid) + len(r.channel)) + 400
        if batch and (len(batch) == BATCH_ITEMS or size + weight > BATCH_BYTES):
            batches.append(batch)
            batch, size = [], 0
        batch.append({"PutRequest": {"Item": message_item(r)}})
        size += weight
    if batch:
        batches.append(batch)
    return batches


async def _put_messages(store: DynamoStore, records: list[Record]) -> None:
    """Every record's message item, :data:`CONCURRENCY` ``BatchWriteItem`` s at a time."""
    errors: list[BaseException] = []
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def send(puts: list[dict[str, Any]], cancel: trio.CancelScope) -> None:
        async with limiter:
            try:
                await _batch_write(store, puts)
            except (StoreUnavailable, AwsError) as exc:
                errors.append(exc)
                cancel.cancel()

    async with trio.open_nursery() as nursery:
        for puts in _batches(records):
            nursery.start_soon(send, puts, nursery.cancel_scope)
    if errors:
        raise errors[0]


async def _batch_write(store: DynamoStore, puts: list[dict[str, Any]]) -> None:
    """One ``BatchWriteItem``, and its unprocessed items again until none are left."""
    request: dict[str, list[dict[str, Any]]] = {store.messages: puts}
    stalled = 0
    while True:
        got = await store.call("batch_write_item", RequestItems=request)
        store.batch_writes += 1
        left: dict[str, list[dict[str, Any]]] = got.get("UnprocessedItems") or {}
        if not left:
            return
        n_left = sum(map(len, left.values()))
        store.unprocessed += n_left
        stalled = stalled + 1 if n_left == sum(map(len, request.values())) else 0
        if stalled >= store.aws.retry.attempts:
            raise StoreUnavailable(
                f"dynamodb store {store.prefix!r}: {n_left} items stayed unprocessed "
                f"after {stalled} tries"
            )
        await trio.sleep(store.aws.retry.backoff(max(stalled - 1, 0)))
        request = left


async def _raise_head(store: DynamoStore, channel: str, epoch: str, top: int) -> None:
    """Raise the log item's head to ``top`` (same epoch, never down)."""
    known = store.heads.get(channel)
    if known is not None and known[0] == epoch and known[1] >= top:
        return
    try:
        update = log_write(store.logs, channel, epoch, top, False)["Update"]
        await store.call("update_item", **update)
    except AwsError as exc:
        if exc.aws_code != "ConditionalCheckFailedException":
            raise
        log = await store.get_log(channel)  # higher already, or the epoch moved on meanwhile
        if log is not None:
            store.heads[channel] = log
        return
    store.heads[channel] = (epoch, top)  # the condition held: head was at most top
