"""Who may do what: ``gateway.domain.rules``, role by role (pure: no store)."""

from __future__ import annotations

import itertools

import pytest

from gateway.domain import rules
from gateway.domain.errors import Conflict, DomainError, Forbidden, NotFound
from gateway.domain.model import Channel, ChannelKind, Role

OWNER, ADMIN, MEMBER, GUEST = Role.OWNER, Role.ADMIN, Role.MEMBER, Role.GUEST
ROLES: list[Role | None] = [OWNER, ADMIN, MEMBER, GUEST, None]


def channel(kind: ChannelKind = ChannelKind.PUBLIC, *, archived: bool = False) -> Channel:
    return Channel(
        id="ch.1",
        workspace="acme",
        name="general",
        kind=kind,
        archived=archived,
        created_by="u1",
        created_ms=0,
    )


PUBLIC, PRIVATE, DM = (channel(k) for k in ChannelKind)


def outcome(fn: object, *args: object, **kwargs: object) -> str:
    """``"ok"`` or the domain code the rule refused with."""
    try:
        fn(*args, **kwargs)  # type: ignore[operator]
    except DomainError as exc:
        return exc.domain_code
    return "ok"


def test_managers() -> None:
    assert [rules.is_manager(r) for r in ROLES] == [True, True, False, False, False]
    assert sorted(Role, key=lambda r: -rules.RANK[r]) == [OWNER, ADMIN, MEMBER, GUEST]


# -- members -----------------------------------------------------------------------------

ADD_MEMBER = {  # actor -> roles it may add
    OWNER: {ADMIN, MEMBER, GUEST},
    ADMIN: {MEMBER, GUEST},
    MEMBER: set(),
    GUEST: set(),
    None: set(),
}


@pytest.mark.parametrize(("actor", "new"), list(itertools.product(ROLES, list(Role))))
def test_add_member(actor: Role | None, new: Role) -> None:
    expected = "ok" if new in ADD_MEMBER[actor] else "forbidden"
    assert outcome(rules.check_add_member, actor, new) == expected


@pytest.mark.parametrize(
    ("actor", "target", "new"), list(itertools.product(ROLES, ROLES, list(Role)))
)
def test_set_role(actor: Role | None, target: Role | None, new: Role) -> None:
    got = outcome(rules.check_set_role, actor, target, new)
    if actor not in (OWNER, ADMIN):
        assert got == "forbidden"
    elif target is None:
        assert got == "not_found"
    elif OWNER in (target, new):
        assert got == "forbidden"
    elif actor is ADMIN:
        assert got == (
            "ok" if target in (MEMBER, GUEST) and new in (MEMBER, GUEST) else "forbidden"
        )
    else:
        assert got == "ok"


@pytest.mark.parametrize(("actor", "target"), list(itertools.product(ROLES, ROLES)))
def test_remove_member(actor: Role | None, target: Role | None) -> None:
    got = outcome(rules.check_remove_member, actor, target, self_removal=False)
    if target is OWNER or actor not in (OWNER, ADMIN):
        assert got == "forbidden"
    elif target is None:
        assert got == "ok"  # nothing to remove: the store reports False
    elif actor is ADMIN:
        assert got == ("ok" if target in (MEMBER, GUEST) else "forbidden")
    else:
        assert got == "ok"


@pytest.mark.parametrize("role", ROLES)
def test_anyone_but_the_owner_may_leave(role: Role | None) -> None:
    got = outcome(rules.check_remove_member, role, role, self_removal=True)
    assert got == ("forbidden" if role is OWNER else "ok")


# -- channels ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_create_and_update_channels(role: Role | None) -> None:
    assert outcome(rules.check_create_channel, role) == (
        "ok" if role in (OWNER, ADMIN, MEMBER) else "forbidden"
    )
    for c in (PUBLIC, PRIVATE):
        assert outcome(rules.check_update_channel, role, c) == (
            "ok" if role in (OWNER, ADMIN) else "forbidden"
        )
    assert outcome(rules.check_update_channel, role, DM) == "forbidden"


def join(
    c: Channel, actor: Role | None, target: Role | None, *, in_channel: bool, self_join: bool
) -> str:
    return outcome(
        rules.check_join_channel,
        c,
        actor_role=actor,
        actor_in_channel=in_channel,
        target_role=target,
        self_join=self_join,
    )


@pytest.mark.parametrize(
    ("c", "role", "expected"),
    [
        (PUBLIC, OWNER, "ok"),
        (PUBLIC, ADMIN, "ok"),
        (PUBLIC, MEMBER, "ok"),
        (PUBLIC, GUEST, "forbidden"),
        (PUBLIC, None, "forbidden"),
        (PRIVATE, OWNER, "ok"),
        (PRIVATE, ADMIN, "ok"),
        (PRIVATE, MEMBER, "forbidden"),
        (PRIVATE, GUEST, "forbidden"),
        (DM, OWNER, "forbidden"),
        (DM, MEMBER, "forbidden"),
    ],
)
def test_self_join(c: Channel, role: Role | None, expected: str) -> None:
    assert join(c, role, role, in_channel=False, self_join=True) == expected


@pytest.mark.parametrize(
    ("c", "actor", "in_channel", "target", "expected"),
    [
        (PUBLIC, ADMIN, False, GUEST, "ok"),  # managers add anyone
        (PRIVATE, OWNER, False, MEMBER, "ok"),
        (PUBLIC, MEMBER, True, MEMBER, "ok"),  # channel members add non-guests
        (PRIVATE, MEMBER, True, ADMIN, "ok"),
        (PUBLIC, MEMBER, True, GUEST, "forbidden"),  # ... but not guests
        (PUBLIC, MEMBER, False, MEMBER, "forbidden"),  # not in the channel
        (PRIVATE, MEMBER, False, MEMBER, "forbidden"),
        (PUBLIC, GUEST, True, MEMBER, "forbidden"),  # guests add nobody
        (PUBLIC, None, True, MEMBER, "forbidden"),  # no longer a workspace member
        (PUBLIC, ADMIN, False, None, "not_found"),  # target not in the workspace
        (DM, OWNER, True, MEMBER, "forbidden"),  # DM participants are fixed
    ],
)
def test_adding_others(
    c: Channel, actor: Role | None, in_channel: bool, target: Role | None, expected: str
) -> None:
    assert join(c, actor, target, in_channel=in_channel, self_join=False) == expected


@pytest.mark.parametrize("role", [OWNER, ADMIN, MEMBER])
def test_nobody_joins_an_archived_channel(role: Role) -> None:
    archived = channel(archived=True)
    assert join(archived, role, role, in_channel=False, self_join=True) == "conflict"
    with pytest.raises(Conflict) as info:
        rules.check_join_channel(
            archived, actor_role=role, actor_in_channel=True, target_role=MEMBER, self_join=False
        )
    assert info.value.reason == "archived"


@pytest.mark.parametrize("role", ROLES)
def test_leave(role: Role | None) -> None:
    for c in (PUBLIC, PRIVATE):
        assert outcome(rules.check_leave_channel, c, actor_role=role, self_leave=True) == "ok"
        assert outcome(rules.check_leave_channel, c, actor_role=role, self_leave=False) == (
            "ok" if role in (OWNER, ADMIN) else "forbidden"
        )
    assert outcome(rules.check_leave_channel, DM, actor_role=role, self_leave=True) == "forbidden"


def test_open_dm() -> None:
    rules.check_open_dm("a", {"a": MEMBER, "b": GUEST, "c": OWNER})
    with pytest.raises(Forbidden):
        rules.check_open_dm("a", {"a": None, "b": MEMBER})
    with pytest.raises(NotFound) as info:
        rules.check_open_dm("a", {"a": MEMBER, "c": None, "b": None})
    assert info.value.reason == "member" and "['b', 'c']" in info.value.message


# -- visibility --------------------------------------------------------------------------

SEE: dict[
    tuple[ChannelKind, Role | None], bool
] = {  # (kind, role) -> visible without membership; with membership everything but None
    (ChannelKind.PUBLIC, OWNER): True,
    (ChannelKind.PUBLIC, ADMIN): True,
    (ChannelKind.PUBLIC, MEMBER): True,
    (ChannelKind.PUBLIC, GUEST): False,
}


@pytest.mark.parametrize(("kind", "role"), list(itertools.product(list(ChannelKind), ROLES)))
def test_can_see_channel(kind: ChannelKind, role: Role | None) -> None:
    c = channel(kind)
    assert rules.can_see_channel(role, c, is_member=False) is SEE.get((kind, role), False)
    assert rules.can_see_channel(role, c, is_member=True) is (role is not None)


def test_can_post() -> None:
    assert rules.can_post(MEMBER, PUBLIC, is_member=True)
    assert rules.can_post(GUEST, PRIVATE, is_member=True)
    assert not rules.can_post(MEMBER, PUBLIC, is_member=False)  # subscribe-only: join first
    assert not rules.can_post(None, PUBLIC, is_member=True)
    assert not rules.can_post(OWNER, channel(archived=True), is_member=True)


def test_visible_channels() -> None:
    pub = channel(ChannelKind.PUBLIC)
    priv = Channel(
        id="ch.2", workspace="acme", name="secret", kind=ChannelKind.PRIVATE,
        created_by="u1", created_ms=0,
    )  # fmt: skip
    both = [pub, priv]
    assert rules.visible_channels(MEMBER, both, []) == [pub]
    assert rules.visible_channels(MEMBER, both, ["ch.2"]) == both
    assert rules.visible_channels(GUEST, both, []) == []
    assert rules.visible_channels(GUEST, both, ["ch.1"]) == [pub]
    assert rules.visible_channels(ADMIN, both, []) == [pub]  # private needs membership
    assert rules.visible_channels(None, both, ["ch.1", "ch.2"]) == []


def test_profiles_are_edited_by_their_user() -> None:
    assert rules.can_update_user("u1", "u1")
    assert not rules.can_update_user("u2", "u1")
