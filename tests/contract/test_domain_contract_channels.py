"""The DomainStore contract, part 3: channels, joining and leaving them.

Every test runs against every factory of ``tests/contract/domain_factories.py``; the
world (``populate``): workspace ``acme`` with alice (owner), bob (admin), carol and erin
(members), dave (guest); workspace ``other`` with owen (owner) and zed; frank in neither.
"""

from __future__ import annotations

import re

import pytest
import trio

from gateway.domain import rules
from gateway.domain.errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    Forbidden,
    InvalidField,
    NotFound,
    StaleVersion,
)
from gateway.domain.model import ChannelKind
from gateway.errors import StoreUnavailable
from gateway.protocol.frames import CHANNEL_PATTERN
from tests.contract.domain_factories import (
    DomainHandle,
    channel_names,
    domain_fixture,  # noqa: F401
    domain_opener_fixture,  # noqa: F401
    members_of,
    populate,
    setup,
)

PUBLIC, PRIVATE, DM = ChannelKind.PUBLIC, ChannelKind.PRIVATE, ChannelKind.DM


# -- channels ----------------------------------------------------------------------------


async def test_create_channel_makes_the_creator_a_member(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    c = await s.create_channel(w.ws, "general", PUBLIC, actor="carol", topic=" hi ", position=3)
    assert (c.workspace, c.name, c.kind, c.topic, c.position, c.version) == (
        w.ws, "general", PUBLIC, "hi", 3, 1,
    )  # fmt: skip
    assert (c.created_by, c.archived) == ("carol", False)
    assert re.match(CHANNEL_PATTERN, c.id)  # usable as a bus log name
    assert await s.get_channel(c.id) == c
    assert await s.is_channel_member(c.id, "carol")
    assert await members_of(s, c.id) == ["carol"]
    assert await s.get_channel("ch.nope") is None
    assert await s.get_conversation(c.id) is None


async def test_channel_names_are_unique_per_workspace(domain: DomainHandle) -> None:
    s = domain.store
    w, _, _ = await setup(s)
    for name, kind in (("general", PUBLIC), ("general", PRIVATE), ("secret", PUBLIC)):
        with pytest.raises(AlreadyExists) as info:
            await s.create_channel(w.ws, name, kind, actor="alice")
        assert info.value.reason == "channel_name"
    assert await channel_names(s, w.ws) == ["general", "secret"]
    other = await s.create_channel(w.ws2, "general", PUBLIC, actor="zed")  # another workspace
    assert other.workspace == w.ws2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "General"}, "name"),
        ({"name": "with space"}, "name"),
        ({"name": "-dash-first"}, "name"),
        ({"name": "x" * 81}, "name"),
        ({"name": "dm-reserved"}, "name"),
        ({"name": "ok\n"}, "name"),
        ({"topic": "t" * 251}, "topic"),
        ({"topic": "nul\x00"}, "topic"),
        ({"position": -1}, "position"),
        ({"position": 1_000_001}, "position"),
        ({"kind": DM}, "kind"),
    ],
)
async def test_channel_limits(domain: DomainHandle, kwargs: dict[str, object], field: str) -> None:
    s = domain.store
    w = await populate(s)
    args: dict[str, object] = {"name": "fine", "kind": PUBLIC, **kwargs}
    name, kind = args.pop("name"), args.pop("kind")
    with pytest.raises(InvalidField) as info:
        await s.create_channel(w.ws, name, kind, actor="alice", **args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert await channel_names(s, w.ws) == []


async def test_channel_limits_at_the_edge(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    c = await s.create_channel(
        w.ws, "x" * 80, PRIVATE, actor="alice", topic="t" * 250, position=1_000_000
    )
    assert (len(c.name), len(c.topic), c.position) == (80, 250, 1_000_000)


@pytest.mark.parametrize(
    ("workspace", "actor", "error"),
    [
        ("acme", "dave", Forbidden),  # guests do not create channels
        ("acme", "frank", Forbidden),  # not a member
        ("acme", "zed", Forbidden),  # a member of another workspace
        ("nowhere", "alice", NotFound),
    ],
)
async def test_who_may_not_create_channels(
    domain: DomainHandle, workspace: str, actor: str, error: type[DomainError]
) -> None:
    s = domain.store
    await populate(s)
    with pytest.raises(error):
        await s.create_channel(workspace, "new", PUBLIC, actor=actor)
    assert await channel_names(s, "acme") == []


async def test_list_channels_by_position_then_name(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    for name, position in (("d", 1), ("b", 2), ("a", 2), ("c", 0), ("e", 1), ("f", 0)):
        await s.create_channel(w.ws, name, PRIVATE, actor="bob", position=position)
    await s.open_dm(w.ws, ["carol"], actor="bob")  # DMs are not listed
    names: list[str] = []
    cursor: str | None = None
    while True:
        page = await s.list_channels(w.ws, limit=4, cursor=cursor)
        names += [c.name for c in page.items]
        if (cursor := page.cursor) is None:
            break
    assert names == ["c", "f", "d", "e", "a", "b"]
    assert (await s.list_channels(w.ws2, limit=10)).items == ()


async def test_update_channel(domain: DomainHandle) -> None:
    s = domain.store
    w, general, _ = await setup(s)
    await s.create_channel(w.ws, "random", PUBLIC, actor="alice", position=5)
    c = await s.update_channel(general.id, actor="bob", expected_version=1, topic="news")
    assert (c.topic, c.version, c.position) == ("news", 2, 0)
    c = await s.update_channel(
        general.id, actor="alice", expected_version=2, position=9, archived=True
    )
    assert (c.topic, c.archived, c.position, c.version) == ("news", True, 9, 3)
    assert await s.get_channel(general.id) == c
    assert await channel_names(s, w.ws) == ["secret", "random", "general"]
    c = await s.update_channel(general.id, actor="alice", expected_version=3, archived=False)
    assert not c.archived


@pytest.mark.parametrize(
    ("actor", "changes", "error"),
    [
        ("carol", {"topic": "x"}, Forbidden),  # the creator, but only a member
        ("dave", {"topic": "x"}, Forbidden),
        ("owen", {"topic": "x"}, Forbidden),  # the owner of another workspace
        ("alice", {"topic": "x" * 251}, InvalidField),
        ("alice", {"position": -5}, InvalidField),
    ],
)
async def test_update_channel_refusals(
    domain: DomainHandle, actor: str, changes: dict[str, object], error: type[DomainError]
) -> None:
    s = domain.store
    _, general, _ = await setup(s)
    with pytest.raises(error):
        await s.update_channel(general.id, actor=actor, expected_version=1, **changes)  # type: ignore[arg-type]
    assert await s.get_channel(general.id) == general


async def test_update_channel_stale_and_unknown(domain: DomainHandle) -> None:
    s = domain.store
    _, general, _ = await setup(s)
    await s.update_channel(general.id, actor="alice", expected_version=1, topic="one")
    with pytest.raises(StaleVersion) as info:
        await s.update_channel(general.id, actor="bob", expected_version=1, topic="two")
    assert info.value.current == 2
    assert (await s.get_channel(general.id)).topic == "one"  # type: ignore[union-attr]
    with pytest.raises(NotFound) as missing:
        await s.update_channel("ch.nope", actor="alice", expected_version=1, topic="x")
    assert missing.value.reason == "channel"


async def test_no_partial_channel_when_the_membership_write_fails(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    await domain.faults.fail_writes("channel_member")
    with pytest.raises(StoreUnavailable):
        await s.create_channel(w.ws, "general", PUBLIC, actor="carol")
    assert await channel_names(s, w.ws) == []
    assert (await s.list_user_channels(w.ws, "carol", limit=10)).items == ()
    await domain.faults.heal()
    c = await s.create_channel(w.ws, "general", PUBLIC, actor="carol")  # the name is free
    assert await members_of(s, c.id) == ["carol"]


# -- joining and leaving -----------------------------------------------------------------


async def test_join_public_and_double_join(domain: DomainHandle) -> None:
    s = domain.store
    _, general, _ = await setup(s)
    assert await s.join_channel(general.id, "erin", actor="erin") is True
    page = await s.list_channel_members(general.id, limit=10)
    first = {m.user: m for m in page.items}["erin"]
    assert await s.join_channel(general.id, "erin", actor="erin") is False
    assert await s.join_channel(general.id, "erin", actor="alice") is False
    page = await s.list_channel_members(general.id, limit=10)
    assert {m.user: m for m in page.items}["erin"] == first  # joined_ms of the first join
    assert await members_of(s, general.id) == ["carol", "erin"]


async def test_concurrent_joins_add_one_membership(domain: DomainHandle) -> None:
    s = domain.store
    _, general, _ = await setup(s)
    results: list[bool] = []

    async def join() -> None:
        results.append(await s.join_channel(general.id, "erin", actor="erin"))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(join)
    assert sorted(results) == [False] * 7 + [True]


@pytest.mark.parametrize(
    ("channel", "user", "actor"),
    [
        ("general", "erin", "erin"),  # a member joins a public channel
        ("general", "dave", "bob"),  # an admin adds a guest
        ("general", "erin", "carol"),  # a channel member adds a member
        ("secret", "erin", "bob"),  # a private channel's member adds a member
        ("secret", "alice", "alice"),  # the owner joins a private channel
        ("secret", "dave", "alice"),  # the owner adds a guest to a private channel
    ],
)
async def test_who_may_join(domain: DomainHandle, channel: str, user: str, actor: str) -> None:
    s = domain.store
    _, general, secret = await setup(s)
    cid = {"general": general.id, "secret": secret.id}[channel]
    assert await s.join_channel(cid, user, actor=actor) is True
    assert await s.is_channel_member(cid, user)


@pytest.mark.parametrize(
    ("channel", "user", "actor", "error"),
    [
        ("general", "dave", "dave", Forbidden),  # a guest joins a public channel
        ("secret", "erin", "erin", Forbidden),  # a member joins a private channel
        ("general", "dave", "carol", Forbidden),  # a member adds a guest
        ("general", "dave", "erin", Forbidden),  # a non-channel-member adds someone
        ("secret", "erin", "carol", Forbidden),  # ... to a private channel
        ("general", "zed", "zed", Forbidden),  # a member of another workspace
        ("general", "frank", "frank", Forbidden),  # a member of no workspace
        ("general", "zed", "alice", NotFound),  # adding a user of another workspace
        ("general", "ghost", "alice", NotFound),
        ("ch.nope", "erin", "erin", NotFound),
    ],
)
async def test_who_may_not_join(
    domain: DomainHandle, channel: str, user: str, actor: str, error: type[DomainError]
) -> None:
    s = domain.store
    _, general, secret = await setup(s)
    cid = {"general": general.id, "secret": secret.id}.get(channel, channel)
    before = await members_of(s, cid)
    with pytest.raises(error):
        await s.join_channel(cid, user, actor=actor)
    assert await members_of(s, cid) == before


async def test_a_guest_rejoining_a_channel_is_a_noop(domain: DomainHandle) -> None:
    s = domain.store
    _, general, _ = await setup(s)
    assert await s.join_channel(general.id, "dave", actor="alice")
    assert await s.join_channel(general.id, "dave", actor="dave") is False


async def test_nobody_joins_an_archived_channel(domain: DomainHandle) -> None:
    s = domain.store
    _, general, _ = await setup(s)
    await s.update_channel(general.id, actor="alice", expected_version=1, archived=True)
    for user, actor in (("erin", "erin"), ("erin", "alice")):
        with pytest.raises(Conflict) as info:
            await s.join_channel(general.id, user, actor=actor)
        assert info.value.reason == "archived" and info.value.domain_code == "conflict"
    assert await s.join_channel(general.id, "carol", actor="carol") is False  # a member already
    assert await s.leave_channel(general.id, "carol", actor="carol") is True  # leaving is fine


async def test_leave_and_double_leave(domain: DomainHandle) -> None:
    s = domain.store
    _, general, _ = await setup(s)
    await s.join_channel(general.id, "erin", actor="erin")
    assert await s.leave_channel(general.id, "erin", actor="erin") is True
    assert await s.leave_channel(general.id, "erin", actor="erin") is False
    assert not await s.is_channel_member(general.id, "erin")
    assert await s.leave_channel(general.id, "frank", actor="frank") is False  # never joined


async def test_removing_others_from_a_channel(domain: DomainHandle) -> None:
    s = domain.store
    _, general, _ = await setup(s)
    await s.join_channel(general.id, "erin", actor="erin")
    for actor in ("carol", "dave", "owen"):  # a member, a guest, another workspace's owner
        with pytest.raises(Forbidden):
            await s.leave_channel(general.id, "erin", actor=actor)
    assert await s.leave_channel(general.id, "erin", actor="bob") is True
    with pytest.raises(NotFound):
        await s.leave_channel("ch.nope", "erin", actor="erin")


async def test_removed_members_keep_channel_rows_but_no_access(domain: DomainHandle) -> None:
    s = domain.store
    w, general, _ = await setup(s)
    await s.remove_member(w.ws, "carol", actor="alice")
    assert await s.is_channel_member(general.id, "carol")  # documented: not cascaded
    role = None if (m := await s.get_member(w.ws, "carol")) is None else m.role
    assert not rules.can_see_channel(role, general, is_member=True)
    with pytest.raises(Forbidden):
        await s.join_channel(general.id, "erin", actor="carol")
