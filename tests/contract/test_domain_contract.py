"""The DomainStore contract, part 1: users, workspaces, members.

Parts 2-4: ``test_domain_contract_paging.py`` (paging, cursors, durability),
``test_domain_contract_channels.py`` (channels, joining), ``test_domain_contract_dms.py``
(direct conversations, member listings). Every test runs against every factory of
``tests/contract/domain_factories.py``; their fixtures are imported below.
"""

from __future__ import annotations

import pytest
import trio

from gateway.domain.errors import (
    AlreadyExists,
    DomainError,
    Forbidden,
    InvalidField,
    NotFound,
    StaleVersion,
)
from gateway.domain.model import Member, Role
from gateway.errors import ErrorCode, StoreUnavailable
from tests.contract.domain_factories import (
    DomainHandle,
    domain_fixture,  # noqa: F401
    domain_opener_fixture,  # noqa: F401
    populate,
    refused,
)

# -- users -------------------------------------------------------------------------------


async def test_create_and_get_user(domain: DomainHandle) -> None:
    s = domain.store
    user = await s.create_user(
        "u1", "  Ann.Lee@Example.COM ", " Ann ", avatar_url="https://x.test/a.png"
    )
    assert (user.id, user.email, user.display_name, user.version) == (
        "u1",
        "ann.lee@example.com",
        "Ann",
        1,
    )
    assert user.created_ms > 0
    assert await s.get_user("u1") == user
    assert await s.get_user_by_email("ANN.LEE@example.com") == user
    assert await s.get_user("nobody") is None
    assert await s.get_user_by_email("nobody@example.com") is None


async def test_duplicate_user_id_and_email_are_refused(domain: DomainHandle) -> None:
    s = domain.store
    await s.create_user("u1", "ann@example.com", "Ann")
    with refused(AlreadyExists, "already_exists", reason="user"):
        await s.create_user("u1", "other@example.com", "Ann")
    with refused(AlreadyExists, "already_exists", reason="email"):
        await s.create_user("u2", "ANN@Example.com", "Ann 2")
    assert await s.get_user("u2") is None
    assert (await s.get_user_by_email("other@example.com")) is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"email": "a b@example.com"}, "email"),
        ({"email": "x" * 250 + "@example.com"}, "email"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "   "}, "display_name"),
        ({"display_name": "x" * 81}, "display_name"),
        ({"display_name": "bell\x07"}, "display_name"),
        ({"user_id": ""}, "id"),
        ({"user_id": "u" * 129}, "id"),
        ({"user_id": "line\nbreak"}, "id"),
        ({"avatar_url": "http://x.test/a.png"}, "avatar_url"),
        ({"avatar_url": "https://" + "x" * 2041}, "avatar_url"),
        ({"status_text": "s" * 141}, "status_text"),
    ],
)
async def test_user_limits(domain: DomainHandle, kwargs: dict[str, str], field: str) -> None:
    args = {"user_id": "u1", "email": "ann@example.com", "display_name": "Ann", **kwargs}
    user_id, email, name = args.pop("user_id"), args.pop("email"), args.pop("display_name")
    with pytest.raises(InvalidField) as info:
        await domain.store.create_user(user_id, email, name, **args)
    assert info.value.field == field
    assert info.value.code is ErrorCode.INVALID_FIELD
    assert await domain.store.get_user("u1") is None


async def test_limits_at_the_edge_are_accepted(domain: DomainHandle) -> None:
    user = await domain.store.create_user(
        "u" * 128, "x" * 64 + "@example.com", "n" * 80, status_text="s" * 140
    )
    assert user.display_name == "n" * 80


async def test_get_user_by_malformed_email_is_invalid(domain: DomainHandle) -> None:
    with pytest.raises(InvalidField):
        await domain.store.get_user_by_email("no at sign")


async def test_update_user_bumps_the_version(domain: DomainHandle) -> None:
    s = domain.store
    await s.create_user("u1", "ann@example.com", "Ann", avatar_url="https://x.test/a")
    user = await s.update_user("u1", expected_version=1, display_name="Annie", status_text="hi")
    assert (user.display_name, user.status_text, user.version) == ("Annie", "hi", 2)
    user = await s.update_user("u1", expected_version=2, avatar_url=None)
    assert user.avatar_url is None and user.version == 3
    assert await s.get_user("u1") == user


async def test_update_user_with_a_stale_version_changes_nothing(domain: DomainHandle) -> None:
    s = domain.store
    await s.create_user("u1", "ann@example.com", "Ann")
    await s.update_user("u1", expected_version=1, display_name="Annie")
    with pytest.raises(StaleVersion) as info:
        await s.update_user("u1", expected_version=1, display_name="Stale")
    assert info.value.current == 2 and info.value.domain_code == "stale_version"
    user = await s.get_user("u1")
    assert user is not None and (user.display_name, user.version) == ("Annie", 2)


async def test_update_unknown_user(domain: DomainHandle) -> None:
    with refused(NotFound, "not_found", reason="user"):
        await domain.store.update_user("ghost", expected_version=1, display_name="Boo")


async def test_update_user_limits(domain: DomainHandle) -> None:
    s = domain.store
    await s.create_user("u1", "ann@example.com", "Ann")
    with pytest.raises(InvalidField) as info:
        await s.update_user("u1", expected_version=1, display_name="x" * 81)
    assert info.value.field == "display_name"
    with pytest.raises(InvalidField):
        await s.update_user("u1", expected_version=1, email="broken")
    assert (await s.get_user("u1")) is not None
    assert (await s.get_user("u1")).version == 1  # type: ignore[union-attr]


async def test_email_change_moves_the_unique_key(domain: DomainHandle) -> None:
    s = domain.store
    await s.create_user("u1", "ann@example.com", "Ann")
    await s.create_user("u2", "bob@example.com", "Bob")
    with refused(AlreadyExists, "already_exists", reason="email"):
        await s.update_user("u1", expected_version=1, email="BOB@example.com")
    assert (await s.get_user_by_email("ann@example.com")) is not None
    user = await s.update_user("u1", expected_version=1, email="Ann.New@Example.com")
    assert user.email == "ann.new@example.com"
    assert await s.get_user_by_email("ann@example.com") is None
    assert await s.get_user_by_email("ann.new@example.com") == user
    await s.create_user("u3", "ann@example.com", "Another Ann")  # the old email is free
    same = await s.update_user("u1", expected_version=2, email="ANN.NEW@example.com")
    assert same.email == user.email and same.version == 3


async def test_concurrent_creates_with_one_email_let_one_win(domain: DomainHandle) -> None:
    outcomes: list[str] = []

    async def create(i: int) -> None:
        try:
            email = f"{'SAME' if i % 2 else 'same'}@example.com"
            await domain.store.create_user(f"u{i}", email, "S")
            outcomes.append("ok")
        except AlreadyExists:
            outcomes.append("taken")

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(create, i)
    assert sorted(outcomes) == ["ok"] + ["taken"] * 9


# -- workspaces --------------------------------------------------------------------------


async def test_create_workspace_makes_the_owner_a_member(domain: DomainHandle) -> None:
    s = domain.store
    await s.create_user("alice", "alice@example.com", "Alice")
    ws = await s.create_workspace(" Acme Inc ", owner="alice")
    assert (ws.name, ws.owner, ws.version) == ("Acme Inc", "alice", 1)
    assert await s.get_workspace(ws.id) == ws
    member = await s.get_member(ws.id, "alice")
    assert member == Member(workspace=ws.id, user="alice", role=Role.OWNER, joined_ms=ws.created_ms)
    page = await s.list_user_workspaces("alice", limit=10)
    assert page.items == (member,) and page.cursor is None
    assert await s.get_workspace("nope") is None


async def test_create_workspace_refusals_store_nothing(domain: DomainHandle) -> None:
    s = domain.store
    with refused(NotFound, "not_found", reason="user"):
        await s.create_workspace("Acme", owner="ghost", workspace_id="acme")
    assert await s.get_workspace("acme") is None
    await s.create_user("alice", "alice@example.com", "Alice")
    await s.create_workspace("Acme", owner="alice", workspace_id="acme")
    with refused(AlreadyExists, "already_exists", reason="workspace"):
        await s.create_workspace("Again", owner="alice", workspace_id="acme")
    for name in ("", "  ", "x" * 81, "tab\there"):
        with pytest.raises(InvalidField) as info:
            await s.create_workspace(name, owner="alice")
        assert info.value.field == "name"
    with pytest.raises(InvalidField):
        await s.create_workspace("Acme", owner="alice", workspace_id="bad id!")
    assert len((await s.list_user_workspaces("alice", limit=10)).items) == 1


async def test_no_partial_workspace_when_the_membership_write_fails(domain: DomainHandle) -> None:
    s = domain.store
    await s.create_user("alice", "alice@example.com", "Alice")
    await domain.faults.fail_writes("workspace_member")
    with pytest.raises(StoreUnavailable):
        await s.create_workspace("Acme", owner="alice", workspace_id="acme")
    assert await s.get_workspace("acme") is None
    assert await s.get_member("acme", "alice") is None
    assert (await s.list_user_workspaces("alice", limit=10)).items == ()
    await domain.faults.heal()
    assert (await s.create_workspace("Acme", owner="alice", workspace_id="acme")).id == "acme"
    assert await s.get_member("acme", "alice") is not None


# -- members -----------------------------------------------------------------------------


async def test_managers_add_members_and_double_adds_change_nothing(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    first = await s.get_member(w.ws, "carol")
    assert first is not None and first.role is Role.MEMBER
    assert await s.add_member(w.ws, "carol", Role.GUEST, actor="alice") is False
    assert await s.get_member(w.ws, "carol") == first  # role and joined_ms kept
    assert await s.add_member(w.ws, "frank", Role.GUEST, actor="bob") is True  # admin adds
    assert (await s.get_member(w.ws, "frank")).role is Role.GUEST  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("actor", "role"),
    [
        ("carol", Role.MEMBER),  # a member
        ("dave", Role.GUEST),  # a guest
        ("zed", Role.MEMBER),  # a member of another workspace
        ("frank", Role.MEMBER),  # in no workspace
        ("bob", Role.ADMIN),  # an admin adding an admin
        ("alice", Role.OWNER),  # nobody is added as owner
        ("bob", Role.OWNER),
    ],
)
async def test_who_may_not_add_members(domain: DomainHandle, actor: str, role: Role) -> None:
    s = domain.store
    w = await populate(s)
    with refused(Forbidden, "forbidden"):
        await s.add_member(w.ws, "frank", role, actor=actor)
    assert await s.get_member(w.ws, "frank") is None


async def test_owner_adds_an_admin(domain: DomainHandle) -> None:
    w = await populate(domain.store)
    assert await domain.store.add_member(w.ws, "frank", Role.ADMIN, actor="alice")


async def test_add_member_unknown_ids(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    with refused(NotFound, "not_found", reason="user"):
        await s.add_member(w.ws, "ghost", Role.MEMBER, actor="alice")
    with refused(NotFound, "not_found", reason="workspace"):
        await s.add_member("nowhere", "frank", Role.MEMBER, actor="alice")
    with pytest.raises(InvalidField):
        await s.add_member(w.ws, "frank", "superuser", actor="alice")  # type: ignore[arg-type]


async def test_remove_member_and_double_remove(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    assert await s.remove_member(w.ws, "carol", actor="bob") is True
    assert await s.remove_member(w.ws, "carol", actor="bob") is False
    assert await s.get_member(w.ws, "carol") is None
    assert (await s.list_user_workspaces("carol", limit=10)).items == ()
    assert await s.remove_member(w.ws, "erin", actor="erin") is True  # leaving
    assert await s.remove_member(w.ws, "erin", actor="erin") is False


@pytest.mark.parametrize(
    ("target", "actor"),
    [
        ("alice", "alice"),  # the owner cannot leave
        ("alice", "bob"),  # nor be removed
        ("carol", "erin"),  # a member removing a member
        ("carol", "dave"),  # a guest removing a member
        ("bob", "bob2"),  # an admin removing an admin
        ("carol", "owen"),  # the owner of another workspace
        ("carol", "zed"),  # a member of another workspace
    ],
)
async def test_who_may_not_remove_members(domain: DomainHandle, target: str, actor: str) -> None:
    s = domain.store
    w = await populate(s)
    await s.create_user("bob2", "bob2@example.com", "Bob 2")
    await s.add_member(w.ws, "bob2", Role.ADMIN, actor="alice")
    with refused(Forbidden, "forbidden"):
        await s.remove_member(w.ws, target, actor=actor)
    assert await s.get_member(w.ws, target) is not None


async def test_set_role(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    member = await s.set_role(w.ws, "carol", Role.ADMIN, actor="alice")
    assert member.role is Role.ADMIN
    assert await s.get_member(w.ws, "carol") == member
    (mine,) = (await s.list_user_workspaces("carol", limit=10)).items
    assert mine.role is Role.ADMIN
    assert await s.set_role(w.ws, "dave", Role.GUEST, actor="bob") == await s.get_member(
        w.ws, "dave"
    )  # no change
    assert (await s.set_role(w.ws, "dave", Role.MEMBER, actor="bob")).role is Role.MEMBER


@pytest.mark.parametrize(
    ("target", "role", "actor", "error"),
    [
        ("carol", Role.ADMIN, "bob", Forbidden),  # only the owner makes admins
        ("bob", Role.MEMBER, "bob", Forbidden),  # an admin demoting itself
        ("alice", Role.ADMIN, "alice", Forbidden),  # the owner's role is fixed
        ("carol", Role.OWNER, "alice", Forbidden),  # nobody becomes owner
        ("dave", Role.MEMBER, "carol", Forbidden),  # members do not manage
        ("dave", Role.MEMBER, "owen", Forbidden),  # another workspace's owner
        ("zed", Role.ADMIN, "alice", NotFound),  # a member of another workspace
        ("ghost", Role.MEMBER, "alice", NotFound),
    ],
)
async def test_set_role_refusals(
    domain: DomainHandle, target: str, role: Role, actor: str, error: type[DomainError]
) -> None:
    s = domain.store
    w = await populate(s)
    before = await s.get_member(w.ws, target)
    with pytest.raises(error):
        await s.set_role(w.ws, target, role, actor=actor)
    assert await s.get_member(w.ws, target) == before
