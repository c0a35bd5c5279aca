"""DynamoDB items of the domain store: keys, item codecs, transaction parts.

One table (``<prefix>-domain``, key ``pk`` + ``sk``, see ``docs/data-model.md``):

=================================  ===================  ========================
item                               ``pk``               ``sk``
=================================  ===================  ========================
user                               ``U#<user>``         ``#U``
email key (copy of the user)       ``E#<email>``        ``#E``
workspace                          ``W#<ws>``           ``#W``
member (workspace side)            ``W#<ws>``           ``M#<user>``
membership (user side)             ``U#<user>``         ``W#<ws>``
channel name key                   ``W#<ws>``           ``N#<name>``
channel listing entry (a copy)     ``W#<ws>``           ``P#<position:07d>#<name>``
channel (any kind; DMs: + ids)     ``C#<channel>``      ``#C``
channel member (channel side)      ``C#<channel>``      ``M#<user>``
channel membership (user side)     ``U#<user>``         ``C#<ws>#<channel>``
=================================  ===================  ========================

Ids after a fixed-width prefix are taken back verbatim (user ids may hold ``#``);
workspace ids and channel ids never hold ``#``, so ``C#<ws>#<channel>`` splits at the
first ``#`` after the prefix. Pure functions, no I/O.

A transaction part is a :class:`Part`: the request dict ``TransactWriteItems`` takes, and
the *kind* of item it writes (``None`` for a ``ConditionCheck``), which the store's
fault hook sees (``tests/contract/domain_factories.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.domain.model import (
    Channel,
    ChannelKind,
    ChannelMember,
    Conversation,
    Member,
    Role,
    User,
    Workspace,
)

Item = dict[str, Any]  # DynamoDB's typed JSON: {"attr": {"S": "..."}}
Key = tuple[str, str]  # (pk, sk)

# Kinds of written items (the fault hook's vocabulary).
USER, EMAIL, WORKSPACE, WORKSPACE_MEMBER = "user", "email", "workspace", "workspace_member"
CHANNEL_NAME, CHANNEL_ENTRY, CHANNEL = "channel_name", "channel_entry", "channel"
CHANNEL_MEMBER, CONVERSATION = "channel_member", "conversation"  # DM channel item


@dataclasses.dataclass(frozen=True)
class Part:
    """One item of a ``TransactWriteItems`` request."""

    request: dict[str, Any]
    kind: str | None = None  # what it writes; None for a ConditionCheck


# -- keys ----------------------------------------------------------------------------------


def user_key(user: str) -> Key:
    return f"U#{user}", "#U"


def email_key(email: str) -> Key:
    return f"E#{email}", "#E"


def workspace_key(workspace: str) -> Key:
    return f"W#{workspace}", "#W"


def member_key(workspace: str, user: str) -> Key:
    return f"W#{workspace}", f"M#{user}"


def membership_key(workspace: str, user: str) -> Key:
    return f"U#{user}", f"W#{workspace}"


def name_key(workspace: str, name: str) -> Key:
    return f"W#{workspace}", f"N#{name}"


def entry_sk(position: int, name: str) -> str:
    return f"P#{position:07d}#{name}"


def entry_key(channel: Channel) -> Key:
    return f"W#{channel.workspace}", entry_sk(channel.position, channel.name)


def channel_key(channel: str) -> Key:
    return f"C#{channel}", "#C"


def channel_member_key(channel: str, user: str) -> Key:
    return f"C#{channel}", f"M#{user}"


def user_channel_sk(workspace: str, channel: str) -> str:
    return f"C#{workspace}#{channel}"


def user_channel_key(workspace: str, channel: str, user: str) -> Key:
    return f"U#{user}", user_channel_sk(workspace, channel)


def key(k: Key) -> Item:
    """The ``Key`` parameter of a request for ``(pk, sk)``."""
    return {"pk": {"S": k[0]}, "sk": {"S": k[1]}}


def key_of(item: Item) -> Key:
    return item["pk"]["S"], item["sk"]["S"]


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


# -- items ---------------------------------------------------------------------------------


def _user_attrs(u: User) -> Item:
    attrs: Item = {
        "email": _s(u.email),
        "display_name": _s(u.display_name),
        "status_text": _s(u.status_text),
        "created_ms": _n(u.created_ms),
        "version": _n(u.version),
    }
    if u.avatar_url is not None:
        attrs["avatar_url"] = _s(u.avatar_url)
    return attrs


def user_item(u: User) -> Item:
    return key(user_key(u.id)) | _user_attrs(u)


def email_item(u: User) -> Item:
    return key(email_key(u.email)) | {"user": _s(u.id)} | _user_attrs(u)


def item_user(item: Item) -> User:
    """The user of a user item or of an email key (its copy)."""
    uid = item["user"]["S"] if "user" in item else item["pk"]["S"][2:]
    avatar = item.get("avatar_url")
    return User(
        id=uid,
        email=item["email"]["S"],
        display_name=item["display_name"]["S"],
        avatar_url=None if avatar is None else avatar["S"],
        status_text=item["status_text"]["S"],
        created_ms=int(item["created_ms"]["N"]),
        version=int(item["version"]["N"]),
    )


def workspace_item(w: Workspace) -> Item:
    return key(workspace_key(w.id)) | {
        "name": _s(w.name),
        "owner": _s(w.owner),
        "created_ms": _n(w.created_ms),
        "version": _n(w.version),
    }


def item_workspace(item: Item) -> Workspace:
    return Workspace(
        id=item["pk"]["S"][2:],
        name=item["name"]["S"],
        owner=item["owner"]["S"],
        created_ms=int(item["created_ms"]["N"]),
        version=int(item["version"]["N"]),
    )


def member_items(m: Member) -> tuple[Item, Item]:
    """The workspace side and the user side of a membership."""
    attrs = {"role": _s(m.role.value), "joined_ms": _n(m.joined_ms)}
    return (
        key(member_key(m.workspace, m.user)) | attrs,
        key(membership_key(m.workspace, m.user)) | attrs,
    )


def item_member(item: Item) -> Member:
    """The member of either side's item."""
    pk, sk = key_of(item)
    if sk.startswith("M#"):  # W#<ws> / M#<user>
        workspace, user = pk[2:], sk[2:]
    else:  # U#<user> / W#<ws>
        workspace, user = sk[2:], pk[2:]
    return Member(
        workspace=workspace,
        user=user,
        role=Role(item["role"]["S"]),
        joined_ms=int(item["joined_ms"]["N"]),
    )


def item_role(item: Item | None) -> Role | None:
    return None if item is None else Role(item["role"]["S"])


def _channel_attrs(c: Channel) -> Item:
    return {
        "workspace": _s(c.workspace),
        "name": _s(c.name),
        "kind": _s(c.kind.value),
        "topic": _s(c.topic),
        "archived": {"BOOL": c.archived},
        "position": _n(c.position),
        "created_by": _s(c.created_by),
        "created_ms": _n(c.created_ms),
        "version": _n(c.version),
    }


def channel_item(c: Channel, participants: tuple[str, ...] = ()) -> Item:
    item = key(channel_key(c.id)) | _channel_attrs(c)
    if participants:
        item["participants"] = {"L": [_s(p) for p in participants]}
    return item


def entry_item(c: Channel) -> Item:
    return key(entry_key(c)) | {"channel": _s(c.id)} | _channel_attrs(c)


def item_channel(item: Item) -> Channel:
    """The channel of a channel item or of a listing entry (its copy)."""
    cid = item["channel"]["S"] if "channel" in item else item["pk"]["S"][2:]
    return Channel(
        id=cid,
        workspace=item["workspace"]["S"],
        name=item["name"]["S"],
        kind=ChannelKind(item["kind"]["S"]),
        topic=item["topic"]["S"],
        archived=bool(item["archived"]["BOOL"]),
        position=int(item["position"]["N"]),
        created_by=item["created_by"]["S"],
        created_ms=int(item["created_ms"]["N"]),
        version=int(item["version"]["N"]),
    )


def item_conversation(item: Item) -> Conversation | None:
    """The conversation of a DM's channel item; None for another channel."""
    if item["kind"]["S"] != ChannelKind.DM.value or "participants" not in item:
        return None
    return Conversation(
        id=item["pk"]["S"][2:],
        workspace=item["workspace"]["S"],
        participants=tuple(p["S"] for p in item["participants"]["L"]),
        created_by=item["created_by"]["S"],
        created_ms=int(item["created_ms"]["N"]),
    )


def channel_member_items(channel: Channel, user: str, joined_ms: int) -> tuple[Item, Item]:
    """The channel side and the user side of a channel membership."""
    attrs = {"joined_ms": _n(joined_ms)}
    return (
        key(channel_member_key(channel.id, user)) | attrs,
        key(user_channel_key(channel.workspace, channel.id, user)) | attrs,
    )


def item_channel_member(item: Item) -> ChannelMember:
    """The channel member of either side's item."""
    pk, sk = key_of(item)
    if pk.startswith("C#"):  # C#<channel> / M#<user>
        channel, user = pk[2:], sk[2:]
    else:  # U#<user> / C#<ws>#<channel>
        channel, user = sk[2:].split("#", 1)[1], pk[2:]
    return ChannelMember(channel=channel, user=user, joined_ms=int(item["joined_ms"]["N"]))


def name_item(c: Channel) -> Item:
    return key(name_key(c.workspace, c.name)) | {"channel": _s(c.id)}


# -- transaction parts ---------------------------------------------------------------------

Condition = tuple[str, dict[str, str], Item]
"""A condition of a transaction part: expression, attribute names, attribute values."""

ABSENT: Condition = ("attribute_not_exists(#pk)", {"#pk": "pk"}, {})
PRESENT: Condition = ("attribute_exists(#pk)", {"#pk": "pk"}, {})


def _condition(cond: Condition | None) -> dict[str, Any]:
    if cond is None:
        return {}
    expression, names, values = cond
    request: dict[str, Any] = {
        "ConditionExpression": expression,
        "ExpressionAttributeNames": names,
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    if values:
        request["ExpressionAttributeValues"] = values
    return request


def put(table: str, kind: str, item: Item, cond: Condition | None = None) -> Part:
    return Part({"Put": {"TableName": table, "Item": item} | _condition(cond)}, kind)


def delete(table: str, kind: str, k: Key, cond: Condition | None = None) -> Part:
    return Part({"Delete": {"TableName": table, "Key": key(k)} | _condition(cond)}, kind)


def check(table: str, k: Key, cond: Condition) -> Part:
    return Part({"ConditionCheck": {"TableName": table, "Key": key(k)} | _condition(cond)})


def check_exists(table: str, k: Key) -> Part:
    return check(table, k, PRESENT)


def check_role(table: str, workspace: str, user: str, role: Role) -> Part:
    """Assert that ``user`` is a member of ``workspace`` with ``role``."""
    return check(table, member_key(workspace, user), role_is(role))


def role_is(role: Role) -> Condition:
    return "#r = :r", {"#r": "role"}, {":r": _s(role.value)}


def version_is(version: int) -> Condition:
    return "#v = :v", {"#v": "version"}, {":v": _n(version)}


def user_is(user: str) -> Condition:
    """An email key's ``user`` is ``user``."""
    return "#u = :u", {"#u": "user"}, {":u": _s(user)}


NOT_ARCHIVED: Condition = ("#a = :f", {"#a": "archived"}, {":f": {"BOOL": False}})


def set_role(table: str, k: Key, old: Role, new: Role) -> Part:
    """Update a member item's role from ``old`` (asserted) to ``new``."""
    request = {
        "TableName": table,
        "Key": key(k),
        "UpdateExpression": "SET #r = :new",
        "ConditionExpression": "#r = :r",
        "ExpressionAttributeNames": {"#r": "role"},
        "ExpressionAttributeValues": {":r": _s(old.value), ":new": _s(new.value)},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    return Part({"Update": request}, WORKSPACE_MEMBER)
