"""The message-state tables' I/O: consistent reads, conditional writes, transactions.

Every request goes through :class:`gateway.aws.Aws` (throttling, transaction conflicts
and transient failures are retried there, then raised as
:class:`gateway.aws.AwsUnavailable`, a :class:`gateway.errors.StoreUnavailable`). Here a
missing table (or a closed bridge or store) becomes :class:`StoreUnavailable` too, naming
the table; any other refusal by DynamoDB is a bug and stays :class:`gateway.aws.AwsError`.

A failed condition is an answer, not an error: :meth:`StateTables.update` and
:meth:`StateTables.put_state` return the stored item it failed on
(``ReturnValuesOnConditionCheckFailure=ALL_OLD``), :meth:`StateTables.transact` a
:class:`Cancelled` with each part's. :meth:`StateTables.transact` sends one
``TransactWriteItems`` with a fresh ``ClientRequestToken``, which the bridge's retries
reuse, so a transaction that landed before a lost answer is not applied twice (DynamoDB
honours a token for 10 minutes). The operations re-decide after a failed condition, at
most :data:`MAX_DECISIONS` times.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import trio

from gateway.aws import Aws, AwsError
from gateway.errors import StoreUnavailable
from gateway.store._message_state_dynamo_items import Item, expressions, state_key
from gateway.store.tables import MESSAGE_STATE, REACTIONS

__all__ = ["MAX_DECISIONS", "Cancelled", "StateTables"]

MAX_DECISIONS = 8  # conditional writes of one call before giving up (contention)
_BATCH_WRITE = 25  # BatchWriteItem's limit


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
        """The stored item of a failed part (None: it failed on an absent item, or did
        not fail)."""
        if not self.failed(index):
            return None
        found: Item | None = self.reasons[index].get("Item")
        return found


class StateTables:
    """The ``<prefix>-message-state`` and ``<prefix>-reactions`` tables through one
    :class:`Aws`."""

    def __init__(self, aws: Aws, prefix: str) -> None:
        self.aws = aws
        self.state = MESSAGE_STATE.name(prefix)
        self.reactions = REACTIONS.name(prefix)
        self.closed = False
        self.transactions = 0  # TransactWriteItems that succeeded
        self.sweeps_failed = 0  # deletes whose reaction items were not all swept

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        if self.closed:
            raise StoreUnavailable(f"dynamodb message-state store {self.state!r} is closed")
        try:
            return await self.aws.dynamodb(operation, **params)
        except AwsError as exc:
            if exc.aws_code == "ResourceNotFoundException":
                raise StoreUnavailable(
                    f"dynamodb message-state store: {operation}: table {self.state} or "
                    f"{self.reactions} is missing: {exc.message}"
                ) from exc
            if exc.aws_code == "Closed":
                raise StoreUnavailable(
                    f"dynamodb message-state store {self.state!r}: {exc}"
                ) from exc
            raise

    # -- the state table -------------------------------------------------------------------

    async def get_state(self, channel: str, offset: int, *, only: str | None = None) -> Item | None:
        """The state item (``only``: just that attribute, by placeholder, e.g. ``"#d"``)."""
        params: dict[str, Any] = {}
        if only is not None:
            params = expressions({}, ProjectionExpression=only)
        got = await self.call(
            "get_item",
            TableName=self.state,
            Key=state_key(channel, offset),
            ConsistentRead=True,
            **params,
        )
        item: Item | None = got.get("Item")
        return item

    async def get_states(self, channel: str, offsets: Sequence[int]) -> list[Item]:
        """The state items of ``offsets`` (distinct, at most 100) that exist: one
        ``BatchGetItem``, unprocessed keys asked again."""
        request: dict[str, Any] = {
            self.state: {
                "Keys": [state_key(channel, o) for o in offsets],
                "ConsistentRead": True,
            }
        }
        found: list[Item] = []
        retry = self.aws.retry
        for attempt in range(max(1, retry.attempts)):
            if attempt:
                await trio.sleep(retry.backoff(attempt - 1))
            got = await self.call("batch_get_item", RequestItems=request)
            found += got.get("Responses", {}).get(self.state, [])
            request = got.get("UnprocessedKeys") or {}
            if not request:
                return found
        raise StoreUnavailable(f"dynamodb message-state store {self.state!r}: keys unprocessed")

    async def update(self, channel: str, offset: int, params: Item) -> tuple[bool, Item | None]:
        """One conditional ``UpdateItem`` of the state item: ``(True, new item)`` if it was
        applied, ``(False, stored item or None)`` if its condition failed."""
        try:
            got = await self.call(
                "update_item",
                TableName=self.state,
                Key=state_key(channel, offset),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **params,
            )
        except AwsError as exc:
            if exc.aws_code != "ConditionalCheckFailedException":
                raise
            old: Item | None = exc.response.get("Item")
            return False, old
        new: Item = got["Attributes"]
        return True, new

    async def put_state(self, item: Item) -> tuple[bool, Item | None]:
        """Create the state item if it is absent: ``(True, item)``, else ``(False, the
        stored item)``."""
        try:
            await self.call(
                "put_item",
                TableName=self.state,
                Item=item,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **expressions({}, ConditionExpression="attribute_not_exists(#c)"),
            )
        except AwsError as exc:
            if exc.aws_code != "ConditionalCheckFailedException":
                raise
            old: Item | None = exc.response.get("Item")
            return False, old
        return True, item

    # -- transactions ----------------------------------------------------------------------

    async def transact(self, parts: Sequence[dict[str, Any]]) -> Cancelled | None:
        """Send ``parts`` as one transaction: None if it was applied, a :class:`Cancelled`
        if conditions failed (nothing was written)."""
        try:
            await self.call(
                "transact_write_items",
                TransactItems=list(parts),
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

    # -- the reactions table ---------------------------------------------------------------

    async def reaction_keys(self, channel: str, prefix: str) -> list[str]:
        """The ``rk`` of every reaction item of ``channel`` starting with ``prefix``."""
        params = {
            "TableName": self.reactions,
            "ConsistentRead": True,
            **expressions(
                {":c": {"S": channel}, ":p": {"S": prefix}},
                KeyConditionExpression="#c = :c AND begins_with(#rk, :p)",
                ProjectionExpression="#rk",
            ),
        }
        keys: list[str] = []
        while True:
            got = await self.call("query", **params)
            keys += [item["rk"]["S"] for item in got.get("Items", [])]
            last = got.get("LastEvaluatedKey")
            if last is None:
                return keys
            params["ExclusiveStartKey"] = last

    async def delete_reactions(self, channel: str, rks: Sequence[str]) -> None:
        """Delete those reaction items (``BatchWriteItem``, 25 at a time, unprocessed items
        sent again)."""
        retry = self.aws.retry
        for start in range(0, len(rks), _BATCH_WRITE):
            request: dict[str, Any] = {
                self.reactions: [
                    {"DeleteRequest": {"Key": {"channel": {"S": channel}, "rk": {"S": rk}}}}
                    for rk in rks[start : start + _BATCH_WRITE]
                ]
            }
            for attempt in range(max(1, retry.attempts)):
                if attempt:
                    await trio.sleep(retry.backoff(attempt - 1))
                got = await self.call("batch_write_item", RequestItems=request)
                request = got.get("UnprocessedItems") or {}
                if not request:
                    break
            else:
                raise StoreUnavailable(
                    f"dynamodb message-state store {self.reactions!r}: items unprocessed"
                )

    def gave_up(self, what: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"dynamodb message-state store {self.state!r}: {what}: the item kept changing "
            f"({MAX_DECISIONS} tries)"
        )
