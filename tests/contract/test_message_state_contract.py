"""The MessageStateStore contract: edits, deletes, reactions, thread summaries.

Every test runs against every factory of ``tests/contract/message_state_factories.py``;
their fixtures are imported below.
"""

from __future__ import annotations

import pytest
import trio

from gateway.domain.errors import Conflict, InvalidField, LimitExceeded, StaleVersion
from gateway.store.message_state import (
    MAX_BODY_BYTES,
    MAX_GET_STATES,
    MAX_PARTICIPANTS,
    MessageState,
    MessageStateStore,
    check_emoji,
)
from tests.contract.message_state_factories import (
    StateOpener,
    refused,
    state_opener_fixture,  # noqa: F401
    state_store_fixture,  # noqa: F401
)

CH = "ch.general"
ALICE = "alice"  # the author of the messages below


async def edit(
    s: MessageStateStore, offset: int, body: str, *, expected: int, op: str, now: int = 1000
) -> MessageState:
    return await s.edit(
        CH, offset, author=ALICE, expected_version=expected, body=body, op=op, now_ms=now
    )


async def react(
    s: MessageStateStore, offset: int, user: str, emoji: str, *, add: bool = True, kinds: int = 10
) -> tuple[bool, MessageState]:
    return await s.react(CH, offset, author=ALICE, user=user, emoji=emoji, add=add, max_kinds=kinds)


async def reply(
    s: MessageStateStore, parent: int, user: str, reply_offset: int, ms: int
) -> MessageState:
    return await s.note_reply(
        CH, parent, author=ALICE, user=user, reply_offset=reply_offset, reply_ms=ms
    )


# -- get_states ----------------------------------------------------------------------------


async def test_untouched_messages_have_no_state(state_store: MessageStateStore) -> None:
    s = state_store
    assert await s.get_states(CH, [1, 2, 3]) == {}
    assert await s.get_states(CH, []) == {}
    await edit(s, 2, "two", expected=1, op="e1")
    states = await s.get_states(CH, [1, 2, 3, 2])
    assert list(states) == [2]
    assert states[2].body == "two"
    assert await s.get_states("ch.other", [2]) == {}  # per channel


async def test_get_states_bounds(state_store: MessageStateStore) -> None:
    s = state_store
    for offset in (1, 50, MAX_GET_STATES):
        await react(s, offset, "bob", "👍")
    states = await s.get_states(CH, range(1, MAX_GET_STATES + 1))
    assert sorted(states) == [1, 50, MAX_GET_STATES]
    with pytest.raises(InvalidField) as e:
        await s.get_states(CH, range(1, MAX_GET_STATES + 2))
    assert e.value.field == "offsets"
    for bad in ([0], [-1], [1, 0]):
        with pytest.raises(InvalidField) as e:
            await s.get_states(CH, bad)
        assert e.value.field == "offsets"


# -- edit ----------------------------------------------------------------------------------


async def test_edit_creates_the_row_and_bumps_the_version(state_store: MessageStateStore) -> None:
    s = state_store
    first = await edit(s, 7, "hello again", expected=1, op="e1", now=1111)
    assert first == MessageState(
        channel=CH, offset=7, author=ALICE, version=2, body="hello again", edited_ms=1111, op="e1"
    )
    second = await edit(s, 7, "third", expected=2, op="e2", now=2222)
    assert (second.version, second.body, second.edited_ms, second.op) == (3, "third", 2222, "e2")
    assert (await s.get_states(CH, [7]))[7] == second


async def test_a_retry_of_the_same_edit_returns_the_stored_state(
    state_store: MessageStateStore,
) -> None:
    s = state_store
    done = await edit(s, 1, "fixed", expected=1, op="op-1", now=10)
    before = s.statistics()
    again = await edit(s, 1, "fixed", expected=1, op="op-1", now=99)  # the client retried
    assert again == done
    other_args = await edit(s, 1, "ignored", expected=5, op="op-1", now=99)
    assert other_args == done  # recognised by op alone
    assert s.statistics().refusals == before.refusals
    assert (await s.get_states(CH, [1]))[1] == done


async def test_stale_edit_is_refused_with_the_current_version(
    state_store: MessageStateStore,
) -> None:
    s = state_store
    with refused(StaleVersion, "stale_version") as e:
        await edit(s, 1, "x", expected=2, op="e0")  # no row: version 1
    assert e.value.current == 1
    assert await s.get_states(CH, [1]) == {}
    await edit(s, 1, "a", expected=1, op="e1")
    await edit(s, 1, "b", expected=2, op="e2")
    with refused(StaleVersion, "stale_version") as e:
        await edit(s, 1, "c", expected=2, op="e3")
    assert e.value.current == 3
    with refused(StaleVersion, "stale_version"):
        await edit(s, 1, "a again", expected=1, op="e1")  # only the last op is remembered
    assert (await s.get_states(CH, [1]))[1].body == "b"
    assert s.statistics().refusals == 3


async def test_author_must_match_the_stored_row(state_store: MessageStateStore) -> None:
    s = state_store
    await edit(s, 1, "mine", expected=1, op="e1")
    with refused(Conflict, "conflict", reason="author"):
        await s.edit(CH, 1, author="mallory", expected_version=2, body="x", op="e2", now_ms=1)
    with refused(Conflict, "conflict", reason="author"):
        await s.delete(CH, 1, author="mallory", op="d1", now_ms=1)
    with refused(Conflict, "conflict", reason="author"):
        await s.react(CH, 1, author="mallory", user="bob", emoji="👍", add=True, max_kinds=5)
    with refused(Conflict, "conflict", reason="author"):
        await s.note_reply(CH, 1, author="mallory", user="bob", reply_offset=1, reply_ms=1)
    state = (await s.get_states(CH, [1]))[1]
    assert (state.version, state.body, state.deleted, state.reactions, state.replies) == (
        2,
        "mine",
        False,
        {},
        0,
    )


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ("x", True),
        ("x" * MAX_BODY_BYTES, True),
        ("é" * (MAX_BODY_BYTES // 2), True),  # 2 bytes each
        ("", False),
        ("x" * (MAX_BODY_BYTES + 1), False),
        ("é" * (MAX_BODY_BYTES // 2 + 1), False),
        ("😀" * (MAX_BODY_BYTES // 4 + 1), False),  # under the limit in characters
        ("\ud800", False),  # not encodable
    ],
)
async def test_body_limits(state_store: MessageStateStore, body: str, ok: bool) -> None:
    s = state_store
    if ok:
        assert (await edit(s, 1, body, expected=1, op="e1")).body == body
        return
    with pytest.raises(InvalidField) as e:
        await edit(s, 1, body, expected=1, op="e1")
    assert e.value.field == "body"
    assert await s.get_states(CH, [1]) == {}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"op": ""}, "op"),
        ({"op": "o" * 129}, "op"),
        ({"offset": 0}, "offset"),
        ({"channel": ""}, "channel"),
        ({"author": ""}, "author"),
        ({"expected_version": 0}, "expected_version"),
        ({"now_ms": -1}, "now_ms"),
    ],
)
async def test_edit_input_is_validated(
    state_store: MessageStateStore, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {
        "channel": CH,
        "offset": 1,
        "author": ALICE,
        "expected_version": 1,
        "body": "b",
        "op": "e1",
        "now_ms": 5,
    }
    args.update(kwargs)
    with pytest.raises(InvalidField) as e:
        await state_store.edit(**args)  # type: ignore[arg-type]
    assert e.value.field == field


# -- delete --------------------------------------------------------------------------------


async def test_delete_is_a_tombstone_and_idempotent(state_store: MessageStateStore) -> None:
    s = state_store
    await edit(s, 3, "edited", expected=1, op="e1")
    await react(s, 3, "bob", "👍")
    await react(s, 3, "carol", "🎉")
    await reply(s, 3, "bob", 1, 500)
    deleted, state = await s.delete(CH, 3, author=ALICE, op="d1", now_ms=4000)
    assert deleted
    assert (state.deleted, state.body, state.version, state.reactions) == (True, "", 3, {})
    assert (state.edited_ms, state.op, state.replies, state.participants) == (
        4000,
        "d1",
        1,
        ("bob",),
    )
    assert await s.my_reactions(CH, 3, "bob") == frozenset()
    assert (await s.get_states(CH, [3]))[3] == state

    again, same = await s.delete(CH, 3, author=ALICE, op="d2", now_ms=5000)
    assert (again, same) == (False, state)  # nothing written
    assert (await s.get_states(CH, [3]))[3] == state


async def test_delete_of_an_unchanged_message(state_store: MessageStateStore) -> None:
    deleted, state = await state_store.delete(CH, 9, author=ALICE, op="d1", now_ms=7)
    assert deleted
    assert state == MessageState(
        channel=CH, offset=9, author=ALICE, version=2, body="", deleted=True, edited_ms=7, op="d1"
    )


async def test_deleted_messages_refuse_edits_and_reactions(
    state_store: MessageStateStore,
) -> None:
    s = state_store
    await react(s, 1, "bob", "👍")
    _, tomb = await s.delete(CH, 1, author=ALICE, op="d1", now_ms=1)
    with refused(Conflict, "conflict", reason="deleted"):
        await edit(s, 1, "back", expected=tomb.version, op="e1")
    with refused(Conflict, "conflict", reason="deleted"):
        await react(s, 1, "carol", "👍")
    with refused(Conflict, "conflict", reason="deleted"):
        await react(s, 1, "bob", "👍", add=False)
    assert (await s.get_states(CH, [1]))[1] == tomb


# -- reactions -----------------------------------------------------------------------------


async def test_reactions_count_users_and_toggles_are_idempotent(
    state_store: MessageStateStore,
) -> None:
    s = state_store
    assert await react(s, 1, "bob", "👍") == (True, await _state(s, 1))
    changed, state = await react(s, 1, "bob", "👍")  # again: already there
    assert not changed
    assert state.reactions == {"👍": 1}
    await react(s, 1, "carol", "👍")
    await react(s, 1, "carol", ":tada:")
    changed, state = await react(s, 1, "dave", "👍")
    assert changed
    assert state.reactions == {"👍": 3, ":tada:": 1}
    assert state.version == 1  # reactions are not edits
    assert await s.my_reactions(CH, 1, "carol") == {"👍", ":tada:"}
    assert await s.my_reactions(CH, 1, "bob") == {"👍"}
    assert await s.my_reactions(CH, 1, "erin") == frozenset()

    changed, state = await react(s, 1, "erin", "👍", add=False)  # erin has none
    assert not changed
    assert state.reactions == {"👍": 3, ":tada:": 1}
    changed, state = await react(s, 1, "carol", ":tada:", add=False)
    assert changed
    assert state.reactions == {"👍": 3}  # dropped at 0
    changed, state = await react(s, 1, "carol", ":tada:", add=False)
    assert not changed
    await react(s, 1, "bob", "👍", add=False)
    await react(s, 1, "dave", "👍", add=False)
    _, state = await react(s, 1, "carol", "👍", add=False)
    assert state.reactions == {}
    assert await s.get_states(CH, [1]) == {1: state}
    assert await s.my_reactions(CH, 1, "carol") == frozenset()
    assert await s.my_reactions(CH, 2, "carol") == frozenset()


async def test_removing_from_an_unchanged_message_writes_nothing(
    state_store: MessageStateStore,
) -> None:
    changed, state = await react(state_store, 4, "bob", "👍", add=False)
    assert not changed
    assert state == MessageState(channel=CH, offset=4, author=ALICE)
    assert await state_store.get_states(CH, [4]) == {}


async def test_reaction_kinds_are_limited(state_store: MessageStateStore) -> None:
    s = state_store
    for emoji in ("👍", "🎉", ":eyes:"):
        await react(s, 1, "bob", emoji, kinds=3)
    with refused(LimitExceeded, "limit_exceeded", reason="reactions"):
        await react(s, 1, "carol", "🚀", kinds=3)
    changed, state = await react(s, 1, "carol", "🎉", kinds=3)  # an existing kind
    assert changed
    assert state.reactions == {"👍": 1, "🎉": 2, ":eyes:": 1}
    assert await s.my_reactions(CH, 1, "carol") == {"🎉"}
    await react(s, 1, "bob", ":eyes:", add=False, kinds=3)
    _, state = await react(s, 1, "carol", "🚀", kinds=3)  # room again
    assert state.reactions == {"👍": 1, "🎉": 2, "🚀": 1}
    with pytest.raises(InvalidField) as e:
        await react(s, 1, "carol", "🚀", kinds=0)
    assert e.value.field == "max_kinds"


GOOD_EMOJI = [
    "👍",
    "👍🏽",  # skin tone
    "❤️",  # variation selector
    "❤",
    "👨‍👩‍👧‍👦",  # ZWJ family
    "🏳️‍🌈",
    "🇫🇷",  # regional indicators
    "1️⃣",  # keycap with VS
    "#⃣",  # keycap without VS
    "*️⃣",
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland (tags)
    "☺",
    ":tada:",
    ":+1:",
    ":thumbs-up_2:",
    ":" + "a" * 62 + ":",
    "👍" * 64,
]
BAD_EMOJI = [
    "",
    "a",
    "ok",
    "1",
    "#",
    "12⃣",  # a digit not before a keycap
    "⃣",
    "❤️⃣",  # a keycap on a non-keycap base
    "^",  # ASCII Sk
    "`",
    "👍 ",
    " 👍",
    "👍\n",
    "\u200d",
    "\ufe0f",
    "<b>",
    ":Tada:",
    "::",
    ":tada",
    "tada:",
    ":ta da:",
    ":tada:\n",
    ":" + "a" * 63 + ":",
    "👍" * 65,
    "\U000e0067",  # a tag without a flag
    "x👍",
]


@pytest.mark.parametrize("emoji", GOOD_EMOJI)
async def test_good_emoji(state_store: MessageStateStore, emoji: str) -> None:
    assert check_emoji(emoji) == emoji
    _, state = await react(state_store, 1, "bob", emoji)
    assert state.reactions == {emoji: 1}
    assert await state_store.my_reactions(CH, 1, "bob") == {emoji}


@pytest.mark.parametrize("emoji", BAD_EMOJI)
async def test_bad_emoji(state_store: MessageStateStore, emoji: str) -> None:
    with pytest.raises(InvalidField) as e:
        check_emoji(emoji)
    assert e.value.field == "emoji"
    with pytest.raises(InvalidField) as e:
        await react(state_store, 1, "bob", emoji)
    assert e.value.field == "emoji"
    assert await state_store.get_states(CH, [1]) == {}


# -- thread summaries ----------------------------------------------------------------------


async def test_note_reply_is_idempotent_and_monotonic(state_store: MessageStateStore) -> None:
    s = state_store
    state = await reply(s, 5, "bob", 1, 100)
    assert (state.replies, state.last_reply_ms, state.participants) == (1, 100, ("bob",))
    assert await reply(s, 5, "bob", 1, 100) == state  # a repeat
    state = await reply(s, 5, "carol", 3, 300)
    assert (state.replies, state.last_reply_ms, state.participants) == (3, 300, ("bob", "carol"))
    state = await reply(s, 5, "dave", 2, 200)  # late: counts the participant only
    assert (state.replies, state.last_reply_ms, state.participants) == (
        3,
        300,
        ("bob", "carol", "dave"),
    )
    assert await reply(s, 5, "bob", 2, 200) == state
    assert state.version == 1  # replies are not edits
    assert (await s.get_states(CH, [5]))[5] == state
    edited = await edit(s, 5, "parent edited", expected=1, op="e1")
    assert (edited.replies, edited.participants) == (3, ("bob", "carol", "dave"))


async def test_participants_are_capped(state_store: MessageStateStore) -> None:
    s = state_store
    users = [f"user{i:02d}" for i in range(MAX_PARTICIPANTS + 5)]
    for n, user in enumerate(users, start=1):
        state = await reply(s, 1, user, n, n * 10)
    assert state.participants == tuple(users[:MAX_PARTICIPANTS])
    assert (state.replies, state.last_reply_ms) == (len(users), len(users) * 10)
    state = await reply(s, 1, users[0], len(users) + 1, 9999)
    assert state.participants == tuple(users[:MAX_PARTICIPANTS])
    assert state.replies == len(users) + 1


async def test_deleted_parents_still_count_replies(state_store: MessageStateStore) -> None:
    s = state_store
    await reply(s, 1, "bob", 1, 10)
    _, tomb = await s.delete(CH, 1, author=ALICE, op="d1", now_ms=20)
    state = await reply(s, 1, "carol", 2, 30)
    assert state.deleted
    assert (state.replies, state.last_reply_ms, state.participants) == (2, 30, ("bob", "carol"))
    assert state.version == tomb.version


async def test_note_reply_input_is_validated(state_store: MessageStateStore) -> None:
    s = state_store
    with pytest.raises(InvalidField) as e:
        await reply(s, 1, "bob", 0, 10)
    assert e.value.field == "reply_offset"
    with pytest.raises(InvalidField) as e:
        await reply(s, 0, "bob", 1, 10)
    assert e.value.field == "parent"
    with pytest.raises(InvalidField) as e:
        await reply(s, 1, "", 1, 10)
    assert e.value.field == "user"
    assert await s.get_states(CH, [1]) == {}


# -- concurrency and durability ------------------------------------------------------------


async def test_concurrent_edits_of_one_version_one_wins(state_store: MessageStateStore) -> None:
    s = state_store
    won: list[MessageState] = []
    stale: list[int] = []

    async def attempt(i: int) -> None:
        try:
            won.append(await edit(s, 1, f"body {i}", expected=1, op=f"e{i}"))
        except StaleVersion as exc:
            stale.append(exc.current)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(attempt, i)
    assert len(won) == 1
    assert stale == [2] * 19
    assert (await s.get_states(CH, [1]))[1] == won[0]


async def test_two_openers_of_one_site_race_safely(state_opener: StateOpener) -> None:
    # Two stores on the same data (two processes, or two nodes of one deployment): the
    # conditional writes hold across them, not only within one store's own serialisation.
    async with state_opener.open() as one, state_opener.open() as two:
        won: list[MessageState] = []
        stale = 0
        added: list[bool] = []

        async def attempt(i: int) -> None:
            nonlocal stale
            try:
                won.append(await edit((one, two)[i % 2], 1, f"b{i}", expected=1, op=f"e{i}"))
            except StaleVersion:
                stale += 1

        async def add(i: int) -> None:
            changed, _ = await react((one, two)[i % 2], 2, f"user{i:02d}", "👍")
            added.append(changed)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(attempt, i)
                for i in range(40):
                    nursery.start_soon(add, i)
        assert (len(won), stale) == (1, 19)
        assert added == [True] * 40
        for s in (one, two):
            states = await s.get_states(CH, [1, 2])
            assert states[1] == won[0]
            assert states[2].reactions == {"👍": 40}


async def test_concurrent_reactions_count_and_survive_reopen(state_opener: StateOpener) -> None:
    users = [f"user{i:02d}" for i in range(50)]
    async with state_opener.open() as s:
        results: list[bool] = []

        async def add(user: str) -> None:
            changed, _ = await react(s, 1, user, "👍")
            results.append(changed)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for user in users:
                    nursery.start_soon(add, user)
        assert results == [True] * 50
        await edit(s, 1, "edited", expected=1, op="e1", now=77)
        await reply(s, 1, "bob", 4, 88)
        before = (await s.get_states(CH, [1]))[1]
        assert before.reactions == {"👍": 50}

    async with state_opener.open() as s:
        after = (await s.get_states(CH, [1]))[1]
        assert after == before
        assert await s.my_reactions(CH, 1, "user07") == {"👍"}
        changed, _ = await react(s, 1, "user07", "👍")
        assert not changed  # the per-user rows survived too
        assert await edit(s, 1, "edited", expected=1, op="e1") == before  # op survived

    async with state_opener.open("fresh") as s:
        assert await s.get_states(CH, [1]) == {}


async def test_statistics_count_reads_writes_and_refusals(
    state_store: MessageStateStore,
) -> None:
    s = state_store
    start = s.statistics()
    await s.get_states(CH, [1])
    await react(s, 1, "bob", "👍")
    await react(s, 1, "bob", "👍")  # a no-op write call still counts
    with refused(StaleVersion, "stale_version"):
        await edit(s, 1, "x", expected=9, op="e1")
    with pytest.raises(InvalidField):
        await edit(s, 1, "", expected=1, op="e1")  # input validation: not counted
    end = s.statistics()
    assert end.reads - start.reads == 1
    assert end.writes - start.writes == 2
    assert end.refusals - start.refusals == 1


async def _state(s: MessageStateStore, offset: int) -> MessageState:
    return (await s.get_states(CH, [offset]))[offset]
