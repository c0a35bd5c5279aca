"""The domain table's I/O: consistent reads, keyset queries, transactions, faults.

Every request goes through :class:`gateway.aws.Aws` (throttling, transaction conflicts
and transient failures are retried there, then raised as
:class:`gateway.aws.AwsUnavailable`, a :class:`gateway.errors.StoreUnavailable`). Here a
missing table (or a closed bridge) becomes :class:`StoreUnavailable` too, naming the
table; any other refusal by DynamoDB is a bug and stays :class:`gateway.aws.AwsError`.

:meth:`DomainTable.transact` sends one ``TransactWriteItems`` with a fresh
``ClientRequestToken``; the bridge sends the same parameters, token included, on each of
its retries, so a transaction that landed before a lost answer is not applied twice
(DynamoDB honours a token for 10 minutes). A transaction cancelled by a failed condition
returns a :class:`Cancelled`; the operation then re-reads and re-decides (a new
transaction, a new token), at most :data:`MAX_DECISIONS` times.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import trio

from gateway.aws import Aws, AwsError
from gateway.errors import StoreUnavailable
from gateway.store._domain_dynamo_items import Item, Key, Part, key, key_of

__all__ = ["MAX_DECISIONS", "Cancelled", "DomainTable", "TransactionHook"]

MAX_DECISIONS = 8  # reads + transaction rounds of one call before giving up (contention)

TransactionHook = Callable[[frozenset[str]], None]
"""Called with the kinds of items a transaction writes, just before it is sent; it may
raise :class:`StoreUnavailable` (tests inject backend failures with it)."""


class Cancelled:
    """A transaction cancelled because conditions failed: which parts, and their items."""

    def __init__(self, reasons: Sequence[dict[str, Any]]) -> None:
        self.reasons = list(reasons)

    def failed(self, index: int) -> bool:
        """Whether the condition of part ``index`` failed."""
        return (
            index < len(self.reasons)
            and self.reasons[index].get("Code") == "ConditionalCheckFailed"
        )

    def item(self, index: int) -> Item | None:
        """The stored item of a failed part (``ReturnValuesOnConditionCheckFailure``)."""
        if not self.failed(index):
            return None
        found: Item | None = self.reasons[index].get("Item")
        return found


class DomainTable:
    """The ``<prefix>-domain`` table through one :class:`Aws`."""

    def __init__(self, aws: Aws, name: str, *, hook: TransactionHook | None = None) -> None:
        self.aws = aws
        self.name = name
        self.hook = hook
        self.closed = False
        self.transactions = 0  # TransactWriteItems that succeeded

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        if self.closed:
            raise StoreUnavailable(f"dynamodb domain store {self.name!r} is closed")
        try:
            return await self.aws.dynamodb(operation, **params)
        except AwsError as exc:
            if exc.aws_code == "ResourceNotFoundException":
                raise StoreUnavailable(
                    f"dynamodb domain store: {operation}: table {self.name} is missing: "
                    f"{exc.message}"
                ) from exc
            if exc.aws_code == "Closed":
                raise StoreUnavailable(f"dynamodb domain store {self.name!r}: {exc}") from exc
            raise

    # -- reads -----------------------------------------------------------------------------

    async def get(self, k: Key) -> Item | None:
        got = await self.call("get_item", TableName=self.name, Key=key(k), ConsistentRead=True)
        item: Item | None = got.get("Item")
        return item

    async def batch_get(self, keys: Sequence[Key]) -> dict[Key, Item]:
        """The items stored under ``keys`` (duplicates allowed), by key: one
        ``BatchGetItem`` (at most 100 distinct keys), unprocessed keys asked again."""
        unique = list(dict.fromkeys(keys))
        if len(unique) > 100:
            raise ValueError("BatchGetItem takes at most 100 keys")
        request: dict[str, Any] = {
            self.name: {"Keys": [key(k) for k in unique], "ConsistentRead": True}
        }
        found: dict[Key, Item] = {}
        retry = self.aws.retry
        for attempt in range(max(1, retry.attempts)):
            if attempt:
                await trio.sleep(retry.backoff(attempt - 1))
            got = await self.call("batch_get_item", RequestItems=request)
            for item in got.get("Responses", {}).get(self.name, []):
                found[key_of(item)] = item
            request = got.get("UnprocessedKeys") or {}
            if not request:
                return found
        raise StoreUnavailable(f"dynamodb domain store {self.name!r}: keys left unprocessed")

    async def query(
        self, pk: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Item], bool]:
        """Up to ``limit`` items of partition ``pk`` whose ``sk`` starts with ``prefix``, in
        ``sk`` order, after ``sk = prefix + after`` if given; and whether more follow
        (it asks for ``limit + 1``, like the SQLite adapter)."""
        params: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":prefix": {"S": prefix}},
            "ConsistentRead": True,
        }
        if after is not None:
            params["ExclusiveStartKey"] = key((pk, prefix + after))
        items: list[Item] = []
        while len(items) <= limit:
            got = await self.call("query", Limit=limit + 1 - len(items), **params)
            items += got.get("Items", [])
            last = got.get("LastEvaluatedKey")
            if last is None:  # the end of the range (or a 1 MB page: asked again below)
                break
            params["ExclusiveStartKey"] = last
        return items[:limit], len(items) > limit

    # -- writes ----------------------------------------------------------------------------

    async def transact(self, parts: Sequence[Part]) -> Cancelled | None:
        """Send ``parts`` as one transaction: None if it was applied, a :class:`Cancelled`
        if conditions failed (nothing was written)."""
        if self.hook is not None:
            self.hook(frozenset(p.kind for p in parts if p.kind is not None))
        try:
            await self.call(
                "transact_write_items",
                TransactItems=[p.request for p in parts],
                ClientRequestToken=uuid.uuid4().hex,
            )
        except AwsError as exc:
            if exc.aws_code != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons", [])
            if not any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
                raise  # a validation error: a bug (conflicts are retried by the bridge)
            return Cancelled(reasons)
        self.transactions += 1
        return None

    def gave_up(self, what: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"dynamodb domain store {self.name!r}: {what}: the records kept changing "
            f"({MAX_DECISIONS} tries)"
        )
