"""The message-state tables' I/O: consistent reads, conditional writes, transactions.

Requests, their errors, transactions and batches are :class:`gateway.store._dynamo.TableIO`'s
(a missing table or a closed store is :class:`gateway.errors.StoreUnavailable`, naming the
tables; any other refusal by DynamoDB is a bug and stays :class:`gateway.aws.AwsError`).

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

from collections.abc import Sequence
from typing import Any

from gateway.aws import Aws
from gateway.errors import StoreUnavailable
from gateway.store._dynamo import Cancelled, TableIO
from gateway.store._message_state_dynamo_items import Item, expressions, state_key
from gateway.store.tables import MESSAGE_STATE, REACTIONS

__all__ = ["MAX_DECISIONS", "Cancelled", "StateTables"]

MAX_DECISIONS = 8  # conditional writes of one call before giving up (contention)
_BATCH_WRITE = 25  # BatchWriteItem's limit


class StateTables(TableIO):
    """The ``<prefix>-message-state`` and ``<prefix>-reactions`` tables through one
    :class:`Aws`."""

    def __init__(self, aws: Aws, prefix: str) -> None:
        self.state = MESSAGE_STATE.name(prefix)
        self.reactions = REACTIONS.name(prefix)
        super().__init__(aws, "message-state", [self.state, self.reactions])
        self.sweeps_failed = 0  # deletes whose reaction items were not all swept

    # -- the state table -------------------------------------------------------------------

    async def get_state(self, channel: str, offset: int, *, only: str | None = None) -> Item | None:
        """The state item (``only``: just that attribute, by placeholder, e.g. ``"#d"``)."""
        params: dict[str, Any] = {}
        if only is not None:
            params = expressions({}, ProjectionExpression=only)
        return await self.get_item(self.state, state_key(channel, offset), **params)

    async def get_states(self, channel: str, offsets: Sequence[int]) -> list[Item]:
        """The state items of ``offsets`` (distinct, at most 100) that exist: one
        ``BatchGetItem``, unprocessed keys asked again."""
        keys = [state_key(channel, o) for o in offsets]
        found = await self.batch_get_items({self.state: {"Keys": keys, "ConsistentRead": True}})
        return [item for _, item in found]

    async def update(self, channel: str, offset: int, params: Item) -> tuple[bool, Item | None]:
        """One conditional ``UpdateItem`` of the state item: ``(True, new item)`` if it was
        applied, ``(False, stored item or None)`` if its condition failed."""
        applied, got = await self.write_if(
            "update_item",
            TableName=self.state,
            Key=state_key(channel, offset),
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
            **params,
        )
        if not applied:
            old: Item | None = got.get("Item")
            return False, old
        new: Item = got["Attributes"]
        return True, new

    async def put_state(self, item: Item) -> tuple[bool, Item | None]:
        """Create the state item if it is absent: ``(True, item)``, else ``(False, the
        stored item)``."""
        applied, got = await self.write_if(
            "put_item",
            TableName=self.state,
            Item=item,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
            **expressions({}, ConditionExpression="attribute_not_exists(#c)"),
        )
        if not applied:
            old: Item | None = got.get("Item")
            return False, old
        return True, item

    # -- transactions ----------------------------------------------------------------------

    async def transact(self, parts: Sequence[dict[str, Any]]) -> Cancelled | None:
        """Send ``parts`` as one transaction: None if it was applied, a :class:`Cancelled`
        if conditions failed (nothing was written)."""
        return await self.transact_items(parts)

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
        return [item["rk"]["S"] for item in await self.query_items(params)]

    async def delete_reactions(self, channel: str, rks: Sequence[str]) -> None:
        """Delete those reaction items (``BatchWriteItem``, 25 at a time, unprocessed items
        sent again)."""
        for start in range(0, len(rks), _BATCH_WRITE):
            request: dict[str, Any] = {
                self.reactions: [
                    {"DeleteRequest": {"Key": {"channel": {"S": channel}, "rk": {"S": rk}}}}
                    for rk in rks[start : start + _BATCH_WRITE]
                ]
            }
            if await self.send_batch("batch_write_item", request, "UnprocessedItems") is None:
                raise StoreUnavailable(
                    f"dynamodb message-state store {self.reactions!r}: items unprocessed"
                )

    def gave_up(self, what: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"dynamodb message-state store {self.state!r}: {what}: the item kept changing "
            f"({MAX_DECISIONS} tries)"
        )
