"""The records of the chat domain: users, workspaces, members, channels, conversations.

Frozen msgspec Structs; every limit is a ``Meta`` on the field's type, so it is enforced
wherever a record is decoded (a REST body) or built with :func:`validated` (the stores
build every record they write that way). Constructing a Struct directly does **not**
check limits (msgspec validates on decode/convert only).

Pure helpers only: no I/O. Ids are generated here (random or, for direct conversations,
derived from the participants) so that every store adapter names things the same way.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections.abc import Iterable
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

from gateway.domain.errors import InvalidField, LimitExceeded
from gateway.protocol.frames import CHANNEL_PATTERN

__all__ = [
    "MAX_DM_PARTICIPANTS",
    "MIN_DM_PARTICIPANTS",
    "AvatarUrl",
    "Channel",
    "ChannelId",
    "ChannelKind",
    "ChannelMember",
    "ChannelName",
    "ChannelPosition",
    "Conversation",
    "DisplayName",
    "Email",
    "Member",
    "Role",
    "StatusText",
    "Topic",
    "User",
    "UserId",
    "Workspace",
    "WorkspaceId",
    "WorkspaceName",
    "check_channel_name",
    "check_email",
    "check_participants",
    "dm_channel_id",
    "dm_channel_name",
    "new_channel_id",
    "new_workspace_id",
    "normalize_email",
    "revalidated",
    "validated",
]

MIN_DM_PARTICIPANTS = 2  # the opener and at least one other user
MAX_DM_PARTICIPANTS = 9  # group DMs: the opener and up to eight others

_END = r"$(?!\n)"  # "$" alone also matches before a final newline
_NO_CONTROL = r"[^\x00-\x1f\x7f]"

UserId = Annotated[str, Meta(min_length=1, max_length=128, pattern=f"^{_NO_CONTROL}+{_END}")]
"""The auth subject (the token's ``sub`` claim): 1-128 characters, no control characters."""
WorkspaceId = Annotated[str, Meta(pattern=f"^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}{_END}")]
ChannelId = Annotated[str, Meta(pattern=CHANNEL_PATTERN, max_length=128)]
"""The bus log name of the channel (``gateway.protocol.frames.CHANNEL_PATTERN``)."""
Email = Annotated[
    str,
    Meta(
        max_length=254,
        pattern=(
            r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
            r"@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
            + _END
        ),
    ),
]
"""Lower-case ASCII ``local@domain.tld`` (see :func:`normalize_email`)."""
DisplayName = Annotated[str, Meta(min_length=1, max_length=80, pattern=f"^{_NO_CONTROL}+{_END}")]
StatusText = Annotated[str, Meta(max_length=140, pattern=f"^{_NO_CONTROL}*{_END}")]
AvatarUrl = Annotated[str, Meta(max_length=2048, pattern=rf"^https://[^\s\x00-\x1f\x7f]+{_END}")]
WorkspaceName = Annotated[str, Meta(min_length=1, max_length=80, pattern=f"^{_NO_CONTROL}+{_END}")]
ChannelName = Annotated[str, Meta(pattern=f"^[a-z0-9][a-z0-9_-]{{0,79}}{_END}")]
"""Slack-style: 1-80 of lower-case letters, digits, ``-`` and ``_``."""
Topic = Annotated[str, Meta(max_length=250, pattern=f"^{_NO_CONTROL}*{_END}")]
ChannelPosition = Annotated[int, Meta(ge=0, le=1_000_000)]
Millis = Annotated[int, Meta(ge=0)]
Version = Annotated[int, Meta(ge=1)]


class Role(enum.StrEnum):
    """A member's role in a workspace, strongest first (see ``gateway.domain.rules``)."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    GUEST = "guest"


class ChannelKind(enum.StrEnum):
    PUBLIC = "public"  # any non-guest member of the workspace may see and join it
    PRIVATE = "private"  # seen and joined only through membership
    DM = "dm"  # a direct conversation: participants fixed when it is opened


class User(msgspec.Struct, frozen=True, kw_only=True):
    id: UserId
    email: Email  # unique across users, compared lower-cased
    display_name: DisplayName
    avatar_url: AvatarUrl | None = None
    status_text: StatusText = ""
    created_ms: Millis
    version: Version = 1


class Workspace(msgspec.Struct, frozen=True, kw_only=True):
    id: WorkspaceId
    name: WorkspaceName
    owner: UserId  # the one member whose role is ``owner``
    created_ms: Millis
    version: Version = 1


class Member(msgspec.Struct, frozen=True, kw_only=True):
    workspace: WorkspaceId
    user: UserId
    role: Role
    joined_ms: Millis


class Channel(msgspec.Struct, frozen=True, kw_only=True):
    id: ChannelId  # the bus log name
    workspace: WorkspaceId
    name: ChannelName  # unique per workspace among public and private channels
    kind: ChannelKind
    topic: Topic = ""
    archived: bool = False
    position: ChannelPosition = 0  # listing order: (position, name)
    created_by: UserId
    created_ms: Millis
    version: Version = 1


class ChannelMember(msgspec.Struct, frozen=True, kw_only=True):
    channel: ChannelId
    user: UserId
    joined_ms: Millis


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    """A direct conversation: its channel (kind ``dm``) has exactly these members, forever."""

    id: ChannelId  # dm_channel_id(workspace, participants)
    workspace: WorkspaceId
    participants: Annotated[
        tuple[UserId, ...], Meta(min_length=MIN_DM_PARTICIPANTS, max_length=MAX_DM_PARTICIPANTS)
    ]  # sorted, distinct
    created_by: UserId
    created_ms: Millis


# -- validation ----------------------------------------------------------------------------

S = TypeVar("S", bound=msgspec.Struct)
_AT = re.compile(r"at `\$\.(\w+)")


def validated(cls: type[S], **fields: Any) -> S:
    """``cls(**fields)`` with every ``Meta`` limit checked; :class:`InvalidField` if not."""
    try:
        return msgspec.convert(fields, cls)
    except msgspec.ValidationError as exc:
        match = _AT.search(str(exc))
        raise InvalidField(str(exc), field=match.group(1) if match else None) from None


def revalidated(record: S) -> S:
    """``record`` checked against its limits (after a ``msgspec.structs.replace``)."""
    return validated(type(record), **msgspec.structs.asdict(record))


def normalize_email(raw: str) -> str:
    """The form emails are stored and compared in: surrounding blanks dropped, lower-case."""
    return raw.strip().lower()


def check_email(raw: str) -> str:
    """The normalized ``raw``, or :class:`InvalidField` (field ``email``)."""
    email = normalize_email(raw)
    try:
        return msgspec.convert(email, Email)
    except msgspec.ValidationError as exc:
        raise InvalidField(f"email: {exc}", field="email") from None


def check_channel_name(raw: str) -> str:
    """A name for a new public or private channel (``dm-`` is reserved for DMs)."""
    try:
        name = msgspec.convert(raw, ChannelName)
    except msgspec.ValidationError as exc:
        raise InvalidField(f"channel name: {exc}", field="name") from None
    if name.startswith("dm-"):
        raise InvalidField("channel names starting with 'dm-' are reserved", field="name")
    return name


def check_participants(opener: str, others: Iterable[str]) -> tuple[str, ...]:
    """The sorted, distinct participants of a DM opened by ``opener`` with ``others``.

    :class:`InvalidField` for a malformed user id or no one but the opener;
    :class:`LimitExceeded` for more than :data:`MAX_DM_PARTICIPANTS`.
    """
    if isinstance(others, str):
        raise InvalidField("participants are a list of user ids", field="participants")
    people = sorted({opener, *others})
    for user in people:
        try:
            msgspec.convert(user, UserId)
        except msgspec.ValidationError as exc:
            raise InvalidField(f"participant {user!r}: {exc}", field="participants") from None
    if len(people) < MIN_DM_PARTICIPANTS:
        raise InvalidField("a direct conversation needs another participant", field="participants")
    if len(people) > MAX_DM_PARTICIPANTS:
        raise LimitExceeded(
            f"a direct conversation has at most {MAX_DM_PARTICIPANTS} participants, "
            f"not {len(people)}",
            reason="participants",
        )
    return tuple(people)


# -- ids -----------------------------------------------------------------------------------


def new_workspace_id() -> str:
    return "w" + secrets.token_hex(8)


def new_channel_id() -> str:
    """A fresh bus log name for a public or private channel: ``ch.<24 hex>``."""
    return "ch." + secrets.token_hex(12)


def dm_channel_id(workspace: str, participants: Iterable[str]) -> str:
    """``dm.<32 hex>``: the same for the same workspace and participant *set*, in any order.

    SHA-256 over the workspace and the sorted, distinct user ids, NUL-separated (user ids
    hold no control characters, so the encoding is unambiguous).
    """
    material = "\x00".join([workspace, *sorted(set(participants))]).encode()
    return "dm." + hashlib.sha256(material).hexdigest()[:32]


def dm_channel_name(channel_id: str) -> str:
    """The name a DM's channel record carries: ``dm-<hash>`` (reserved for DMs)."""
    return "dm-" + channel_id.removeprefix("dm.")
