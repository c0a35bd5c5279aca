"""The read-state tables' I/O: consistent reads, conditional writes, transactions.

Requests, their errors, transactions and batches are :class:`gateway.store._dynamo.TableIO`'s
(a missing table or a closed store is :class:`gateway.errors.StoreUnavailable`, naming the
tables; any other refusal by DynamoDB is a bug and stays :class:`gateway.aws.AwsError`).

A failed condition is an answer, not an error: :meth:`ReadTables.update` returns the
stored item it failed on (``ALL_OLD``), :meth:`ReadTables.put` ``False``,
:meth:`ReadTables.transact` a :class:`Cancelled` with each part's item.
:meth:`ReadTables.transact` sends one ``TransactWriteItems`` with a fresh
``ClientRequestToken``, which the bridge's retries reuse, so a transaction that landed
before a lost answer is not applied twice (DynamoDB honours a token for 10 minutes).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import trio

from gateway.aws import Aws
from gateway.errors import StoreUnavailable
from gateway.store._dynamo import Cancelled, TableIO
from gateway.store._read_state_dynamo_items import Item
from gateway.store.tables import NOTIFICATIONS, READ_CURSORS, UNREAD

__all__ = ["MAX_DECISIONS", "PARALLEL", "Cancelled", "Projection", "ReadTables", "parallel"]

MAX_DECISIONS = 8  # transactions of one note_message before giving up (contention)
PARALLEL = 16  # requests one call has in flight at most
_BATCH_GET = 100  # BatchGetItem's limit

_T = TypeVar("_T")

Projection = tuple[str, dict[str, str]]
"""A ``ProjectionExpression`` and its ``ExpressionAttributeNames``."""


async def parallel(calls: Sequence[Callable[[], Awaitable[_T]]], limit: int = PARALLEL) -> list[_T]:
    """``[await c() for c in calls]``, at most ``limit`` at once; the first error is
    raised as is (not in an exception group) and cancels the other calls."""
    if len(calls) <= 1:
        return [await call() for call in calls]
    results: list[Any] = [None] * len(calls)
    errors: list[Exception] = []
    limiter = trio.CapacityLimiter(limit)

    async def run(index: int, call: Callable[[], Awaitable[_T]]) -> None:
        try:
            async with limiter:
                results[index] = await call()
        except Exception as exc:
            errors.append(exc)
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(run, index, call)
    if errors:
        raise errors[0]
    return results


class ReadTables(TableIO):
    """The ``<prefix>-read-cursors``, ``<prefix>-unread`` and ``<prefix>-notifications``
    tables through one :class:`Aws`."""

    def __init__(self, aws: Aws, prefix: str) -> None:
        self.cursors = READ_CURSORS.name(prefix)
        self.unread = UNREAD.name(prefix)
        self.notifications = NOTIFICATIONS.name(prefix)
        super().__init__(aws, "read-state", [self.cursors, self.unread, self.notifications])

    # -- reads -------------------------------------------------------------------------------

    async def get(self, table: str, key: Item, projection: Projection | None = None) -> Item | None:
        params: dict[str, Any] = {}
        if projection is not None:
            params = {
                "ProjectionExpression": projection[0],
                "ExpressionAttributeNames": projection[1],
            }
        return await self.get_item(table, key, **params)

    async def batch_get(
        self, keys: Sequence[tuple[str, Item]], projections: Mapping[str, Projection]
    ) -> list[tuple[str, Item]]:
        """The stored items of ``keys`` (``(table, key)`` pairs, distinct), as ``(table,
        item)``: one ``BatchGetItem`` per 100 keys, in parallel, unprocessed keys asked
        again. ``projections`` has every table's projection."""
        chunks = [keys[i : i + _BATCH_GET] for i in range(0, len(keys), _BATCH_GET)]
        found = await parallel([functools.partial(self._batch_get, c, projections) for c in chunks])
        return [pair for part in found for pair in part]

    async def _batch_get(
        self, keys: Sequence[tuple[str, Item]], projections: Mapping[str, Projection]
    ) -> list[tuple[str, Item]]:
        request: dict[str, Any] = {}
        for table, key in keys:
            if table not in request:
                expression, names = projections[table]
                request[table] = {
                    "Keys": [],
                    "ConsistentRead": True,
                    "ProjectionExpression": expression,
                    "ExpressionAttributeNames": names,
                }
            request[table]["Keys"].append(key)
        return await self.batch_get_items(request)

    async def query(self, params: dict[str, Any]) -> tuple[list[Item], Item | None]:
        """One ``Query`` page (``ConsistentRead``): its items and ``LastEvaluatedKey``."""
        got = await self.call("query", ConsistentRead=True, **params)
        items: list[Item] = got.get("Items", [])
        last: Item | None = got.get("LastEvaluatedKey")
        return items, last

    async def query_all(self, params: dict[str, Any]) -> list[Item]:
        """Every item of a ``Query`` (all its pages, ``ConsistentRead``)."""
        return await self.query_items({**params, "ConsistentRead": True})

    # -- writes ------------------------------------------------------------------------------

    async def update(
        self, table: str, key: Item, params: Item, *, returns: str = "ALL_NEW"
    ) -> tuple[bool, Item | None]:
        """One conditional ``UpdateItem``: ``(True, the new item)`` (``returns``) if it
        was applied, ``(False, the stored item or None)`` if its condition failed."""
        applied, got = await self.write_if(
            "update_item",
            TableName=table,
            Key=key,
            ReturnValues=returns,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
            **params,
        )
        found: Item | None = got.get("Attributes" if applied else "Item")
        return applied, found

    async def put(self, table: str, item: Item, params: Item) -> bool:
        """One conditional ``PutItem``: whether it was applied."""
        applied, _ = await self.write_if("put_item", TableName=table, Item=item, **params)
        return applied

    async def transact(self, parts: Sequence[dict[str, Any]]) -> Cancelled | None:
        """Send ``parts`` as one transaction: None if it was applied, a :class:`Cancelled`
        if conditions failed (nothing was written)."""
        return await self.transact_items(parts)

    def gave_up(self, what: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"dynamodb read-state store {self.unread!r}: {what}: the head kept changing "
            f"({MAX_DECISIONS} tries)"
        )
