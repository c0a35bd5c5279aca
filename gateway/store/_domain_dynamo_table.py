"""The domain table's I/O: consistent reads, keyset queries, transactions, faults.

Requests, their errors, transactions and batches are :class:`gateway.store._dynamo.TableIO`'s
(a missing table or a closed store is :class:`gateway.errors.StoreUnavailable`, naming the
table; any other refusal by DynamoDB is a bug and stays :class:`gateway.aws.AwsError`).

:meth:`DomainTable.transact` sends one ``TransactWriteItems`` with a fresh
``ClientRequestToken``; the bridge sends the same parameters, token included, on each of
its retries, so a transaction that landed before a lost answer is not applied twice
(DynamoDB honours a token for 10 minutes). A transaction cancelled by a failed condition
returns a :class:`Cancelled`; the operation then re-reads and re-decides (a new
transaction, a new token), at most :data:`MAX_DECISIONS` times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gateway.aws import Aws
from gateway.errors import StoreUnavailable
from gateway.store._domain_dynamo_items import Item, Key, Part, key, key_of
from gateway.store._dynamo import Cancelled, TableIO

__all__ = ["MAX_DECISIONS", "Cancelled", "DomainTable", "TransactionHook"]

MAX_DECISIONS = 8  # reads + transaction rounds of one call before giving up (contention)

TransactionHook = Callable[[frozenset[str]], None]
"""Called with the kinds of items a transaction writes, just before it is sent; it may
raise :class:`StoreUnavailable` (tests inject backend failures with it)."""


class DomainTable(TableIO):
    """The ``<prefix>-domain`` table through one :class:`Aws`."""

    def __init__(self, aws: Aws, name: str, *, hook: TransactionHook | None = None) -> None:
        super().__init__(aws, "domain", [name])
        self.name = name
        self.hook = hook

    # -- reads -----------------------------------------------------------------------------

    async def get(self, k: Key) -> Item | None:
        return await self.get_item(self.name, key(k))

    async def batch_get(self, keys: Sequence[Key]) -> dict[Key, Item]:
        """The items stored under ``keys`` (duplicates allowed), by key: one
        ``BatchGetItem`` (at most 100 distinct keys), unprocessed keys asked again."""
        unique = list(dict.fromkeys(keys))
        if len(unique) > 100:
            raise ValueError("BatchGetItem takes at most 100 keys")
        request = {self.name: {"Keys": [key(k) for k in unique], "ConsistentRead": True}}
        found = await self.batch_get_items(request, unprocessed="keys left unprocessed")
        return {key_of(item): item for _, item in found}

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
        items = await self.query_items(params, limit=limit + 1)
        return items[:limit], len(items) > limit

    # -- writes ----------------------------------------------------------------------------

    async def transact(self, parts: Sequence[Part]) -> Cancelled | None:
        """Send ``parts`` as one transaction: None if it was applied, a :class:`Cancelled`
        if conditions failed (nothing was written)."""
        if self.hook is not None:
            self.hook(frozenset(p.kind for p in parts if p.kind is not None))
        return await self.transact_items([p.request for p in parts])

    def gave_up(self, what: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"dynamodb domain store {self.name!r}: {what}: the records kept changing "
            f"({MAX_DECISIONS} tries)"
        )
