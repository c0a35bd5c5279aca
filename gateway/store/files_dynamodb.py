"""DynamoDB file records: the ``<prefix>-files`` table (:data:`gateway.store.tables.FILES`).

One item per file, key ``id``; defined in :mod:`gateway.store.tables` and never created
here. A pending item also carries ``pending_owner`` and ``expires_ms``, the keys of the
sparse GSI ``pending_by_owner`` that :meth:`DynamoFileStore.count_pending` queries
(eventually consistent: a burst of slot requests may pass the cap by a few), and
``expires``, the table's TTL (epoch seconds, a day after the slot lapses: DynamoDB deletes
lapsed slots by itself). ``mark_ready`` removes all three.

Every call goes through :mod:`gateway.aws` (retries of throttling and transient failures
there, then :class:`gateway.aws.AwsUnavailable`, a :class:`StoreUnavailable`); a missing
table or a closed store is :class:`StoreUnavailable` too. Reads are strongly consistent.
Each change is one conditional ``PutItem``/``UpdateItem``; when its condition fails, the
stored item (``ALL_OLD``) says which refusal of :class:`gateway.store.files.FileStore`
applies, or that a retry of a call that already succeeded is answered as it was.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

from gateway.aws import Aws, AwsError
from gateway.domain.errors import AlreadyExists, Conflict, InvalidField, NotFound
from gateway.errors import StoreUnavailable
from gateway.store._dynamo import TableIO, check_ready
from gateway.store.files import (
    ATTACHED,
    EXPIRED,
    NOT_READY,
    SIZE,
    FileRecord,
    check_file_id,
)
from gateway.store.tables import FILES, FILES_TABLES, PENDING_BY_OWNER, TTL_ATTRIBUTE

__all__ = ["DynamoFileStore", "open_dynamodb_file_store"]

Item = dict[str, Any]
TTL_GRACE_S = 86_400  # a lapsed pending item is kept this long (then TTL deletes it)

_NAMES = {
    "#id": "id",
    "#o": "owner",
    "#st": "status",
    "#sz": "size",
    "#x": "expires_ms",
    "#po": "pending_owner",
    "#ttl": TTL_ATTRIBUTE,
    "#ch": "channel",
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def file_item(r: FileRecord) -> Item:
    """The item of ``r`` (DynamoDB's typed JSON)."""
    item: Item = {
        "id": {"S": r.id},
        "owner": {"S": r.owner},
        "name": {"S": r.name},
        "size": {"N": str(r.size)},
        "content_type": {"S": r.content_type},
        "status": {"S": r.status},
        "created_ms": {"N": str(r.created_ms)},
    }
    if r.expires_ms is not None:
        item["expires_ms"] = {"N": str(r.expires_ms)}
        if r.status == "pending":
            item["pending_owner"] = {"S": r.owner}
            item[TTL_ATTRIBUTE] = {"N": str(r.expires_ms // 1000 + TTL_GRACE_S)}
    if r.channel is not None:
        item["channel"] = {"S": r.channel}
    if r.sha256 is not None:
        item["sha256"] = {"S": r.sha256}
    return item


def item_file(item: Item) -> FileRecord:
    """The record an item holds."""

    def opt(name: str) -> Any:
        value = item.get(name)
        return None if value is None else next(iter(value.values()))

    expires = opt("expires_ms")
    return FileRecord(
        id=item["id"]["S"],
        owner=item["owner"]["S"],
        name=item["name"]["S"],
        size=int(item["size"]["N"]),
        content_type=item["content_type"]["S"],
        status=item["status"]["S"],
        created_ms=int(item["created_ms"]["N"]),
        expires_ms=None if expires is None else int(expires),
        channel=opt("channel"),
        sha256=opt("sha256"),
    )


def _check_text(value: str, field: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 256:
        raise InvalidField(f"{field} must be 1..256 characters", field=field)
    return value


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidField("size must be an integer >= 0", field="size")
    return size


def _no_file(file_id: str) -> NotFound:
    return NotFound(f"no file {file_id!r} of yours", reason="file")


def _names(expression: str) -> dict[str, str]:
    return {k: v for k, v in _NAMES.items() if k in expression}


class _FileTable(TableIO):
    """The ``<prefix>-files`` table's requests: a missing table or a closed bridge is
    :class:`StoreUnavailable` with DynamoDB's message."""

    def unavailable(self, operation: str, exc: AwsError) -> StoreUnavailable | None:
        if exc.aws_code in ("ResourceNotFoundException", "Closed"):
            return StoreUnavailable(f"{self.label}: {operation}: {exc.message}")
        return None


class DynamoFileStore:
    """A :class:`gateway.store.files.FileStore` on the ``<prefix>-files`` table. Any
    number of handles, on any number of nodes, may share it. Make it with
    :func:`open_dynamodb_file_store`, which checks the table first."""

    def __init__(self, aws: Aws, prefix: str, *, clock: Callable[[], int] = _now_ms) -> None:
        self.aws = aws
        self.prefix = prefix
        self.table = FILES.name(prefix)
        self.clock = clock
        self._io = _FileTable(aws, "file", [self.table])

    async def _update(self, file_id: str, update: str, condition: str, values: Item) -> Item:
        """One conditional ``UpdateItem``: the new item, or ``ConditionFailed`` with the
        stored one."""
        expression = f"{update} {condition}"
        applied, got = await self._io.write_if(
            "update_item",
            TableName=self.table,
            Key={"id": {"S": file_id}},
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames=_names(expression),
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        if not applied:
            raise _ConditionFailed(got.get("Item"))
        new: Item = got["Attributes"]
        return new

    async def create(self, record: FileRecord) -> FileRecord:
        check_file_id(record.id)
        _check_text(record.owner, "owner")
        _check_size(record.size)
        if record.status != "pending" or record.expires_ms is None or record.channel:
            raise InvalidField("a new file record is pending, with expires_ms", field="status")
        item = file_item(record)
        applied, got = await self._io.write_if(
            "put_item",
            TableName=self.table,
            Item=item,
            ConditionExpression="attribute_not_exists(#id)",
            ExpressionAttributeNames={"#id": "id"},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        if not applied:
            old = got.get("Item")
            if old is not None and old == item:  # a retry of this very put
                return record
            raise AlreadyExists(f"file {record.id!r} exists", reason="file")
        return record

    async def get(self, file_id: str) -> FileRecord | None:
        check_file_id(file_id)
        item = await self._io.get_item(self.table, {"id": {"S": file_id}})
        return None if item is None else item_file(item)

    async def mark_ready(self, file_id: str, owner: str, size: int) -> FileRecord:
        check_file_id(file_id)
        _check_text(owner, "owner")
        _check_size(size)
        now = self.clock()
        try:
            item = await self._update(
                file_id,
                "SET #st = :ready REMOVE #x, #po, #ttl",
                "#o = :o AND #st = :pending AND #sz = :sz AND #x > :now",
                {
                    ":ready": {"S": "ready"},
                    ":pending": {"S": "pending"},
                    ":o": {"S": owner},
                    ":sz": {"N": str(size)},
                    ":now": {"N": str(now)},
                },
            )
        except _ConditionFailed as failed:
            found = None if failed.item is None else item_file(failed.item)
            if found is None or found.owner != owner:
                raise _no_file(file_id) from None
            if found.size != size:
                raise Conflict(
                    f"file {file_id!r} has {size} bytes stored, not the announced {found.size}",
                    reason=SIZE,
                ) from None
            if found.status == "ready":
                return found  # a retry, or completed twice
            raise Conflict(f"the upload slot of file {file_id!r} lapsed", reason=EXPIRED) from None
        return item_file(item)

    async def attach(self, file_id: str, owner: str, channel: str) -> FileRecord:
        check_file_id(file_id)
        _check_text(owner, "owner")
        _check_text(channel, "channel")
        try:
            item = await self._update(
                file_id,
                "SET #ch = :ch",
                "#o = :o AND #st = :ready AND (attribute_not_exists(#ch) OR #ch = :ch)",
                {":ch": {"S": channel}, ":o": {"S": owner}, ":ready": {"S": "ready"}},
            )
        except _ConditionFailed as failed:
            found = None if failed.item is None else item_file(failed.item)
            if found is None or found.owner != owner:
                raise _no_file(file_id) from None
            if found.status != "ready":
                raise Conflict(f"file {file_id!r} is not uploaded yet", reason=NOT_READY) from None
            raise Conflict(
                f"file {file_id!r} is attached to another channel", reason=ATTACHED
            ) from None
        return item_file(item)

    async def count_pending(self, owner: str) -> int:
        _check_text(owner, "owner")
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": PENDING_BY_OWNER,
            "KeyConditionExpression": "#po = :o AND #x > :now",
            "ExpressionAttributeNames": {"#po": "pending_owner", "#x": "expires_ms"},
            "ExpressionAttributeValues": {":o": {"S": owner}, ":now": {"N": str(self.clock())}},
            "Select": "COUNT",
        }
        return sum(int(got.get("Count", 0)) for got in await self._io.query_pages(params))

    async def aclose(self) -> None:
        """Later calls raise :class:`StoreUnavailable`; the :class:`Aws` stays open."""
        self._io.closed = True


class _ConditionFailed(Exception):
    def __init__(self, item: Item | None) -> None:
        super().__init__("condition failed")
        self.item = item


@asynccontextmanager
async def open_dynamodb_file_store(
    aws: Aws, prefix: str, *, clock: Callable[[], int] = _now_ms
) -> AsyncIterator[DynamoFileStore]:
    """A :class:`DynamoFileStore` on ``<prefix>-files``, after checking it: raises
    :class:`StoreUnavailable` naming what is missing or wrong (deployment creates tables,
    see :func:`gateway.store.tables.create_tables`)."""
    await check_ready(aws, prefix, FILES_TABLES, "files table")
    store = DynamoFileStore(aws, prefix, clock=clock)
    async with aclosing(store):
        yield store
