"""Who may do what: the domain's rules as pure functions (no I/O, no clock).

A store reads the facts a rule needs (roles, memberships, the channel), calls the rule,
and writes only if it passed, in one atomic step that also asserts the facts it read (see
``gateway.store.domain``). Routes call the ``can_*`` predicates to filter what a caller
sees. ``role`` is ``None`` for a user who is not (or no longer) a member of the workspace:
such a user may do nothing in it, whatever channel memberships they still hold.

The rules:

* **Roles** rank ``owner > admin > member > guest``. Only the owner and admins
  (*managers*) add, remove and re-role members, and only members ranked strictly below
  themselves, to roles strictly below their own: an admin manages members and guests, the
  owner also admins. Nobody is made owner (a workspace has exactly one, its creator) and
  the owner can be neither removed nor re-roled. Anyone but the owner may leave.
* **Channels.** Non-guests create channels; managers update them (topic, archive,
  position). A public channel is visible to every non-guest member; a private channel,
  and any channel for a guest, only to its members; a DM only to its participants.
* **Joining.** A non-guest may join a public channel; a manager may join any channel.
  Adding someone else takes a manager, or a non-guest member of the channel adding a
  non-guest. Nobody joins an archived channel. Leaving is always allowed for oneself;
  removing someone else takes a manager.
* **DMs.** Participants are fixed when the conversation is opened: nobody joins or
  leaves it. Every participant must be a member of the workspace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.domain.errors import Conflict, Forbidden, NotFound
from gateway.domain.model import Channel, ChannelKind, Role

__all__ = [
    "RANK",
    "can_post",
    "can_see_channel",
    "can_update_user",
    "check_add_member",
    "check_create_channel",
    "check_join_channel",
    "check_leave_channel",
    "check_open_dm",
    "check_remove_member",
    "check_set_role",
    "check_update_channel",
    "is_manager",
    "visible_channels",
]

RANK: Mapping[Role, int] = {Role.OWNER: 3, Role.ADMIN: 2, Role.MEMBER: 1, Role.GUEST: 0}


def is_manager(role: Role | None) -> bool:
    """The owner and admins manage members and channels."""
    return role in (Role.OWNER, Role.ADMIN)


def _require_member(role: Role | None) -> Role:
    if role is None:
        raise Forbidden("not a member of this workspace")
    return role


def _require_manager(role: Role | None, what: str) -> Role:
    role = _require_member(role)
    if not is_manager(role):
        raise Forbidden(f"only the owner and admins may {what}")
    return role


# -- workspace members ---------------------------------------------------------------------


def check_add_member(actor_role: Role | None, new_role: Role) -> None:
    """May a member with ``actor_role`` add someone as ``new_role``?"""
    actor = _require_manager(actor_role, "add members")
    if new_role is Role.OWNER:
        raise Forbidden("a workspace has one owner; nobody is added as owner")
    if RANK[new_role] >= RANK[actor]:
        raise Forbidden(f"an {actor} may not add an {new_role}")


def check_set_role(actor_role: Role | None, target_role: Role | None, new_role: Role) -> None:
    """May ``actor_role`` change a member from ``target_role`` to ``new_role``?"""
    actor = _require_manager(actor_role, "change roles")
    if target_role is None:
        raise NotFound("not a member of this workspace", reason="member")
    if target_role is Role.OWNER or new_role is Role.OWNER:
        raise Forbidden("the owner's role is fixed and nobody else becomes owner")
    if RANK[target_role] >= RANK[actor] or RANK[new_role] >= RANK[actor]:
        raise Forbidden(f"an {actor} may not change an {target_role} into an {new_role}")


def check_remove_member(
    actor_role: Role | None, target_role: Role | None, *, self_removal: bool
) -> None:
    """May ``actor_role`` remove a member whose role is ``target_role`` (``None``: not a
    member; the caller then reports that nothing changed)?"""
    if target_role is Role.OWNER:
        raise Forbidden("the owner cannot leave or be removed")
    if self_removal:
        return
    actor = _require_manager(actor_role, "remove members")
    if target_role is not None and RANK[target_role] >= RANK[actor]:
        raise Forbidden(f"an {actor} may not remove an {target_role}")


# -- channels ------------------------------------------------------------------------------


def check_create_channel(actor_role: Role | None) -> None:
    if _require_member(actor_role) is Role.GUEST:
        raise Forbidden("guests may not create channels")


def check_update_channel(actor_role: Role | None, channel: Channel) -> None:
    """Topic, archived flag and position are managed by the owner and admins; DMs by nobody."""
    _require_manager(actor_role, "update channels")
    if channel.kind is ChannelKind.DM:
        raise Forbidden("a direct conversation has no topic, position or archive flag")


def check_join_channel(
    channel: Channel,
    *,
    actor_role: Role | None,
    actor_in_channel: bool,
    target_role: Role | None,
    self_join: bool,
) -> None:
    """May the actor make the target (itself if ``self_join``) a member of ``channel``?"""
    if channel.kind is ChannelKind.DM:
        raise Forbidden("the participants of a direct conversation are fixed")
    actor = _require_member(actor_role)
    if target_role is None:
        raise NotFound("the user is not a member of this workspace", reason="member")
    if channel.archived:
        raise Conflict(f"channel {channel.name!r} is archived", reason="archived")
    if is_manager(actor):
        return
    if actor is Role.GUEST:
        raise Forbidden("guests are added to channels by the owner or an admin")
    if self_join:
        if channel.kind is not ChannelKind.PUBLIC:
            raise Forbidden("a private channel is joined by invitation")
        return
    if not actor_in_channel:
        raise Forbidden("only members of a channel (or admins) add others to it")
    if target_role is Role.GUEST:
        raise Forbidden("guests are added to channels by the owner or an admin")


def check_leave_channel(channel: Channel, *, actor_role: Role | None, self_leave: bool) -> None:
    """May the actor remove the target (itself if ``self_leave``) from ``channel``?"""
    if channel.kind is ChannelKind.DM:
        raise Forbidden("the participants of a direct conversation are fixed")
    if not self_leave:
        _require_manager(actor_role, "remove others from channels")


def check_open_dm(opener: str, roles: Mapping[str, Role | None]) -> None:
    """``roles`` maps every participant (the opener included) to its workspace role."""
    if roles.get(opener) is None:
        raise Forbidden("not a member of this workspace")
    strangers = sorted(user for user, role in roles.items() if role is None)
    if strangers:
        raise NotFound(f"not members of this workspace: {strangers}", reason="member")


def can_see_channel(role: Role | None, channel: Channel, *, is_member: bool) -> bool:
    """Whether a workspace member with ``role`` may see (and read) ``channel``."""
    if role is None:
        return False
    if channel.kind is ChannelKind.PUBLIC and role is not Role.GUEST:
        return True
    return is_member


def can_post(role: Role | None, channel: Channel, *, is_member: bool) -> bool:
    """Sending takes membership, visibility, and a channel that is not archived."""
    return is_member and not channel.archived and can_see_channel(role, channel, is_member=True)


def visible_channels(
    role: Role | None, channels: Iterable[Channel], member_of: Iterable[str]
) -> list[Channel]:
    """The ``channels`` a member with ``role`` sees, given the channel ids it belongs to."""
    mine = set(member_of)
    return [c for c in channels if can_see_channel(role, c, is_member=c.id in mine)]


def can_update_user(actor: str, user: str) -> bool:
    """A profile is edited by its user only (the store does not check this: no state)."""
    return actor == user
