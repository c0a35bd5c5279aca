"""DynamoDB items and requests of the message-state store: keys, codecs, expressions.

Two tables (:data:`gateway.store.tables.MESSAGE_STATE_TABLES`, ``docs/data-model.md``):

* ``<prefix>-message-state``: one item per changed message, key ``channel`` (S) +
  ``offset`` (N), every attribute of :class:`~gateway.store.message_state.MessageState`
  (``body`` absent while the message is as posted, ``reactions`` a map emoji -> count,
  ``participants`` a list). Every write sets every attribute (``if_not_exists`` for those
  it does not change), so a stored item is always complete.
* ``<prefix>-reactions``: one item per (message, user, emoji), key ``channel`` (S) +
  ``rk`` (S) = ``<offset>#<len(user)>:<user>#<emoji>``, nothing else.

The request builders return the parameters of one ``UpdateItem``/``PutItem`` or the body of
one ``TransactWriteItems`` part. Their expressions use the placeholders of :data:`NAMES`
and the values given; :func:`expressions` keeps only the names and values an expression
uses (DynamoDB refuses unused ones). Pure functions, no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.store.message_state import MAX_PARTICIPANTS, MessageState

Item = dict[str, Any]  # DynamoDB's typed JSON: {"attr": {"S": "..."}}

NAMES = {
    "#c": "channel",
    "#a": "author",
    "#v": "version",
    "#b": "body",
    "#d": "deleted",
    "#m": "edited_ms",
    "#r": "reactions",
    "#n": "replies",
    "#l": "last_reply_ms",
    "#p": "participants",
    "#op": "op",
    "#rk": "rk",
}
_TOKEN = re.compile(r"[#:][A-Za-z0-9_]+")

_FALSE = {"BOOL": False}
_ZERO = {"N": "0"}
_ONE = {"N": "1"}
_NO_MAP: Item = {"M": {}}
_NO_LIST: Item = {"L": []}
_NO_OP = {"S": ""}

# The attributes a write that creates the item must set when it does not set them itself.
_DEFAULTS = (
    "#a = if_not_exists(#a, :a), #d = if_not_exists(#d, :f), #r = if_not_exists(#r, :nomap),"
    " #n = if_not_exists(#n, :zero), #l = if_not_exists(#l, :zero),"
    " #p = if_not_exists(#p, :nolist)"
)
_DEFAULT_VALUES: Item = {":f": _FALSE, ":nomap": _NO_MAP, ":zero": _ZERO, ":nolist": _NO_LIST}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


# -- keys ----------------------------------------------------------------------------------


def state_key(channel: str, offset: int) -> Item:
    return {"channel": _s(channel), "offset": _n(offset)}


def message_prefix(offset: int) -> str:
    """The ``rk`` prefix of every reaction to message ``offset``."""
    return f"{offset}#"


def user_prefix(offset: int, user: str) -> str:
    """The ``rk`` prefix of ``user``'s reactions to message ``offset`` (the user id is
    length-prefixed: ids may hold ``#``)."""
    return f"{offset}#{len(user)}:{user}#"


def reaction_key(channel: str, offset: int, user: str, emoji: str) -> Item:
    return {"channel": _s(channel), "rk": _s(user_prefix(offset, user) + emoji)}


# -- the state item ------------------------------------------------------------------------


def state_item(s: MessageState) -> Item:
    item: Item = state_key(s.channel, s.offset) | {
        "author": _s(s.author),
        "version": _n(s.version),
        "deleted": {"BOOL": s.deleted},
        "edited_ms": _n(s.edited_ms),
        "reactions": {"M": {emoji: _n(n) for emoji, n in s.reactions.items()}},
        "replies": _n(s.replies),
        "last_reply_ms": _n(s.last_reply_ms),
        "participants": {"L": [_s(p) for p in s.participants]},
        "op": _s(s.op),
    }
    if s.body is not None:
        item["body"] = _s(s.body)
    return item


def item_state(item: Item) -> MessageState:
    """The state of a state item. Attributes missing from it read as a new item's (every
    write sets them all, but a reader must not fail on an item some other writer left
    incomplete)."""
    body = item.get("body")
    counts = {emoji: int(v["N"]) for emoji, v in item.get("reactions", _NO_MAP)["M"].items()}
    return MessageState(
        channel=item["channel"]["S"],
        offset=int(item["offset"]["N"]),
        author=item["author"]["S"],
        version=int(item.get("version", _ONE)["N"]),
        body=None if body is None else body["S"],
        deleted=bool(item.get("deleted", _FALSE)["BOOL"]),
        edited_ms=int(item.get("edited_ms", _ZERO)["N"]),
        reactions={emoji: n for emoji, n in counts.items() if n > 0},
        replies=int(item.get("replies", _ZERO)["N"]),
        last_reply_ms=int(item.get("last_reply_ms", _ZERO)["N"]),
        participants=tuple(p["S"] for p in item.get("participants", _NO_LIST)["L"]),
        op=item.get("op", _NO_OP)["S"],
    )


# -- expressions ---------------------------------------------------------------------------


def expressions(values: Item, *, names: dict[str, str] | None = None, **exprs: str) -> Item:
    """Request parameters: the given expressions (``UpdateExpression=...``,
    ``ConditionExpression=...``) with the names (:data:`NAMES`, plus ``names``) and
    ``values`` they use, and no others."""
    used = {t for expr in exprs.values() for t in _TOKEN.findall(expr)}
    every = NAMES if names is None else NAMES | names
    params: Item = dict(exprs)
    params["ExpressionAttributeNames"] = {k: v for k, v in every.items() if k in used}
    kept = {k: v for k, v in values.items() if k in used}
    if kept:
        params["ExpressionAttributeValues"] = kept
    return params


def edit_update(*, author: str, expected: int, body: str, op: str, now_ms: int) -> Item:
    """``UpdateItem``: the edit, on condition that the item is at ``expected``, not deleted,
    by ``author`` and not already this ``op`` (an absent item is version 1)."""
    condition = "(#v = :v AND #d = :f AND #a = :a AND #op <> :op)"
    if expected == 1:
        condition += " OR attribute_not_exists(#c)"
    values = _DEFAULT_VALUES | {
        ":v": _n(expected),
        ":v1": _n(expected + 1),
        ":b": _s(body),
        ":now": _n(now_ms),
        ":op": _s(op),
        ":a": _s(author),
    }
    return expressions(
        values,
        UpdateExpression=f"SET #v = :v1, #b = :b, #m = :now, #op = :op, {_DEFAULTS}",
        ConditionExpression=condition,
    )


def delete_update(*, author: str, op: str, now_ms: int) -> Item:
    """``UpdateItem``: the tombstone, on condition that the item is absent or by ``author``
    and not deleted."""
    values = _DEFAULT_VALUES | {
        ":t": {"BOOL": True},
        ":empty": _s(""),
        ":one": _ONE,
        ":now": _n(now_ms),
        ":op": _s(op),
        ":a": _s(author),
    }
    update = (
        "SET #d = :t, #b = :empty, #r = :nomap, #v = if_not_exists(#v, :one) + :one,"
        " #m = :now, #op = :op, #a = if_not_exists(#a, :a), #n = if_not_exists(#n, :zero),"
        " #l = if_not_exists(#l, :zero), #p = if_not_exists(#p, :nolist)"
    )
    return expressions(
        values,
        UpdateExpression=update,
        ConditionExpression="attribute_not_exists(#c) OR (#d = :f AND #a = :a)",
    )


def reply_update(*, author: str, new: MessageState, user: str, append: bool) -> Item:
    """``UpdateItem``: raise ``replies`` and ``last_reply_ms`` to ``new``'s (on condition
    that they are not above them) and append ``user`` to ``participants`` (``append``; on
    condition that it is absent and the list has room). Participants only grow, so a list
    not written is still right."""
    update = "SET #n = :n, #l = :l"
    condition = "#a = :a AND #n <= :n AND #l <= :l"
    values: Item = {
        ":a": _s(author),
        ":n": _n(new.replies),
        ":l": _n(new.last_reply_ms),
        ":u": {"L": [_s(user)]},
        ":user": _s(user),
        ":max": _n(MAX_PARTICIPANTS),
    }
    if append:
        update += ", #p = list_append(#p, :u)"
        condition += " AND NOT contains(#p, :user) AND size(#p) < :max"
    return expressions(values, UpdateExpression=update, ConditionExpression=condition)


# -- reaction transactions -----------------------------------------------------------------

_ON_FAILURE = {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}


def put_absent(table: str, item: Item, attribute: str) -> dict[str, Any]:
    """A ``Put`` part that creates ``item`` if no item has its key (``attribute`` is a key
    attribute's placeholder, e.g. ``"#c"``)."""
    cond = expressions({}, ConditionExpression=f"attribute_not_exists({attribute})")
    return {"Put": {"TableName": table, "Item": item} | cond | _ON_FAILURE}


def delete_present(table: str, key: Item) -> dict[str, Any]:
    """A ``Delete`` part that removes the reaction item under ``key``, if it exists."""
    cond = expressions({}, ConditionExpression="attribute_exists(#rk)")
    return {"Delete": {"TableName": table, "Key": key} | cond | _ON_FAILURE}


_LIVE = "attribute_exists(#c) AND #d = :f AND #a = :a"


def count_update(
    table: str, key: Item, *, author: str, emoji: str, add: bool, max_kinds: int, count: int
) -> dict[str, Any]:
    """An ``Update`` part moving ``emoji``'s count on a stored, live state item by ``author``.

    Adding: +1, on condition that the emoji is there or there are fewer than ``max_kinds``.
    Removing: the emoji dropped if ``count`` (the count read) is 1 (condition: it still is),
    else -1 (condition: it is above 1)."""
    values: Item = {":f": _FALSE, ":a": _s(author), ":zero": _ZERO, ":one": _ONE}
    values[":max"] = _n(max_kinds)
    if add:
        update = "SET #r.#e = if_not_exists(#r.#e, :zero) + :one"
        condition = f"{_LIVE} AND (attribute_exists(#r.#e) OR size(#r) < :max)"
    elif count <= 1:
        update, condition = "REMOVE #r.#e", f"{_LIVE} AND #r.#e = :one"
    else:
        update, condition = "SET #r.#e = #r.#e - :one", f"{_LIVE} AND #r.#e > :one"
    params = expressions(
        values, names={"#e": emoji}, UpdateExpression=update, ConditionExpression=condition
    )
    return {"Update": {"TableName": table, "Key": key} | params | _ON_FAILURE}
