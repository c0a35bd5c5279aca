"""DynamoDB operations of the read-state store: notifications (validated input).

Expiry is judged by the store's clock on every request: DynamoDB's TTL deletes expired
items late (typically within days), so a write's condition and every read's filter test
``expires_ms`` against ``now``; an expired item is as if absent until TTL removes it.
The requests are those of ``docs/data-model.md`` ("ReadStateStore").
"""

from __future__ import annotations

import functools
from typing import Any

from gateway.domain.errors import BadCursor
from gateway.store import _read_state_dynamo_items as i
from gateway.store._cursor import CursorCodec
from gateway.store._read_state_dynamo_table import ReadTables, parallel
from gateway.store.domain import Page
from gateway.store.read_state import Notification
from gateway.store.tables import NOTIFICATIONS_BY_CREATED, NOTIFICATIONS_UNREAD

_MIN_REFILL = 100  # items a Query asks for after a page the expiry filter shortened


async def notify(t: ReadTables, n: Notification, now: int) -> bool:
    """One ``PutItem`` unless it is expired on arrival; on condition that no unexpired
    one with its id is stored."""
    if n.expires_ms <= now:
        return False  # as if stored and gone
    return await t.put(
        t.notifications,
        i.notification_item(n),
        {
            "ConditionExpression": "attribute_not_exists(#id) OR #x <= :now",
            "ExpressionAttributeNames": {"#id": "id", "#x": "expires_ms"},
            "ExpressionAttributeValues": {":now": {"N": str(now)}},
        },
    )


def _scope(user: str, unread_only: bool) -> str:
    return f"notifications\x00{user}\x00{int(unread_only)}"  # as the SQLite adapter's


def _listing(t: ReadTables, user: str, unread_only: bool, now: int) -> dict[str, Any]:
    """The ``Query`` of ``user``'s unexpired notifications, newest first, on the LSI
    ``by_created`` (or the sparse ``unread``)."""
    index, attribute = (
        (NOTIFICATIONS_UNREAD, "uk") if unread_only else (NOTIFICATIONS_BY_CREATED, "ck")
    )
    return {
        "TableName": t.notifications,
        "IndexName": index,
        "KeyConditionExpression": "#u = :u",
        "FilterExpression": "#x > :now",
        "ExpressionAttributeNames": {"#u": "user", "#x": "expires_ms", "#k": attribute},
        "ExpressionAttributeValues": {":u": {"S": user}, ":now": {"N": str(now)}},
        "ScanIndexForward": False,
    }


async def list_notifications(
    t: ReadTables,
    codec: CursorCodec,
    user: str,
    limit: int,
    *,
    cursor: str | None,
    unread_only: bool,
    now: int,
) -> Page[Notification]:
    """``limit + 1`` unexpired items (continuing a page the filter shortened) after the
    cursor's ``(created_ms, id)``: the key condition ``ck < :after``."""
    scope = _scope(user, unread_only)
    params = _listing(t, user, unread_only, now)
    if cursor is None:
        del params["ExpressionAttributeNames"]["#k"]
    else:
        created, nid = codec.decode(scope, cursor, 2)
        if not isinstance(created, int) or not isinstance(nid, str) or created < 0:
            raise BadCursor()
        params["KeyConditionExpression"] += " AND #k < :after"
        params["ExpressionAttributeValues"][":after"] = {"S": i.sort_key(created, nid)}
    want = limit + 1
    items: list[i.Item] = []
    while len(items) < want:
        ask = want - len(items)
        if "ExclusiveStartKey" in params:  # the filter left expired ones out: ask more
            ask = max(ask, _MIN_REFILL)
        got, last = await t.query({**params, "Limit": ask})
        items += got
        if last is None:
            break
        params["ExclusiveStartKey"] = last
    found = tuple(i.item_notification(item) for item in items[:limit])
    if len(items) <= limit:
        return Page(items=found)
    return Page(items=found, cursor=codec.encode(scope, (found[-1].created_ms, found[-1].id)))


async def _mark(t: ReadTables, user: str, nid: str, now_ms: int, now: int) -> bool:
    """One conditional ``UpdateItem``: read now, out of the ``unread`` LSI."""
    applied, _ = await t.update(
        t.notifications,
        {"user": {"S": user}, "id": {"S": nid}},
        {
            "UpdateExpression": "SET #r = :true, #rm = :ms REMOVE #uk",
            "ConditionExpression": "#r = :false AND #x > :now",
            "ExpressionAttributeNames": {
                "#r": "read",
                "#rm": "read_ms",
                "#uk": "uk",
                "#x": "expires_ms",
            },
            "ExpressionAttributeValues": {
                ":true": {"BOOL": True},
                ":false": {"BOOL": False},
                ":ms": {"N": str(now_ms)},
                ":now": {"N": str(now)},
            },
        },
        returns="NONE",
    )
    return applied


async def _mark_all(t: ReadTables, user: str, ids: list[str], now_ms: int, now: int) -> int:
    done = await parallel([functools.partial(_mark, t, user, nid, now_ms, now) for nid in ids])
    return sum(done)


async def mark_notifications_read(
    t: ReadTables, user: str, ids: list[str] | None, now_ms: int, now: int
) -> int:
    """The ids' updates in parallel; ``None`` (all): page through the ``unread`` LSI
    (ids only), each page's updates in parallel (not atomic across pages; a retry skips
    the ones already read)."""
    if ids is not None:
        return await _mark_all(t, user, ids, now_ms, now)
    params = _listing(t, user, True, now)
    params["ExpressionAttributeNames"]["#id"] = "id"
    params["ExpressionAttributeNames"].pop("#k")
    params["ProjectionExpression"] = "#id"
    marked = 0
    while True:
        items, last = await t.query(params)
        marked += await _mark_all(t, user, [item["id"]["S"] for item in items], now_ms, now)
        if last is None:
            return marked
        params["ExclusiveStartKey"] = last
