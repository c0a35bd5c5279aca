"""The DynamoDB tables of the gateway, defined in this one place.

Used by :mod:`gateway.store.dynamodb` (names, attributes, the message item codec), by
:mod:`gateway.store.domain_dynamodb` (the domain table), by
:mod:`gateway.store.message_state_dynamodb` (the message-state tables), by
:mod:`gateway.store.files_dynamodb` (the file records), by
:mod:`gateway.store.read_state_dynamodb` (the read-state tables), by the test fixtures
(to create tables in moto) and by deployment code. Application code never creates tables:
each store calls :func:`check_tables` for its own tables (:data:`MESSAGE_TABLES`,
:data:`DOMAIN_TABLES`, :data:`MESSAGE_STATE_TABLES`, :data:`FILES_TABLES`,
:data:`READ_STATE_TABLES`) and refuses to start if something is missing;
:func:`create_tables` is for fixtures and deployment only (pass :data:`TABLES` for every
table).

Every name derives from a prefix (``[A-Za-z0-9_.-]``, e.g. ``"chat-prod"``):

``<prefix>-logs``      one item per channel log. Key ``channel`` (S). Attributes ``epoch``
                       (S), ``head`` (N, highest stored offset, only ever raised, in the
                       same transaction as the messages), ``created_ms`` (N).
``<prefix>-messages``  one item per message. Key ``channel`` (S) + ``offset`` (N).
                       Attributes ``epoch``, ``id``, ``sender``, ``cmid``, ``body`` (S),
                       ``ts`` (N), ``thread`` (S, absent for a top-level message),
                       ``kind`` (S, absent for a message; an event's kind), ``cs`` (S,
                       messages only: :func:`channel_sender`), the key of the sparse GSI
                       ``by_sender`` (``cs`` + ``offset``) that serves search by author.
``<prefix>-cmids``     the idempotency index, one item per message. Key ``channel`` (S) +
                       ``sc`` (S, :func:`sender_cmid`); attribute ``offset`` (N). A table
                       of its own, written in the same transaction as the message, and not
                       a GSI: GSI reads are only eventually consistent, and a retried send
                       must find its message the moment the write returned.
``<prefix>-domain``    the domain store's single table (users, workspaces, members,
                       channels, channel members, DMs). Key ``pk`` (S) + ``sk`` (S); the
                       item types are in ``docs/data-model.md`` and
                       :mod:`gateway.store._domain_dynamo_items`. No TTL; point-in-time
                       recovery on (:func:`create_tables` enables it).
``<prefix>-message-state``
                       the current state of changed messages (edits, tombstones, reaction
                       counts, thread summaries), one item per message. Key ``channel``
                       (S) + ``offset`` (N), the messages table's key.
``<prefix>-reactions`` one item per (message, user, emoji) reaction. Key ``channel`` (S) +
                       ``rk`` (S, ``<offset>#<len(user)>:<user>#<emoji>``); no other
                       attribute. Both items are in ``docs/data-model.md`` and
                       :mod:`gateway.store._message_state_dynamo_items`.
``<prefix>-files``     one item per uploaded file (:mod:`gateway.store.files_dynamodb`).
                       Key ``id`` (S). A pending record also has ``pending_owner`` (S) and
                       ``expires_ms`` (N), the keys of the sparse GSI ``pending_by_owner``
                       (keys only) that counts a user's open upload slots, and ``expires``
                       (the TTL: pending records are deleted a day after they lapse).
``<prefix>-read-cursors``
                       one item per (channel, user) read cursor and delivered offset. Key
                       ``channel`` (S) + ``user`` (S).
``<prefix>-unread``    the running counts behind unread badges: per channel a head item,
                       one item per noted message, per sender and mentioned user a mark
                       item and a summary item. Key ``channel`` (S) + ``sk`` (S).
``<prefix>-notifications``
                       one item per (user, notification). Key ``user`` (S) + ``id`` (S);
                       LSIs ``by_created`` (``ck``) and the sparse ``unread`` (``uk``),
                       TTL on ``expires``. The three read-state tables' items are in
                       ``docs/data-model.md`` and
                       :mod:`gateway.store._read_state_dynamo_items`.

The S3 bucket of uploaded files (:data:`FILES_BUCKET`, named by configuration, not by the
prefix) is defined here too: :func:`check_bucket` for the blob store at startup,
:func:`create_bucket` for fixtures and deployment.

No GSI is needed: every read is one key lookup or one range query on a primary key or an
LSI (strongly consistent). The messages, cmids, message-state, reactions and unread
tables have TTL enabled on ``expires`` (epoch seconds); the stores never set it, so
nothing expires until a retention policy does. Notifications set it (their expiry).
Capacity: on demand.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from typing import Any

import trio

from gateway.aws import Aws, AwsError
from gateway.model import Record

__all__ = [
    "BUCKETS",
    "BUCKET_NAME",
    "BY_SENDER",
    "CMIDS",
    "DOMAIN",
    "DOMAIN_TABLES",
    "FILES",
    "FILES_BUCKET",
    "FILES_TABLES",
    "LOGS",
    "MESSAGES",
    "MESSAGE_STATE",
    "MESSAGE_STATE_TABLES",
    "MESSAGE_TABLES",
    "NOTIFICATIONS",
    "NOTIFICATIONS_BY_CREATED",
    "NOTIFICATIONS_UNREAD",
    "PENDING_BY_OWNER",
    "REACTIONS",
    "READ_CURSORS",
    "READ_STATE_TABLES",
    "TABLES",
    "TTL_ATTRIBUTE",
    "UNREAD",
    "BucketSpec",
    "TableSpec",
    "channel_sender",
    "check_bucket",
    "check_bucket_name",
    "check_tables",
    "cmid_item",
    "cmid_put",
    "create_bucket",
    "create_tables",
    "item_record",
    "log_write",
    "message_item",
    "message_put",
    "sender_cmid",
    "table_name",
]

TTL_ATTRIBUTE = "expires"
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,200}")


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One table: its name suffix, key schema, GSIs, LSIs, TTL attribute and whether
    point-in-time recovery is on."""

    suffix: str
    hash_key: tuple[str, str]  # (attribute, type "S" | "N" | "B")
    range_key: tuple[str, str] | None = None
    gsis: tuple[dict[str, Any], ...] = ()  # GlobalSecondaryIndexes entries, as the API takes
    ttl: str | None = None
    gsi_keys: tuple[tuple[str, str], ...] = ()  # (attribute, type) of index keys not in the key
    pitr: bool = False
    lsis: tuple[dict[str, Any], ...] = ()  # LocalSecondaryIndexes entries, as the API takes

    def name(self, prefix: str) -> str:
        return table_name(prefix, self.suffix)

    def key_schema(self) -> list[dict[str, str]]:
        schema = [{"AttributeName": self.hash_key[0], "KeyType": "HASH"}]
        if self.range_key is not None:
            schema.append({"AttributeName": self.range_key[0], "KeyType": "RANGE"})
        return schema

    def attribute_definitions(self) -> list[dict[str, str]]:
        keys = [self.hash_key] if self.range_key is None else [self.hash_key, self.range_key]
        keys += self.gsi_keys
        return [{"AttributeName": a, "AttributeType": t} for a, t in keys]

    def create_params(self, prefix: str) -> dict[str, Any]:
        """The ``CreateTable`` parameters for this table under ``prefix``."""
        params: dict[str, Any] = {
            "TableName": self.name(prefix),
            "KeySchema": self.key_schema(),
            "AttributeDefinitions": self.attribute_definitions(),
            "BillingMode": "PAY_PER_REQUEST",
        }
        if self.gsis:
            params["GlobalSecondaryIndexes"] = list(self.gsis)
        if self.lsis:
            params["LocalSecondaryIndexes"] = list(self.lsis)
        return params


LOGS = TableSpec("logs", ("channel", "S"))
BY_SENDER = "by_sender"  # messages' search index: (channel, sender) -> offsets
MESSAGES = TableSpec(
    "messages",
    ("channel", "S"),
    ("offset", "N"),
    ttl=TTL_ATTRIBUTE,
    gsis=(
        {
            "IndexName": BY_SENDER,
            "KeySchema": [
                {"AttributeName": "cs", "KeyType": "HASH"},
                {"AttributeName": "offset", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
    ),
    gsi_keys=(("cs", "S"),),
)
CMIDS = TableSpec("cmids", ("channel", "S"), ("sc", "S"), ttl=TTL_ATTRIBUTE)
DOMAIN = TableSpec("domain", ("pk", "S"), ("sk", "S"), pitr=True)
MESSAGE_TABLES = (LOGS, MESSAGES, CMIDS)  # the message store's (gateway.store.dynamodb)
MESSAGE_STATE = TableSpec("message-state", ("channel", "S"), ("offset", "N"), ttl=TTL_ATTRIBUTE)
REACTIONS = TableSpec("reactions", ("channel", "S"), ("rk", "S"), ttl=TTL_ATTRIBUTE)
DOMAIN_TABLES = (DOMAIN,)  # the domain store's (gateway.store.domain_dynamodb)
MESSAGE_STATE_TABLES = (MESSAGE_STATE, REACTIONS)  # gateway.store.message_state_dynamodb's
PENDING_BY_OWNER = "pending_by_owner"  # files' sparse GSI: (pending_owner, expires_ms)
FILES = TableSpec(
    "files",
    ("id", "S"),
    ttl=TTL_ATTRIBUTE,
    gsis=(
        {
            "IndexName": PENDING_BY_OWNER,
            "KeySchema": [
                {"AttributeName": "pending_owner", "KeyType": "HASH"},
                {"AttributeName": "expires_ms", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        },
    ),
    gsi_keys=(("pending_owner", "S"), ("expires_ms", "N")),
)
FILES_TABLES = (FILES,)  # gateway.store.files_dynamodb's
READ_CURSORS = TableSpec("read-cursors", ("channel", "S"), ("user", "S"))
UNREAD = TableSpec("unread", ("channel", "S"), ("sk", "S"), ttl=TTL_ATTRIBUTE)
NOTIFICATIONS_BY_CREATED = "by_created"  # notifications, newest first: (user, ck)
NOTIFICATIONS_UNREAD = "unread"  # the unread ones (sparse): (user, uk)
NOTIFICATIONS = TableSpec(
    "notifications",
    ("user", "S"),
    ("id", "S"),
    ttl=TTL_ATTRIBUTE,
    lsis=tuple(
        {
            "IndexName": index,
            "KeySchema": [
                {"AttributeName": "user", "KeyType": "HASH"},
                {"AttributeName": attribute, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
        for index, attribute in ((NOTIFICATIONS_BY_CREATED, "ck"), (NOTIFICATIONS_UNREAD, "uk"))
    ),
    gsi_keys=(("ck", "S"), ("uk", "S")),
)
READ_STATE_TABLES = (READ_CURSORS, UNREAD, NOTIFICATIONS)  # gateway.store.read_state_dynamodb's
TABLES = (
    *MESSAGE_TABLES,
    *DOMAIN_TABLES,
    *MESSAGE_STATE_TABLES,
    *FILES_TABLES,
    *READ_STATE_TABLES,
)  # every table


def table_name(prefix: str, suffix: str) -> str:
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"table prefix {prefix!r} must be 1-200 of [A-Za-z0-9_.-]")
    return f"{prefix}-{suffix}"


# -- checking and creating -----------------------------------------------------------------


async def _describe(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        table: dict[str, Any] = (await aws.dynamodb("describe_table", TableName=name))["Table"]
    except AwsError as exc:
        if exc.aws_code == "ResourceNotFoundException":
            return None
        raise
    return table


async def check_tables(
    aws: Aws, prefix: str, tables: Sequence[TableSpec] = MESSAGE_TABLES
) -> list[str]:
    """What is missing or different from ``tables`` (by default the message store's)
    under ``prefix``; ``[]`` if all is well. Each entry names the table, e.g.
    ``"chat-logs: missing"``. Raises :class:`gateway.aws.AwsUnavailable` if DynamoDB
    cannot be asked."""
    problems: list[str] = []
    for spec in tables:
        name = spec.name(prefix)
        table = await _describe(aws, name)
        if table is None:
            problems.append(f"{name}: missing")
            continue
        if table.get("KeySchema") != spec.key_schema():
            problems.append(f"{name}: key schema {table.get('KeySchema')}, not {spec.key_schema()}")
        defined = {d["AttributeName"]: d["AttributeType"] for d in table["AttributeDefinitions"]}
        for attr, kind in (d.values() for d in spec.attribute_definitions()):
            if defined.get(attr) != kind:
                problems.append(f"{name}: key {attr} is not of type {kind}")
        have = {g["IndexName"] for g in table.get("GlobalSecondaryIndexes", [])}
        for gsi in spec.gsis:
            if gsi["IndexName"] not in have:
                problems.append(f"{name}: index {gsi['IndexName']} missing")
        local = {i["IndexName"]: i for i in table.get("LocalSecondaryIndexes", [])}
        for lsi in spec.lsis:
            if lsi["IndexName"] not in local:
                problems.append(f"{name}: index {lsi['IndexName']} missing")
            elif local[lsi["IndexName"]].get("KeySchema") != lsi["KeySchema"]:
                problems.append(f"{name}: index {lsi['IndexName']} has another key schema")
        status = table.get("TableStatus")
        if status not in ("ACTIVE", "UPDATING"):
            problems.append(f"{name}: status {status}")
    return problems


async def create_tables(
    aws: Aws, prefix: str, tables: Sequence[TableSpec] = MESSAGE_TABLES
) -> None:
    """Create those of ``tables`` (by default the message store's; :data:`TABLES` for all)
    that are missing under ``prefix``, wait until they are active, enable TTL and
    point-in-time recovery. For test fixtures and deployment only; idempotent."""
    for spec in tables:
        name = spec.name(prefix)
        if await _describe(aws, name) is None:
            try:
                await aws.dynamodb("create_table", **spec.create_params(prefix))
            except AwsError as exc:
                if exc.aws_code != "ResourceInUseException":  # created meanwhile
                    raise
        while (table := await _describe(aws, name)) is None or table["TableStatus"] != "ACTIVE":
            await trio.sleep(0.2)
        if spec.ttl is not None:
            ttl = await aws.dynamodb("describe_time_to_live", TableName=name)
            if ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") != "ENABLED":
                await aws.dynamodb(
                    "update_time_to_live",
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl},
                )
        if spec.pitr:
            backups = await aws.dynamodb("describe_continuous_backups", TableName=name)
            status = (
                backups.get("ContinuousBackupsDescription", {})
                .get("PointInTimeRecoveryDescription", {})
                .get("PointInTimeRecoveryStatus")
            )
            if status != "ENABLED":
                await aws.dynamodb(
                    "update_continuous_backups",
                    TableName=name,
                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
                )


# -- the S3 bucket of uploaded files ---------------------------------------------------------

BUCKET_NAME = re.compile(r"(?!xn--)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclasses.dataclass(frozen=True)
class BucketSpec:
    """One S3 bucket: what it holds, the CORS rules browsers need to use its presigned
    URLs from a web page, and whether public access is blocked (objects are only ever
    reached through presigned URLs)."""

    role: str
    cors: tuple[dict[str, Any], ...] = ()
    block_public_access: bool = True


FILES_BUCKET = BucketSpec(
    "files",  # objects "files/<file id>" (gateway.store.blobs_s3)
    cors=(
        {
            "AllowedMethods": ["PUT", "GET", "HEAD"],
            "AllowedOrigins": ["*"],  # the presigned signature is the capability
            "AllowedHeaders": ["*"],  # Content-Type and If-None-Match of the upload
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 3600,
        },
    ),
)
BUCKETS = (FILES_BUCKET,)  # every bucket of the gateway (each named by configuration)


def check_bucket_name(name: str) -> str:
    if not BUCKET_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"S3 bucket name {name!r} must be 3-63 of a-z 0-9 . - (S3 naming rules)")
    return name


async def check_bucket(aws: Aws, name: str) -> list[str]:
    """What is wrong with bucket ``name``: ``[]`` if it exists and may be used, else one
    entry naming it (``"bucket chat-files: missing"``, ``"... access denied"``). Raises
    :class:`gateway.aws.AwsUnavailable` if S3 cannot be asked."""
    check_bucket_name(name)
    try:
        await aws.call("s3", "head_bucket", Bucket=name)
    except AwsError as exc:
        if exc.aws_code in ("404", "NoSuchBucket"):
            return [f"bucket {name}: missing"]
        if exc.aws_code in ("403", "AccessDenied"):
            return [f"bucket {name}: access denied"]
        raise
    return []


async def create_bucket(aws: Aws, name: str, spec: BucketSpec = FILES_BUCKET) -> None:
    """Create bucket ``name`` in the bridge's region if it is missing, then apply
    ``spec`` (public access block, CORS). For test fixtures and deployment only;
    idempotent."""
    if await check_bucket(aws, name):
        params: dict[str, Any] = {"Bucket": name}
        if aws.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": aws.region}
        try:
            await aws.call("s3", "create_bucket", **params)
        except AwsError as exc:
            if exc.aws_code != "BucketAlreadyOwnedByYou":  # created meanwhile
                raise
    if spec.block_public_access:
        await aws.call(
            "s3",
            "put_public_access_block",
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
    if spec.cors:
        await aws.call(
            "s3",
            "put_bucket_cors",
            Bucket=name,
            CORSConfiguration={"CORSRules": [dict(rule) for rule in spec.cors]},
        )


# -- items ---------------------------------------------------------------------------------


def sender_cmid(sender: str, cmid: str) -> str:
    """The cmids sort key: ``"<len(sender)>:<sender><cmid>"``, unambiguous for any strings."""
    return f"{len(sender)}:{sender}{cmid}"


def message_item(r: Record) -> dict[str, dict[str, str]]:
    """The messages-table item of ``r`` (DynamoDB's typed JSON)."""
    item = {
        "channel": {"S": r.channel},
        "offset": {"N": str(r.offset)},
        "epoch": {"S": r.epoch},
        "id": {"S": r.id},
        "sender": {"S": r.sender},
        "cmid": {"S": r.cmid},
        "body": {"S": r.body},
        "ts": {"N": str(r.ts)},
    }
    if r.thread is not None:
        item["thread"] = {"S": r.thread}
    if r.files:
        item["files"] = {"L": [{"S": f} for f in r.files]}  # type: ignore[dict-item]
    if r.kind:
        item["kind"] = {"S": r.kind}
    else:  # messages only: the search index is sparse
        item["cs"] = {"S": channel_sender(r.channel, r.sender)}
    return item


def channel_sender(channel: str, sender: str) -> str:
    """The ``by_sender`` index key: unambiguous for any channel and sender."""
    return f"{len(channel)}:{channel}{sender}"


def item_record(item: dict[str, Any]) -> Record:
    """The record a messages-table item holds."""
    thread = item.get("thread")
    kind = item.get("kind")
    files = item.get("files")
    return Record(
        channel=item["channel"]["S"],
        offset=int(item["offset"]["N"]),
        epoch=item["epoch"]["S"],
        id=item["id"]["S"],
        sender=item["sender"]["S"],
        cmid=item["cmid"]["S"],
        body=item["body"]["S"],
        ts=int(item["ts"]["N"]),
        thread=None if thread is None else thread["S"],
        kind="" if kind is None else kind["S"],
        files=() if files is None else tuple(f["S"] for f in files["L"]),
    )


def cmid_item(r: Record) -> dict[str, dict[str, str]]:
    """The cmids-table item of ``r``."""
    return {
        "channel": {"S": r.channel},
        "sc": {"S": sender_cmid(r.sender, r.cmid)},
        "offset": {"N": str(r.offset)},
    }


# -- conditional writes (one transaction item each) ------------------------------------

_MSG_SAME = (
    "attribute_not_exists(#o) OR (#e = :e AND #i = :i AND #s = :s AND #m = :m AND #b = :b"
    " AND #t = :t AND {thread} AND {kind})"
)
_MSG_NAMES = {"#o": "offset", "#e": "epoch", "#i": "id", "#s": "sender", "#m": "cmid"}
_MSG_NAMES |= {"#b": "body", "#t": "ts", "#th": "thread", "#k": "kind"}
_LOG_UPDATE = "SET #e = if_not_exists(#e, :e), #c = if_not_exists(#c, :now), #h = :h"
_LOG_UPDATE_IF = "(attribute_not_exists(#e) OR #e = :e) AND (attribute_not_exists(#h) OR #h <= :h)"
_LOG_NAMES = {"#e": "epoch", "#c": "created_ms", "#h": "head"}


def log_write(table: str, channel: str, epoch: str, head: int, check_only: bool) -> dict[str, Any]:
    """The log item's part of a write: check the epoch (``check_only``), or create the log if
    missing and raise ``head`` to ``head``, on condition that the epoch is ``epoch`` and the
    stored head is not above ``head``. Returns the old item when the condition fails."""
    key = {"channel": {"S": channel}}
    if check_only:
        return {
            "ConditionCheck": {
                "TableName": table,
                "Key": key,
                "ConditionExpression": "#e = :e",
                "ExpressionAttributeNames": {"#e": "epoch"},
                "ExpressionAttributeValues": {":e": {"S": epoch}},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
    now = str(time.time_ns() // 1_000_000)
    return {
        "Update": {
            "TableName": table,
            "Key": key,
            "UpdateExpression": _LOG_UPDATE,
            "ConditionExpression": _LOG_UPDATE_IF,
            "ExpressionAttributeNames": _LOG_NAMES,
            "ExpressionAttributeValues": {
                ":e": {"S": epoch},
                ":h": {"N": str(head)},
                ":now": {"N": now},
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def message_put(table: str, r: Record) -> dict[str, Any]:
    """Put ``r``'s message item, on condition that none is stored or it is the same one."""
    item = message_item(r)
    values = {f":{k}": item[a] for k, a in (("e", "epoch"), ("i", "id"), ("s", "sender"))}
    values |= {":m": item["cmid"], ":b": item["body"], ":t": item["ts"]}
    thread = "attribute_not_exists(#th)"
    if r.thread is not None:
        thread, values[":th"] = "#th = :th", item["thread"]
    kind = "attribute_not_exists(#k)"
    if r.kind:
        kind, values[":k"] = "#k = :k", item["kind"]
    return {
        "Put": {
            "TableName": table,
            "Item": item,
            "ConditionExpression": _MSG_SAME.format(thread=thread, kind=kind),
            "ExpressionAttributeNames": _MSG_NAMES,
            "ExpressionAttributeValues": values,
        }
    }


def cmid_put(table: str, r: Record) -> dict[str, Any]:
    """Put ``r``'s cmid item, on condition that none is stored or it names the same offset."""
    return {
        "Put": {
            "TableName": table,
            "Item": cmid_item(r),
            "ConditionExpression": "attribute_not_exists(#sc) OR #o = :o",
            "ExpressionAttributeNames": {"#sc": "sc", "#o": "offset"},
            "ExpressionAttributeValues": {":o": {"N": str(r.offset)}},
        }
    }
