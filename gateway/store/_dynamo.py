"""What the DynamoDB stores share: requests with their errors translated, conditional
writes, transactions, batches, paged queries, the table check at open, call counting.

Every request goes through :class:`gateway.aws.Aws` (throttling, transaction conflicts
and transient failures are retried there, then raised as
:class:`gateway.aws.AwsUnavailable`, a :class:`gateway.errors.StoreUnavailable`).
:meth:`TableIO.call` makes a missing table (or a closed bridge or store)
:class:`StoreUnavailable` too, naming the tables; any other refusal by DynamoDB is a bug
and stays :class:`gateway.aws.AwsError`.

A failed condition is an answer, not an error: :meth:`TableIO.write_if` returns it,
:meth:`TableIO.transact_items` a :class:`Cancelled` with each part's stored item.
:meth:`TableIO.transact_items` sends one ``TransactWriteItems`` with a fresh
``ClientRequestToken``; the bridge sends the same parameters, token included, on each of
its retries, so a transaction that landed before a lost answer is not applied twice
(DynamoDB honours a token for 10 minutes).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import trio

from gateway.aws import Aws, AwsError
from gateway.domain.errors import DomainError
from gateway.errors import StoreUnavailable
from gateway.store.tables import TableSpec, check_tables

__all__ = ["CallCounts", "Cancelled", "CountedStore", "Item", "TableIO", "check_ready"]

Item = dict[str, Any]  # DynamoDB's typed JSON: {"attr": {"S": "..."}}

_T = TypeVar("_T")


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
        """The stored item of a failed part (``ReturnValuesOnConditionCheckFailure``;
        None: it failed on an absent item, or did not fail)."""
        if not self.failed(index):
            return None
        found: Item | None = self.reasons[index].get("Item")
        return found


class TableIO:
    """Requests to the tables ``names`` of one DynamoDB store (``store``: its name in
    errors, e.g. ``"domain"``) through one :class:`Aws`; the first table names the store
    in errors. ``closed`` set: later requests raise :class:`StoreUnavailable`."""

    def __init__(self, aws: Aws, store: str, names: Sequence[str]) -> None:
        self.aws = aws
        self.store = store
        self.table_names = tuple(names)
        self.closed = False
        self.transactions = 0  # TransactWriteItems that succeeded

    @property
    def label(self) -> str:
        """How errors name the store, e.g. ``dynamodb domain store 'chat-domain'``."""
        return f"dynamodb {self.store} store {self.table_names[0]!r}"

    def check_open(self) -> None:
        """Raise :class:`StoreUnavailable` if the store is closed."""
        if self.closed:
            raise StoreUnavailable(f"{self.label} is closed")

    def unavailable(self, operation: str, exc: AwsError) -> StoreUnavailable | None:
        """The :class:`StoreUnavailable` that ``exc`` (raised by ``operation``) means, or
        None if it stays as it is."""
        if exc.aws_code == "ResourceNotFoundException":
            *some, last = self.table_names
            names = f"{', '.join(some)} or {last}" if some else last
            return StoreUnavailable(
                f"dynamodb {self.store} store: {operation}: table {names} is missing: {exc.message}"
            )
        if exc.aws_code == "Closed":
            return StoreUnavailable(f"{self.label}: {exc}")
        return None

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One DynamoDB request, its errors translated (see :meth:`unavailable`)."""
        self.check_open()
        try:
            return await self.aws.dynamodb(operation, **params)
        except AwsError as exc:
            error = self.unavailable(operation, exc)
            if error is None:
                raise
            raise error from exc

    # -- reads -----------------------------------------------------------------------------

    async def get_item(self, table: str, key: Item, **params: Any) -> Item | None:
        """The item stored under ``key`` (a consistent ``GetItem``), if any."""
        got = await self.call("get_item", TableName=table, Key=key, ConsistentRead=True, **params)
        item: Item | None = got.get("Item")
        return item

    async def batch_get_items(
        self, request: dict[str, Any], *, unprocessed: str = "keys unprocessed"
    ) -> list[tuple[str, Item]]:
        """The items a ``BatchGetItem`` of ``RequestItems=request`` finds, as ``(table,
        item)``; unprocessed keys are asked again (:meth:`send_batch`), and if some are left
        :class:`StoreUnavailable` says ``unprocessed``."""
        answers = await self.send_batch("batch_get_item", request, "UnprocessedKeys")
        if answers is None:
            raise StoreUnavailable(f"{self.label}: {unprocessed}")
        return [
            (table, item)
            for got in answers
            for table, items in got.get("Responses", {}).items()
            for item in items
        ]

    async def send_batch(
        self, operation: str, request: dict[str, Any], left: str
    ) -> list[dict[str, Any]] | None:
        """Send ``operation`` (``batch_get_item``, ``batch_write_item``) with
        ``RequestItems=request``, then what its answer leaves under ``left``
        (``UnprocessedKeys``, ``UnprocessedItems``) again, with the bridge's backoff, as
        many times as it tries a request: the answers, or None if some is still left."""
        answers: list[dict[str, Any]] = []
        retry = self.aws.retry
        for attempt in range(max(1, retry.attempts)):
            if attempt:
                await trio.sleep(retry.backoff(attempt - 1))
            got = await self.call(operation, RequestItems=request)
            answers.append(got)
            request = got.get(left) or {}
            if not request:
                return answers
        return None

    async def query_pages(
        self, params: dict[str, Any], *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The answers of a ``Query`` of ``params``, page after page until the end or, with
        ``limit``, until that many items (each page asks for the rest: ``Limit``)."""
        params = dict(params)
        pages: list[dict[str, Any]] = []
        count = 0
        while True:
            if limit is not None:
                params["Limit"] = limit - count
            got = await self.call("query", **params)
            pages.append(got)
            count += len(got.get("Items", []))
            last = got.get("LastEvaluatedKey")
            if last is None or (limit is not None and count >= limit):
                return pages
            params["ExclusiveStartKey"] = last

    async def query_items(self, params: dict[str, Any], *, limit: int | None = None) -> list[Item]:
        """The items of :meth:`query_pages`."""
        pages = await self.query_pages(params, limit=limit)
        return [item for got in pages for item in got.get("Items", [])]

    # -- writes ----------------------------------------------------------------------------

    async def write_if(self, operation: str, **params: Any) -> tuple[bool, Mapping[str, Any]]:
        """One conditional write (``put_item``, ``update_item``): ``(True, its answer)``,
        or ``(False, the error's answer)`` if its condition failed (its ``Item`` is the
        stored item with ``ReturnValuesOnConditionCheckFailure=ALL_OLD``)."""
        try:
            return True, await self.call(operation, **params)
        except AwsError as exc:
            if exc.aws_code != "ConditionalCheckFailedException":
                raise
            return False, exc.response

    async def transact_items(self, items: Sequence[dict[str, Any]]) -> Cancelled | None:
        """Send ``items`` as one transaction: None if it was applied, a :class:`Cancelled`
        if conditions failed (nothing was written)."""
        try:
            await self.call(
                "transact_write_items",
                TransactItems=list(items),
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


async def check_ready(aws: Aws, prefix: str, tables: Sequence[TableSpec], what: str) -> None:
    """Raise :class:`StoreUnavailable` naming what is missing or wrong among ``tables``
    under ``prefix`` (``what``: how the message calls them, e.g. ``"domain table"``)."""
    problems = await check_tables(aws, prefix, tables)
    if problems:
        verb = "is" if len(tables) == 1 else "are"
        raise StoreUnavailable(
            f"dynamodb {what} under prefix {prefix!r} {verb} not ready: {'; '.join(problems)}"
        )


class CallCounts(Protocol):
    reads: int
    writes: int
    refusals: int


_C = TypeVar("_C", bound=CallCounts)


class CountedStore(Generic[_C]):
    """A store's calls on its :class:`TableIO`, counted in ``stats`` like the SQLite
    adapters count; its ``transactions``, ``statistics()`` and ``aclose()``."""

    def __init__(self, io: TableIO, stats: _C) -> None:
        self._io = io
        self._stats = stats

    @property
    def transactions(self) -> int:
        """``TransactWriteItems`` calls that succeeded."""
        return self._io.transactions

    async def _run(self, write: bool, call: Callable[[], Awaitable[_T]]) -> _T:
        """``await call()``, counted like the SQLite adapter counts (refusals, then
        reads or writes that returned)."""
        self._io.check_open()
        try:
            result = await call()
        except DomainError:
            self._stats.refusals += 1
            raise
        if write:
            self._stats.writes += 1
        else:
            self._stats.reads += 1
        return result

    def statistics(self) -> _C:
        """A snapshot: read calls, write calls that returned, refused calls."""
        return copy.copy(self._stats)

    async def aclose(self) -> None:
        """Later calls raise :class:`StoreUnavailable`; the :class:`Aws` stays open."""
        self._io.closed = True
