"""The ReadStateStore contract: read cursors, unread/mention counts, receipts, notifications.

Every test runs against every factory of ``tests/contract/read_state_factories.py``; their
fixtures are imported below.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
import trio

from gateway.domain.errors import BadCursor, Conflict, InvalidField
from gateway.store.read_state import (
    MAX_CHANNELS,
    MAX_MARK_IDS,
    MAX_MENTIONS,
    MAX_PREVIEW_CHARS,
    Notification,
    ReadCursor,
    ReadStateStore,
    Receipt,
    Unread,
)
from tests.contract.read_state_factories import (
    START_MS,
    ReadOpener,
    read_opener_fixture,  # noqa: F401
    read_store_fixture,  # noqa: F401
)

CH = "ch.general"
DM = "dm.alice-bob"
HOUR = 3_600_000


async def note(
    s: ReadStateStore,
    offset: int,
    sender: str,
    *,
    mentions: Sequence[str] = (),
    everyone: bool = False,
    channel: str = CH,
) -> bool:
    return await s.note_message(
        channel, offset, sender=sender, mentions=mentions, everyone=everyone
    )


def notification(
    nid: str, user: str = "bob", *, created: int = START_MS, **kw: Any
) -> Notification:
    fields: dict[str, Any] = {
        "id": nid,
        "user": user,
        "kind": "mention",
        "channel": CH,
        "message_id": f"e1-{nid}",
        "offset": 1,
        "sender": "alice",
        "preview": f"hi @{user}",
        "created_ms": created,
        "expires_ms": created + HOUR,
    }
    fields.update(kw)
    return Notification(**fields)


async def field_of(call: Any) -> str | None:
    with pytest.raises(InvalidField) as e:
        await call
    return e.value.field


# -- read cursors --------------------------------------------------------------------------


async def test_cursor_moves_forward_only(read_store: ReadStateStore) -> None:
    s = read_store
    assert await s.get_cursor("bob", CH) is None
    first = await s.mark_read("bob", CH, 5, now_ms=100)
    assert first == ReadCursor(user="bob", channel=CH, offset=5, updated_ms=100)
    assert await s.mark_read("bob", CH, 3, now_ms=200) == first  # lower: the stored one
    assert await s.mark_read("bob", CH, 5, now_ms=300) == first  # same: idempotent
    assert await s.get_cursor("bob", CH) == first
    moved = await s.mark_read("bob", CH, 9, now_ms=400)
    assert (moved.offset, moved.updated_ms) == (9, 400)
    assert await s.get_cursor("bob", CH) == moved
    assert await s.get_cursor("alice", CH) is None  # per user
    assert await s.get_cursor("bob", "ch.other") is None  # per channel


async def test_list_cursors(read_store: ReadStateStore) -> None:
    s = read_store
    for i, ch in enumerate(("a", "b", "c")):
        await s.mark_read("bob", ch, i + 1, now_ms=10)
    await s.mark_read("alice", "d", 7, now_ms=10)
    await s.mark_delivered("bob", "d", 3, now_ms=10)  # delivered only: no read cursor
    found = await s.list_cursors("bob", ["c", "a", "d", "zz", "a"])
    assert found == {
        "c": ReadCursor(user="bob", channel="c", offset=3, updated_ms=10),
        "a": ReadCursor(user="bob", channel="a", offset=1, updated_ms=10),
    }
    assert await s.list_cursors("bob", []) == {}
    many = [f"ch{i}" for i in range(MAX_CHANNELS)]
    assert await s.list_cursors("bob", many) == {}
    assert await field_of(s.list_cursors("bob", [*many, "one-more"])) == "channels"
    assert await field_of(s.list_cursors("bob", "a")) == "channels"  # a str is not a list
    assert await field_of(s.list_cursors("bob", ["ok", ""])) == "channels"


async def test_cursor_validation(read_store: ReadStateStore) -> None:
    s = read_store
    assert await field_of(s.mark_read("", CH, 1, now_ms=0)) == "user"
    assert await field_of(s.mark_read("x" * 129, CH, 1, now_ms=0)) == "user"
    assert await field_of(s.mark_read("bob", "bad\nname", 1, now_ms=0)) == "channel"
    for bad in (0, -1, True, 1.5):
        assert await field_of(s.mark_read("bob", CH, bad, now_ms=0)) == "offset"  # type: ignore[arg-type]
    assert await field_of(s.mark_read("bob", CH, 1, now_ms=-1)) == "now_ms"
    assert await field_of(s.mark_delivered("bob", CH, 0, now_ms=0)) == "offset"
    assert await field_of(s.get_cursor("bob", "")) == "channel"
    assert await s.get_cursor("bob", CH) is None


async def test_concurrent_marks_end_at_the_highest(read_store: ReadStateStore) -> None:
    s = read_store
    rng = random.Random(7)
    offsets = [rng.randint(1, 10_000) for _ in range(50)]
    returned: list[tuple[int, ReadCursor]] = []

    async def mark(offset: int) -> None:
        returned.append((offset, await s.mark_read("bob", CH, offset, now_ms=offset)))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for offset in offsets:
                nursery.start_soon(mark, offset)
    top = max(offsets)
    assert await s.get_cursor("bob", CH) == ReadCursor(
        user="bob", channel=CH, offset=top, updated_ms=top
    )
    assert len(returned) == 50
    assert all(c.offset >= asked for asked, c in returned)  # never a cursor below the ask
    assert all(c.updated_ms == c.offset for _, c in returned)  # written by that offset's mark


# -- note_message and unread counts --------------------------------------------------------


async def test_note_message_is_idempotent_and_in_order(read_store: ReadStateStore) -> None:
    s = read_store
    assert await note(s, 1, "alice") is True
    assert await note(s, 1, "alice") is False
    assert await note(s, 1, "carol", mentions=["bob"], everyone=True) is False  # first stands
    assert await note(s, 4, "alice") is True  # 2 and 3 were events: gaps are fine
    with pytest.raises(Conflict) as e:
        await note(s, 3, "alice")  # new, but below the highest noted
    assert e.value.reason == "order"
    assert await note(s, 4, "alice") is False
    assert await s.unread("bob", [CH]) == {CH: Unread(messages=2, mentions=0)}
    assert await note(s, 1, "alice", channel="ch.other") is True  # per channel


async def test_unread_counts_skip_own_messages(read_store: ReadStateStore) -> None:
    s = read_store
    await note(s, 1, "alice")
    await note(s, 2, "bob")
    await note(s, 3, "alice", mentions=["bob"])
    # offset 4: an event (never noted)
    await note(s, 5, "carol")
    await note(s, 6, "bob", mentions=["bob", "alice"])  # bob mentions himself: not counted
    assert await s.unread("bob", [CH, "ch.quiet"]) == {
        CH: Unread(messages=3, mentions=1),
        "ch.quiet": Unread(),
    }
    assert await s.unread("alice", [CH]) == {CH: Unread(messages=3, mentions=1)}
    assert await s.unread("dave", [CH]) == {CH: Unread(messages=5, mentions=0)}

    await s.mark_read("bob", CH, 3, now_ms=1)
    assert (await s.unread("bob", [CH]))[CH] == Unread(messages=1, mentions=0)
    await s.mark_read("bob", CH, 4, now_ms=2)  # an event offset: same counts
    assert (await s.unread("bob", [CH]))[CH] == Unread(messages=1, mentions=0)
    await s.mark_read("alice", CH, 5, now_ms=3)
    assert (await s.unread("alice", [CH]))[CH] == Unread(messages=1, mentions=1)
    await s.mark_read("bob", CH, 6, now_ms=4)
    await s.mark_read("alice", CH, 100, now_ms=5)  # beyond the head
    assert await s.unread("bob", [CH]) == {CH: Unread()}
    assert await s.unread("alice", [CH]) == {CH: Unread()}
    await note(s, 7, "carol", mentions=["alice"])
    assert await s.unread("bob", [CH]) == {CH: Unread(messages=1)}
    assert await s.unread("alice", [CH]) == {CH: Unread()}  # 7 <= her cursor


async def test_channel_mentions_count_once_and_not_for_the_sender(
    read_store: ReadStateStore,
) -> None:
    s = read_store
    await note(s, 1, "alice", everyone=True)
    await note(s, 2, "alice", mentions=["bob"], everyone=True)  # both: counts once
    await note(s, 3, "bob", everyone=True)  # bob's own @channel
    await note(s, 4, "carol", mentions=["bob", "dave"])
    await note(s, 5, "dave")
    got = await s.unread("bob", [CH])
    assert got[CH] == Unread(messages=4, mentions=3)
    assert (await s.unread("alice", [CH]))[CH] == Unread(messages=3, mentions=1)
    assert (await s.unread("dave", [CH]))[CH] == Unread(messages=4, mentions=4)
    await s.mark_read("bob", CH, 2, now_ms=1)
    assert (await s.unread("bob", [CH]))[CH] == Unread(messages=2, mentions=1)
    await s.mark_read("dave", CH, 3, now_ms=1)
    assert (await s.unread("dave", [CH]))[CH] == Unread(messages=1, mentions=1)


async def test_unread_over_many_channels_and_users(read_store: ReadStateStore) -> None:
    s = read_store
    channels = [f"ch{i}" for i in range(MAX_CHANNELS)]
    for i, ch in enumerate(channels[:10]):
        for offset in range(1, i + 2):
            await note(s, offset, "alice" if offset % 2 else "bob", channel=ch)
    counts = await s.unread("carol", channels)
    assert list(counts) == channels
    for i, ch in enumerate(channels):
        assert counts[ch] == Unread(messages=i + 1 if i < 10 else 0)
    bob = await s.unread("bob", channels[:10])
    assert [u.messages for u in bob.values()] == [(i + 2) // 2 for i in range(10)]
    assert await field_of(s.unread("bob", [*channels, "x"])) == "channels"
    assert await s.unread("bob", []) == {}


async def test_note_message_validation(read_store: ReadStateStore) -> None:
    s = read_store
    assert await field_of(note(s, 0, "alice")) == "offset"
    assert await field_of(note(s, 1, "")) == "sender"
    assert await field_of(note(s, 1, "alice", channel="")) == "channel"
    assert await field_of(note(s, 1, "alice", mentions=["ok", ""])) == "mentions"
    assert await field_of(note(s, 1, "alice", mentions="bob")) == "mentions"
    too_many = [f"u{i}" for i in range(MAX_MENTIONS + 1)]
    assert await field_of(note(s, 1, "alice", mentions=too_many)) == "mentions"
    assert await note(s, 1, "alice", mentions=too_many[:-1] + too_many[:5]) is True  # repeats
    assert (await s.unread("u0", [CH]))[CH] == Unread(messages=1, mentions=1)


async def test_concurrent_notes_of_one_offset_count_once(read_store: ReadStateStore) -> None:
    s = read_store
    results: list[bool] = []

    async def attempt() -> None:
        results.append(await note(s, 1, "alice", mentions=["bob"]))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(attempt)
    assert sorted(results) == [False] * 19 + [True]
    assert (await s.unread("bob", [CH]))[CH] == Unread(messages=1, mentions=1)


# -- receipts ------------------------------------------------------------------------------


async def test_receipts(read_store: ReadStateStore) -> None:
    s = read_store
    assert await s.receipts(DM) == []
    got = await s.mark_delivered("bob", DM, 4, now_ms=10)
    assert got == Receipt(user="bob", channel=DM, delivered=4, delivered_ms=10)
    assert await s.mark_delivered("bob", DM, 2, now_ms=20) == got  # forward only
    assert await s.mark_delivered("bob", DM, 4, now_ms=30) == got
    await s.mark_read("bob", DM, 3, now_ms=40)
    await s.mark_read("alice", DM, 6, now_ms=50)  # reading implies delivery
    await s.mark_delivered("carol", "dm.other", 1, now_ms=60)
    assert await s.receipts(DM) == [
        Receipt(user="alice", channel=DM, delivered=6, delivered_ms=50, read=6, read_ms=50),
        Receipt(user="bob", channel=DM, delivered=4, delivered_ms=10, read=3, read_ms=40),
    ]
    bob = await s.mark_delivered("bob", DM, 9, now_ms=70)
    assert bob == Receipt(user="bob", channel=DM, delivered=9, delivered_ms=70, read=3, read_ms=40)
    alice = await s.mark_delivered("alice", DM, 5, now_ms=80)  # below her read offset
    assert (alice.delivered, alice.read) == (6, 6)
    assert await s.get_cursor("carol", "dm.other") is None  # delivered is not read
    assert await field_of(s.receipts("")) == "channel"


# -- notifications -------------------------------------------------------------------------


async def test_notify_is_idempotent(read_store: ReadStateStore) -> None:
    s = read_store
    n = notification("n1")
    assert await s.notify("bob", n) is True
    assert await s.notify("bob", n) is False
    assert await s.notify("bob", notification("n1", preview="other")) is False  # first stands
    assert await s.notify("carol", notification("n1", "carol")) is True  # per user
    page = await s.list_notifications("bob", limit=10)
    assert page.items == (n,)
    assert page.cursor is None


async def test_notification_limits(read_store: ReadStateStore) -> None:
    s = read_store
    ok = notification("n1")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"id": ""}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"kind": "shout"}, "kind"),
        ({"channel": "bad\x00"}, "channel"),
        ({"message_id": ""}, "message_id"),
        ({"offset": 0}, "offset"),
        ({"sender": ""}, "sender"),
        ({"preview": "p" * (MAX_PREVIEW_CHARS + 1)}, "preview"),
        ({"created_ms": -1}, "created_ms"),
        ({"expires_ms": ok.created_ms}, "expires_ms"),
        ({"read": True}, "read"),
        ({"user": "carol"}, "user"),
    ]
    for change, field in bad:
        assert await field_of(s.notify("bob", msgspec.structs.replace(ok, **change))) == field
    assert await field_of(s.notify("", ok)) == "user"
    longest = msgspec.structs.replace(ok, preview="p" * MAX_PREVIEW_CHARS)
    assert await s.notify("bob", longest) is True
    assert (await s.list_notifications("bob", limit=1)).items == (longest,)


async def test_notifications_expire(read_store: ReadStateStore, read_opener: ReadOpener) -> None:
    s, clock = read_store, read_opener.clock
    assert await s.notify("bob", notification("old", created=START_MS - HOUR + 10)) is True
    assert await s.notify("bob", notification("new", created=START_MS)) is True
    stale = notification("stale", created=START_MS - 2 * HOUR)
    assert await s.notify("bob", stale) is False  # expired on arrival: not stored
    assert [n.id for n in (await s.list_notifications("bob", limit=10)).items] == ["new", "old"]

    clock.advance(10)  # "old" expires now (expires_ms == now)
    assert [n.id for n in (await s.list_notifications("bob", limit=10)).items] == ["new"]
    assert await s.mark_notifications_read("bob", ["old", "new"], now_ms=clock()) == 1
    assert await s.mark_notifications_read("bob", "all", now_ms=clock()) == 0
    again = notification("old", created=clock.now, preview="again")
    assert await s.notify("bob", again) is True  # an expired id may be notified again
    assert [n.preview for n in (await s.list_notifications("bob", limit=10)).items] == [
        "again",
        "hi @bob",
    ]

    clock.advance(2 * HOUR)
    assert (await s.list_notifications("bob", limit=10)).items == ()
    assert await s.mark_notifications_read("bob", "all", now_ms=clock()) == 0


async def test_mark_notifications_read(read_store: ReadStateStore, read_opener: ReadOpener) -> None:
    s, now = read_store, read_opener.clock()
    for i in range(5):
        await s.notify("bob", notification(f"n{i}", created=START_MS + i))
    await s.notify("carol", notification("n0", "carol"))
    assert await s.mark_notifications_read("bob", ["n1", "n3", "missing", "n1"], now_ms=now) == 2
    assert await s.mark_notifications_read("bob", ["n1"], now_ms=now + 5) == 0  # already read
    assert await s.mark_notifications_read("bob", [], now_ms=now) == 0
    unread = await s.list_notifications("bob", limit=10, unread_only=True)
    assert [n.id for n in unread.items] == ["n4", "n2", "n0"]
    everything = await s.list_notifications("bob", limit=10)
    assert [(n.id, n.read, n.read_ms) for n in everything.items] == [
        ("n4", False, 0),
        ("n3", True, now),
        ("n2", False, 0),
        ("n1", True, now),
        ("n0", False, 0),
    ]
    assert await s.mark_notifications_read("bob", "all", now_ms=now + 9) == 3
    assert (await s.list_notifications("bob", limit=10, unread_only=True)).items == ()
    carol = await s.list_notifications("carol", limit=10, unread_only=True)
    assert [n.id for n in carol.items] == ["n0"]  # per user
    assert await field_of(s.mark_notifications_read("bob", "n1", now_ms=now)) == "ids"
    too_many = [f"n{i}" for i in range(MAX_MARK_IDS + 1)]
    assert await field_of(s.mark_notifications_read("bob", too_many, now_ms=now)) == "ids"
    assert await field_of(s.mark_notifications_read("bob", [""], now_ms=now)) == "ids"
    assert await field_of(s.mark_notifications_read("bob", "all", now_ms=-1)) == "now_ms"


async def test_notification_paging(read_store: ReadStateStore) -> None:
    s = read_store
    # Two share a created_ms: ties go by id, descending.
    times = {"a": 1, "b": 2, "c": 2, "d": 3, "e": 4, "f": 5, "g": 6}
    for nid, t in times.items():
        await s.notify("bob", notification(nid, created=START_MS + t))
    await s.mark_notifications_read("bob", ["b", "e"], now_ms=START_MS)

    async def walk(limit: int, unread_only: bool) -> list[str]:
        ids: list[str] = []
        cursor: str | None = None
        while True:
            page = await s.list_notifications(
                "bob", limit=limit, cursor=cursor, unread_only=unread_only
            )
            assert len(page.items) <= limit
            ids += [n.id for n in page.items]
            if page.cursor is None:
                return ids
            cursor = page.cursor

    assert await walk(3, False) == ["g", "f", "e", "d", "c", "b", "a"]
    assert await walk(1, False) == ["g", "f", "e", "d", "c", "b", "a"]
    assert await walk(2, True) == ["g", "f", "d", "c", "a"]
    assert await walk(7, False) == ["g", "f", "e", "d", "c", "b", "a"]  # exactly one page

    first = await s.list_notifications("bob", limit=2)
    assert first.cursor is not None
    payload, _, tag = first.cursor.partition(".")
    tampered = [
        f"{payload}.{tag[:-1]}{'A' if tag[-1] != 'A' else 'B'}",
        f"{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{tag}",
        "garbage",
        "",
        "x" * 5000,
    ]
    for bad in tampered:
        with pytest.raises(BadCursor) as e:
            await s.list_notifications("bob", limit=2, cursor=bad)
        assert (e.value.field, e.value.reason) == ("cursor", "bad_cursor")
    with pytest.raises(BadCursor):  # another listing: unread_only
        await s.list_notifications("bob", limit=2, cursor=first.cursor, unread_only=True)
    with pytest.raises(BadCursor):  # another user's listing
        await s.list_notifications("carol", limit=2, cursor=first.cursor)
    for limit in (0, -1, 201):
        assert await field_of(s.list_notifications("bob", limit=limit)) == "limit"
    assert len((await s.list_notifications("bob", limit=200)).items) == 7


async def test_cursors_from_another_key_are_refused(read_opener: ReadOpener) -> None:
    async with read_opener.open() as s:
        for i in range(3):
            await s.notify("bob", notification(f"n{i}", created=START_MS + i))
        cursor = (await s.list_notifications("bob", limit=1)).cursor
        assert cursor is not None
    async with read_opener.open(cursor_key=b"another-deployment-key-0123456789") as s:
        with pytest.raises(BadCursor):
            await s.list_notifications("bob", limit=1, cursor=cursor)


# -- durability and statistics -------------------------------------------------------------


async def test_state_survives_close_and_reopen(read_opener: ReadOpener) -> None:
    async with read_opener.open() as s:
        await note(s, 1, "alice")
        await note(s, 2, "alice", mentions=["bob"])
        await note(s, 3, "bob")
        await note(s, 5, "alice", channel=DM)
        await s.mark_read("bob", CH, 1, now_ms=11)
        await s.mark_delivered("bob", DM, 4, now_ms=12)
        await s.mark_read("alice", DM, 5, now_ms=13)
        await s.notify("bob", notification("n1"))
        await s.notify("bob", notification("n2", created=START_MS + 1))
        await s.mark_notifications_read("bob", ["n1"], now_ms=14)
        before = (
            await s.unread("bob", [CH]),
            await s.get_cursor("bob", CH),
            await s.receipts(DM),
            await s.list_notifications("bob", limit=10),
        )
        assert before[0] == {CH: Unread(messages=1, mentions=1)}

    async with read_opener.open() as s:
        after = (
            await s.unread("bob", [CH]),
            await s.get_cursor("bob", CH),
            await s.receipts(DM),
            await s.list_notifications("bob", limit=10),
        )
        assert after == before
        assert await note(s, 2, "alice") is False  # noted offsets survived
        with pytest.raises(Conflict):  # the head survived: 4 is new but below it
            await note(s, 4, "bob", channel=DM)
        assert await s.notify("bob", notification("n1")) is False
        assert await s.mark_read("bob", CH, 1, now_ms=99) == before[1]

    async with read_opener.open("fresh") as s:
        assert await s.unread("bob", [CH]) == {CH: Unread()}
        assert await s.get_cursor("bob", CH) is None
        assert (await s.list_notifications("bob", limit=10)).items == ()


async def test_statistics_count_reads_writes_and_refusals(read_store: ReadStateStore) -> None:
    s = read_store
    start = s.statistics()
    await s.get_cursor("bob", CH)
    await s.unread("bob", [CH])
    await note(s, 2, "alice")
    await note(s, 2, "alice")  # a no-op write call still counts
    await s.mark_read("bob", CH, 1, now_ms=1)
    with pytest.raises(Conflict):
        await note(s, 1, "alice")
    with pytest.raises(InvalidField):
        await note(s, 0, "alice")  # input validation: not counted
    end = s.statistics()
    assert end.reads - start.reads == 2
    assert end.writes - start.writes == 3
    assert end.refusals - start.refusals == 1
