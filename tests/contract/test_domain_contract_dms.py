"""The DomainStore contract, part 4: direct conversations and membership listings.

Every test runs against every factory of ``tests/contract/domain_factories.py``; the
world is ``populate``'s (see ``test_domain_contract_channels.py``).
"""

from __future__ import annotations

import pytest
import trio

from gateway.domain.errors import (
    DomainError,
    Forbidden,
    InvalidField,
    LimitExceeded,
    NotFound,
)
from gateway.domain.model import (
    MAX_DM_PARTICIPANTS,
    ChannelKind,
    Conversation,
    Role,
    dm_channel_id,
)
from gateway.errors import StoreUnavailable
from gateway.store.domain import MAX_PAGE
from tests.contract.domain_factories import (
    DomainHandle,
    domain_fixture,  # noqa: F401
    domain_opener_fixture,  # noqa: F401
    members_of,
    populate,
    setup,
)

PUBLIC, DM = ChannelKind.PUBLIC, ChannelKind.DM


# -- listings -----------------------------------------------------------------------------


async def test_member_listings_page(domain: DomainHandle) -> None:
    s = domain.store
    w, general, _ = await setup(s)
    names = [f"p{i:02d}" for i in range(12)]
    for name in names:
        await s.create_channel(w.ws, name, PUBLIC, actor="erin")
    for user in ("alice", "bob", "erin"):
        await s.join_channel(general.id, user, actor=user)
    first = await s.list_channel_members(general.id, limit=2)
    rest = await s.list_channel_members(general.id, limit=2, cursor=first.cursor)
    assert [m.user for m in first.items + rest.items] == ["alice", "bob", "carol", "erin"]
    mine: list[str] = []
    cursor: str | None = None
    while True:
        page = await s.list_user_channels(w.ws, "erin", limit=5, cursor=cursor)
        mine += [m.channel for m in page.items]
        if (cursor := page.cursor) is None:
            break
    listed = (await s.list_channels(w.ws, limit=MAX_PAGE)).items
    assert mine == sorted(c.id for c in listed if c.name != "secret")  # by channel id
    assert (await s.list_user_channels(w.ws2, "erin", limit=5)).items == ()


# -- direct conversations ----------------------------------------------------------------


async def test_open_dm_is_idempotent_per_participant_set(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    dm = await s.open_dm(w.ws, ["carol"], actor="bob")
    assert dm == Conversation(
        id=dm_channel_id(w.ws, ["bob", "carol"]),
        workspace=w.ws,
        participants=("bob", "carol"),
        created_by="bob",
        created_ms=dm.created_ms,
    )
    assert await s.open_dm(w.ws, ["bob", "bob"], actor="carol") == dm  # the first opener's
    assert await s.open_dm(w.ws, ["carol", "bob"], actor="bob") == dm
    assert await s.get_conversation(dm.id) == dm
    channel = await s.get_channel(dm.id)
    assert channel is not None and channel.kind is DM and channel.workspace == w.ws
    assert await members_of(s, dm.id) == ["bob", "carol"]
    assert dm.id in [m.channel for m in (await s.list_user_channels(w.ws, "carol", limit=9)).items]
    group = await s.open_dm(w.ws, ["carol", "dave"], actor="bob")  # guests may be in DMs
    assert group.id != dm.id and group.participants == ("bob", "carol", "dave")


async def test_dms_of_the_same_people_differ_per_workspace(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    await s.add_member(w.ws2, "alice", Role.MEMBER, actor="owen")
    one = await s.open_dm(w.ws, ["carol"], actor="alice")
    two = await s.open_dm(w.ws2, ["zed"], actor="alice")
    assert one.id != two.id and two.workspace == w.ws2


async def test_dm_participant_limits(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    people = [f"p{i}" for i in range(MAX_DM_PARTICIPANTS)]
    for user in people:
        await s.create_user(user, f"{user}@example.com", user)
        await s.add_member(w.ws, user, Role.MEMBER, actor="alice")
    full = await s.open_dm(w.ws, people[1:], actor=people[0])
    assert len(full.participants) == MAX_DM_PARTICIPANTS
    with pytest.raises(LimitExceeded) as info:
        await s.open_dm(w.ws, [*people[1:], "carol"], actor=people[0])
    assert info.value.domain_code == "limit_exceeded"
    with pytest.raises(InvalidField):
        await s.open_dm(w.ws, [], actor="carol")
    with pytest.raises(InvalidField):
        await s.open_dm(w.ws, ["carol"], actor="carol")
    with pytest.raises(InvalidField):
        await s.open_dm(w.ws, ["bad\x00id"], actor="carol")


@pytest.mark.parametrize(
    ("workspace", "others", "actor", "error"),
    [
        ("acme", ["zed"], "carol", NotFound),  # a participant from another workspace
        ("acme", ["frank"], "carol", NotFound),  # in no workspace
        ("acme", ["ghost"], "carol", NotFound),
        ("acme", ["carol"], "zed", Forbidden),  # the opener is not a member
        ("nowhere", ["carol"], "bob", NotFound),
    ],
)
async def test_open_dm_refusals(
    domain: DomainHandle, workspace: str, others: list[str], actor: str, error: type[DomainError]
) -> None:
    s = domain.store
    await populate(s)
    with pytest.raises(error):
        await s.open_dm(workspace, others, actor=actor)
    dm_id = dm_channel_id(workspace, [actor, *others])
    assert await s.get_channel(dm_id) is None and await s.get_conversation(dm_id) is None


async def test_dm_participants_are_fixed(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    dm = await s.open_dm(w.ws, ["carol"], actor="bob")
    for user, actor in (("erin", "alice"), ("erin", "erin"), ("bob", "bob")):
        with pytest.raises(Forbidden):
            await s.join_channel(dm.id, user, actor=actor)
    for user, actor in (("bob", "bob"), ("carol", "alice")):
        with pytest.raises(Forbidden):
            await s.leave_channel(dm.id, user, actor=actor)
    with pytest.raises(Forbidden):
        await s.update_channel(dm.id, actor="alice", expected_version=1, topic="x")
    assert await members_of(s, dm.id) == ["bob", "carol"]


@pytest.mark.parametrize("kind", ["channel_member", "conversation"])
async def test_no_partial_dm(domain: DomainHandle, kind: str) -> None:
    s = domain.store
    w = await populate(s)
    dm_id = dm_channel_id(w.ws, ["bob", "carol", "erin"])
    await domain.faults.fail_writes(kind)
    with pytest.raises(StoreUnavailable):
        await s.open_dm(w.ws, ["carol", "erin"], actor="bob")
    assert await s.get_channel(dm_id) is None
    assert await s.get_conversation(dm_id) is None
    assert await members_of(s, dm_id) == []
    await domain.faults.heal()
    assert (await s.open_dm(w.ws, ["carol", "erin"], actor="bob")).id == dm_id
    assert await members_of(s, dm_id) == ["bob", "carol", "erin"]


async def test_concurrent_opens_agree_on_one_conversation(domain: DomainHandle) -> None:
    s = domain.store
    w = await populate(s)
    seen: list[Conversation] = []

    async def open_one(actor: str, other: str) -> None:
        seen.append(await s.open_dm(w.ws, [other], actor=actor))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(open_one, *(("bob", "carol") if i % 2 else ("carol", "bob")))
    assert len(set(seen)) == 1
    assert await members_of(s, seen[0].id) == ["bob", "carol"]
