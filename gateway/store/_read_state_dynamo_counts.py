"""DynamoDB operations of the read-state store: cursors, receipts, noting and unread counts.

Input is validated by the store. The requests are those of ``docs/data-model.md``
("ReadStateStore"). The counts rest on one invariant: the head item ``H`` of a channel is
raised in the same transaction that puts the message item and the mark items of the
offset it is raised to, and only to a higher offset. So once ``head >= c`` was read,
every message at or below ``c`` that will ever be noted has been, and the message and
mark items at or below ``head`` read after ``H`` are final.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from gateway.domain.errors import Conflict
from gateway.store import _read_state_dynamo_items as i
from gateway.store._read_state_dynamo_table import (
    MAX_DECISIONS,
    Projection,
    ReadTables,
    parallel,
)
from gateway.store.read_state import MAX_RECEIPTS, ReadCursor, Receipt, Unread

_CURSOR: Projection = (
    "#c, #u, #r, #rm, #d, #dm, #seq, #eseq, #sh",
    {
        "#c": "channel",
        "#u": "user",
        "#r": "read",
        "#rm": "read_ms",
        "#d": "delivered",
        "#dm": "delivered_ms",
        "#seq": "seq",
        "#eseq": "eseq",
        "#sh": "snap_head",
    },
)
_HEAD: Projection = ("#h, #m, #e", {"#h": "head", "#m": "messages", "#e": "everyone"})
_KEY_ONLY: Projection = ("#sk", {"#sk": "sk"})
_SUMMARY_OR_HEAD: Projection = (
    "#c, #sk, #h, #m, #e, #mh",
    {**_HEAD[1], "#c": "channel", "#sk": "sk", "#mh": "marks_head"},
)


def _receipt(user: str, channel: str, c: i.CursorState) -> Receipt:
    delivered, delivered_ms = c.delivered, c.delivered_ms
    if c.read > delivered:  # reading implies delivery
        delivered, delivered_ms = c.read, c.read_ms
    return Receipt(
        user=user,
        channel=channel,
        delivered=delivered,
        delivered_ms=delivered_ms,
        read=c.read,
        read_ms=c.read_ms,
    )


async def _counts_at(t: ReadTables, channel: str, offset: int) -> tuple[int, int]:
    """``(seq, eseq)`` of the last message item at or below ``offset`` (zeros if none)."""
    items, _ = await t.query(
        {
            "TableName": t.unread,
            "KeyConditionExpression": "#c = :c AND #sk BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#c": "channel", "#sk": "sk", "#s": "seq", "#e": "eseq"},
            "ExpressionAttributeValues": {
                ":c": {"S": channel},
                ":lo": {"S": "M#"},
                ":hi": {"S": i.message_sk(offset)},
            },
            "ProjectionExpression": "#s, #e",
            "ScanIndexForward": False,
            "Limit": 1,
        }
    )
    if not items:
        return 0, 0
    return int(items[0]["seq"]["N"]), int(items[0]["eseq"]["N"])


# -- read cursors ---------------------------------------------------------------------------


async def mark_read(t: ReadTables, user: str, channel: str, offset: int, now_ms: int) -> ReadCursor:
    """The head item, then (only if ``offset`` is below the head) the counts at
    ``offset``, in this order: then the snapshot is exact if ``snap_head >= offset``.
    Then one conditional ``UpdateItem``; failed: the stored cursor (``ALL_OLD``)."""
    top, count, ecount = i.head_values(await t.get(t.unread, i.head_key(channel), _HEAD))
    if offset >= top:  # every noted message is at or below it: the head's totals
        seq, eseq = count, ecount
    else:
        seq, eseq = await _counts_at(t, channel, offset)
    params = i.mark_read_update(offset, now_ms, seq, eseq, top)
    applied, item = await t.update(t.cursors, i.cursor_key(channel, user), params, returns="NONE")
    if applied:
        return ReadCursor(user=user, channel=channel, offset=offset, updated_ms=now_ms)
    stored = i.CursorState(item)
    return ReadCursor(user=user, channel=channel, offset=stored.read, updated_ms=stored.read_ms)


async def list_cursors(t: ReadTables, user: str, channels: Sequence[str]) -> dict[str, ReadCursor]:
    keys = [(t.cursors, i.cursor_key(ch, user)) for ch in channels]
    found: dict[str, ReadCursor] = {}
    for _, item in await t.batch_get(keys, {t.cursors: _CURSOR}):
        c = i.CursorState(item)
        if c.read > 0:
            ch = item["channel"]["S"]
            found[ch] = ReadCursor(user=user, channel=ch, offset=c.read, updated_ms=c.read_ms)
    return {ch: found[ch] for ch in channels if ch in found}  # in the order asked


async def get_cursor(t: ReadTables, user: str, channel: str) -> ReadCursor | None:
    c = i.CursorState(await t.get(t.cursors, i.cursor_key(channel, user), _CURSOR))
    if c.read == 0:
        return None
    return ReadCursor(user=user, channel=channel, offset=c.read, updated_ms=c.read_ms)


# -- receipts --------------------------------------------------------------------------------


async def mark_delivered(
    t: ReadTables, user: str, channel: str, offset: int, now_ms: int
) -> Receipt:
    _, item = await t.update(
        t.cursors, i.cursor_key(channel, user), i.mark_delivered_update(offset, now_ms)
    )
    return _receipt(user, channel, i.CursorState(item))


async def receipts(t: ReadTables, channel: str) -> list[Receipt]:
    params: dict[str, Any] = {
        "TableName": t.cursors,
        "KeyConditionExpression": "#c = :c",
        "ExpressionAttributeValues": {":c": {"S": channel}},
        "ProjectionExpression": _CURSOR[0],
        "ExpressionAttributeNames": _CURSOR[1],
    }
    found: list[i.Item] = []
    while len(found) < MAX_RECEIPTS:
        items, last = await t.query({**params, "Limit": MAX_RECEIPTS - len(found)})
        found += items
        if last is None:
            break
        params["ExclusiveStartKey"] = last
    return [_receipt(item["user"]["S"], channel, i.CursorState(item)) for item in found]


# -- noting messages ---------------------------------------------------------------------------


def _note_parts(
    t: ReadTables,
    channel: str,
    offset: int,
    *,
    sender: str,
    mentions: Sequence[str],
    everyone: bool,
    head: i.Item | None,
) -> list[dict[str, Any]]:
    """The transaction: message item (absent), head (as read), marks and summaries."""
    top, count, ecount = i.head_values(head)
    count, ecount = count + 1, ecount + int(everyone)
    sk = {"#sk": "sk"}
    parts: list[dict[str, Any]] = [
        {
            "Put": {
                "TableName": t.unread,
                "Item": {
                    **i.unread_key(channel, i.message_sk(offset)),
                    "sender": {"S": sender},
                    "seq": {"N": str(count)},
                    "eseq": {"N": str(ecount)},
                },
                "ConditionExpression": "attribute_not_exists(#sk)",
                "ExpressionAttributeNames": sk,
            }
        }
    ]
    values: dict[str, Any] = {
        ":o": {"N": str(offset)},
        ":m": {"N": str(count)},
        ":e": {"N": str(ecount)},
    }
    if head is None:
        condition, names = "attribute_not_exists(#sk)", {**sk, **_HEAD[1]}
    else:
        condition, names = "#h = :top", _HEAD[1]
        values[":top"] = {"N": str(top)}
    parts.append(
        {
            "Update": {
                "TableName": t.unread,
                "Key": i.head_key(channel),
                "UpdateExpression": "SET #h = :o, #m = :m, #e = :e",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
    )
    flag = {"BOOL": bool(everyone)}
    for user in [sender, *(u for u in mentions if u != sender)]:
        mark = {**i.unread_key(channel, i.mark_sk(user, offset))}
        mark |= {"own": {"BOOL": user == sender}, "everyone": flag}
        parts.append({"Put": {"TableName": t.unread, "Item": mark}})
        parts.append(
            {
                "Update": {
                    "TableName": t.unread,
                    "Key": i.unread_key(channel, i.summary_sk(user)),
                    "UpdateExpression": "SET #mh = :o",
                    "ExpressionAttributeNames": {"#mh": "marks_head"},
                    "ExpressionAttributeValues": {":o": {"N": str(offset)}},
                }
            }
        )
    return parts


async def note_message(
    t: ReadTables,
    channel: str,
    offset: int,
    *,
    sender: str,
    mentions: Sequence[str],
    everyone: bool,
) -> bool:
    """Read the head; at or below it, a repeat (``False``) or out of order
    (``Conflict``); above it, one transaction asserting the head read. Cancelled: the
    message item exists (a concurrent repeat: ``False``), or the head moved (decide
    again from the stored head, ``ALL_OLD``)."""
    head = await t.get(t.unread, i.head_key(channel))
    for _ in range(MAX_DECISIONS):
        top = i.head_values(head)[0]
        if head is not None and offset <= top:
            if offset == top:
                return False  # the head's own message: a repeat
            noted = await t.get(t.unread, i.unread_key(channel, i.message_sk(offset)), _KEY_ONLY)
            if noted is not None:
                return False  # a repeat: the first call's facts stand
            raise Conflict(
                f"{channel}: offset {offset} is below the highest noted offset {top}",
                reason="order",
            )
        parts = _note_parts(
            t, channel, offset, sender=sender, mentions=mentions, everyone=everyone, head=head
        )
        cancelled = await t.transact(parts)
        if cancelled is None:
            return True
        if cancelled.failed(0):
            return False  # noted meanwhile: a repeat
        head = cancelled.item(1)
        if head is None:  # not told: read it
            head = await t.get(t.unread, i.head_key(channel))
    raise t.gave_up("note_message")


# -- unread counts ----------------------------------------------------------------------------


async def _unread_one(
    t: ReadTables,
    user: str,
    channel: str,
    *,
    cursor: i.CursorState,
    head: i.Item | None,
    summary: i.Item | None,
) -> Unread:
    top, count, ecount = i.head_values(head)
    read = cursor.read
    if head is None or read >= top:
        return Unread()
    if cursor.exact:
        seq, eseq = (cursor.seq, cursor.eseq) if read else (0, 0)
    else:  # marked before the head reached the cursor: now it has
        seq, eseq = await _counts_at(t, channel, read)
    own = own_everyone = direct = 0
    marks_head = 0 if summary is None else int(summary["marks_head"]["N"])
    if marks_head > read:  # the user's marks after the cursor, up to the head read
        marks = await t.query_all(
            {
                "TableName": t.unread,
                "KeyConditionExpression": "#c = :c AND #sk BETWEEN :lo AND :hi",
                "ExpressionAttributeNames": {
                    "#c": "channel",
                    "#sk": "sk",
                    "#o": "own",
                    "#e": "everyone",
                },
                "ExpressionAttributeValues": {
                    ":c": {"S": channel},
                    ":lo": {"S": i.mark_sk(user, read + 1)},
                    ":hi": {"S": i.mark_sk(user, top)},
                },
                "ProjectionExpression": "#o, #e",
            }
        )
        for mark in marks:
            is_own, is_everyone = mark["own"]["BOOL"], mark["everyone"]["BOOL"]
            own += is_own
            own_everyone += is_own and is_everyone
            direct += not is_own and not is_everyone
    return Unread(
        messages=max(0, count - seq - own),
        mentions=max(0, ecount - eseq - own_everyone + direct),
    )


async def unread(t: ReadTables, user: str, channels: Sequence[str]) -> dict[str, Unread]:
    """One ``BatchGetItem`` of the cursor, head and summary items (100 keys a request, in
    parallel), then per channel the queries its items call for, in parallel."""
    keys: list[tuple[str, i.Item]] = []
    for ch in channels:
        keys.append((t.cursors, i.cursor_key(ch, user)))
        keys.append((t.unread, i.head_key(ch)))
        keys.append((t.unread, i.unread_key(ch, i.summary_sk(user))))
    found = await t.batch_get(keys, {t.cursors: _CURSOR, t.unread: _SUMMARY_OR_HEAD})
    cursors: dict[str, i.Item] = {}
    heads: dict[str, i.Item] = {}
    summaries: dict[str, i.Item] = {}
    for table, item in found:
        ch = item["channel"]["S"]
        if table == t.cursors:
            cursors[ch] = item
        elif item["sk"]["S"] == i.HEAD:
            heads[ch] = item
        else:
            summaries[ch] = item
    counts = await parallel(
        [
            functools.partial(
                _unread_one,
                t,
                user,
                ch,
                cursor=i.CursorState(cursors.get(ch)),
                head=heads.get(ch),
                summary=summaries.get(ch),
            )
            for ch in channels
        ]
    )
    return dict(zip(channels, counts, strict=True))
