"""Who may read and post on a channel: memberships for domain channels, the token otherwise.

Channel names fall in two families:

* **Domain channels** (``ch.<24 hex>`` public/private channels, ``dm.<32 hex>`` direct
  conversations, ``ws.<workspace>`` a workspace's event log, ``u.<user>`` a user's own
  log of read cursors and notifications, readable by that user only): membership in the
  domain store decides, with the rules of :mod:`gateway.domain.rules`. The token's
  ``channels`` claim never grants them, not even ``*``.
* **Free channels** (any other name): the token's ``channels`` glob claim decides, as
  for a plain pub/sub deployment without the chat domain.

A thread's log, ``<channel>:t<offset of the parent>``, grants what its channel grants;
the ``:t<digits>`` suffix is reserved for thread logs.

A subscription is the capability: it is checked once, on subscribe (and on resume), and
withdrawn at once on every node when the membership goes (``Node.kick``). Posting needs
``POST`` access; a workspace member previewing a public channel it has not joined gets
``READ`` only and is told to join first.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from gateway.auth import Identity
from gateway.domain import rules
from gateway.store.domain import DomainStore

__all__ = [
    "Access",
    "Grant",
    "channel_access",
    "is_domain_channel",
    "thread_log",
    "thread_parent",
    "user_channel",
    "workspace_channel",
]

_DOMAIN = re.compile(r"^(?:ch\.[0-9a-f]{24}|dm\.[0-9a-f]{32})\Z")
_THREAD = re.compile(r"^(.+):t([1-9][0-9]{0,15})\Z")
RESERVED_PREFIXES = ("ch.", "dm.", "ws.", "u.")


class Access(enum.IntEnum):
    NONE = 0
    READ = 1  # may subscribe and read history
    POST = 2  # may also publish and send typing


@dataclass(frozen=True, slots=True)
class Grant:
    access: Access
    workspace: str | None = None  # the workspace of a domain channel
    reason: str = ""  # why access is short of POST, for the error message


def is_domain_channel(channel: str) -> bool:
    return _DOMAIN.match(channel) is not None


def thread_log(channel: str, parent_offset: int) -> str:
    """The log of the thread under the message at ``parent_offset`` of ``channel``."""
    return f"{channel}:t{parent_offset}"


def thread_parent(channel: str) -> tuple[str, int] | None:
    """``(channel, parent offset)`` if ``channel`` names a thread's log, else None."""
    m = _THREAD.match(channel)
    return None if m is None else (m.group(1), int(m.group(2)))


def user_channel(user: str) -> str:
    """The name of a user's own log (read cursors synced across devices, notifications)."""
    return f"u.{user}"


def workspace_channel(workspace: str) -> str:
    """The name of a workspace's event log (channel and member changes)."""
    return f"ws.{workspace}"


async def channel_access(domain: DomainStore, identity: Identity, channel: str) -> Grant:
    """What ``identity`` may do on ``channel`` now. Raises StoreUnavailable if the domain
    store cannot answer (the caller reports it as retryable)."""
    user = identity.user
    thread = thread_parent(channel)
    if thread is not None:  # a thread's log: whatever its channel's log grants
        channel = thread[0]
        if thread_parent(channel) is not None:
            return Grant(Access.NONE, reason="threads have no threads")
    if channel.startswith("u."):  # a user's own log: read cursors, notifications
        if channel[2:] == user:
            return Grant(Access.READ, reason="your own log is read-only")
        return Grant(Access.NONE, reason="another user's log")
    if channel.startswith("ws."):
        workspace = channel[3:]
        member = await domain.get_member(workspace, user)
        if member is None:
            return Grant(Access.NONE, reason="not a member of this workspace")
        return Grant(Access.READ, workspace, reason="a workspace's event log is read-only")
    if not is_domain_channel(channel):
        if channel.startswith(RESERVED_PREFIXES):
            return Grant(Access.NONE, reason="no such channel")
        if identity.can_access(channel):
            return Grant(Access.POST)
        return Grant(Access.NONE, reason="not allowed on this channel")
    record = await domain.get_channel(channel)
    if record is None:
        return Grant(Access.NONE, reason="no such channel")
    member = await domain.get_member(record.workspace, user)
    role = None if member is None else member.role
    if role is None:
        return Grant(Access.NONE, record.workspace, reason="no such channel")
    joined = await domain.is_channel_member(channel, user)
    if rules.can_post(role, record, is_member=joined):
        return Grant(Access.POST, record.workspace)
    if rules.can_see_channel(role, record, is_member=joined):
        why = "the channel is archived" if record.archived else "join the channel to post"
        return Grant(Access.READ, record.workspace, reason=why)
    return Grant(Access.NONE, record.workspace, reason="no such channel")
