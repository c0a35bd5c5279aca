"""The MessageStore contract: every guarantee of ``gateway.store.base``, for every adapter."""

from __future__ import annotations

import pytest
import trio

from gateway.errors import StoreUnavailable
from gateway.model import Position, Record
from gateway.store.base import MessageStore, StoreStatistics
from tests.contract.conftest import Opener


def rec(
    channel: str,
    offset: int,
    epoch: str,
    *,
    sender: str = "alice",
    cmid: str | None = None,
    body: str | None = None,
    thread: str | None = None,
    kind: str = "",
    files: tuple[str, ...] = (),
) -> Record:
    return Record(
        channel=channel,
        offset=offset,
        epoch=epoch,
        id=f"{epoch}-{offset}",
        sender=sender,
        cmid=cmid if cmid is not None else f"c{offset}",
        body=body if body is not None else f"message {offset}",
        ts=1_700_000_000_000 + offset,
        thread=thread,
        kind=kind,
        files=files,
    )


async def fill(store: MessageStore, channel: str, n: int, *, batch: int = 7) -> list[Record]:
    epoch = (await store.open_log(channel)).epoch
    records = [rec(channel, i, epoch) for i in range(1, n + 1)]
    for i in range(0, n, batch):
        await store.write(records[i : i + batch])
    return records


# -- logs and epochs ---------------------------------------------------------------------


async def test_open_log_of_a_new_channel_is_empty_with_an_epoch(store: MessageStore) -> None:
    pos = await store.open_log("general")
    assert isinstance(pos, Position)
    assert pos.offset == 0
    assert pos.epoch


async def test_open_log_returns_the_same_epoch_every_time(store: MessageStore) -> None:
    first = await store.open_log("general")
    await fill(store, "general", 3)
    assert await store.open_log("general") == Position(first.epoch, 3)
    assert (await store.open_log("general")).epoch == first.epoch


async def test_epochs_are_random_per_channel(store: MessageStore) -> None:
    epochs = {(await store.open_log(f"ch{i}")).epoch for i in range(10)}
    assert len(epochs) == 10


async def test_concurrent_open_log_agrees_on_one_epoch(store: MessageStore) -> None:
    seen: list[Position] = []

    async def one() -> None:
        seen.append(await store.open_log("general"))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert len(set(seen)) == 1


async def test_epoch_head_and_history_survive_reopen(store_opener: Opener[MessageStore]) -> None:
    async with store_opener.open() as store:
        written = await fill(store, "general", 25)
        before = await store.open_log("general")
    async with store_opener.open() as store:
        assert await store.open_log("general") == before == Position(before.epoch, 25)
        assert list(await store.read("general", 0, 100)) == written


async def test_a_fresh_store_makes_a_new_epoch(store_opener: Opener[MessageStore]) -> None:
    async with store_opener.open("one") as one, store_opener.open("two") as two:
        await fill(one, "general", 2)
        a, b = await one.open_log("general"), await two.open_log("general")
    assert a.epoch != b.epoch
    assert b.offset == 0


# -- write -------------------------------------------------------------------------------


async def test_write_then_read_in_offset_order(store: MessageStore) -> None:
    written = await fill(store, "general", 20)
    got = await store.read("general", 0, 100)
    assert list(got) == written
    assert [r.offset for r in got] == list(range(1, 21))
    assert (await store.open_log("general")).offset == 20


async def test_records_round_trip_every_field(store: MessageStore) -> None:
    epoch = (await store.open_log("general")).epoch
    records = [
        rec("general", 1, epoch, body="", sender="bob", cmid="x"),
        rec("general", 2, epoch, body="héllo ✓ 🎉\n\"'", thread=f"{epoch}-1"),
        rec("general", 3, epoch, body="b" * 16_384),
        rec("general", 4, epoch, body='{"id": "x"}', kind="react"),
        rec("general", 5, epoch, files=("f" + "0" * 24, "f" + "1" * 24)),
    ]
    await store.write(records)
    assert list(await store.read("general", 0, 10)) == records


async def test_one_write_can_span_channels(store: MessageStore) -> None:
    ea, eb = (await store.open_log("a")).epoch, (await store.open_log("b")).epoch
    await store.write([rec("a", 1, ea), rec("b", 1, eb), rec("a", 2, ea), rec("b", 2, eb)])
    assert [r.channel for r in await store.read("a", 0, 10)] == ["a", "a"]
    assert [r.offset for r in await store.read("b", 0, 10)] == [1, 2]
    assert (await store.open_log("a")).offset == 2


async def test_reads_are_ascending_whatever_the_write_order(store: MessageStore) -> None:
    epoch = (await store.open_log("general")).epoch
    await store.write([rec("general", i, epoch) for i in (3, 1, 2)])
    await store.write([rec("general", i, epoch) for i in (5, 4)])
    assert [r.offset for r in await store.read("general", 0, 10)] == [1, 2, 3, 4, 5]
    assert [r.offset for r in await store.read_before("general", 99, 10)] == [1, 2, 3, 4, 5]


async def test_write_is_idempotent_per_channel_and_offset(store: MessageStore) -> None:
    written = await fill(store, "general", 5)
    await store.write(written)  # all again
    await store.write(written[2:4])  # some again
    await store.write([written[0], written[0]])  # twice in one call
    assert list(await store.read("general", 0, 100)) == written
    assert (await store.open_log("general")).offset == 5


async def test_overlapping_rewrite_stores_only_the_new_records(store: MessageStore) -> None:
    epoch = (await store.open_log("general")).epoch
    records = [rec("general", i, epoch) for i in range(1, 8)]
    await store.write(records[:4])
    await store.write(records[2:])  # 3, 4 already there; 5, 6, 7 new
    assert list(await store.read("general", 0, 100)) == records


async def test_a_different_record_at_a_stored_offset_is_refused(store: MessageStore) -> None:
    written = await fill(store, "general", 3)
    other = rec("general", 2, written[0].epoch, sender="mallory", body="overwrite?")
    with pytest.raises(StoreUnavailable):
        await store.write([other])
    assert list(await store.read("general", 0, 100)) == written


async def test_write_is_atomic(store: MessageStore) -> None:
    written = await fill(store, "general", 3)
    epoch = written[0].epoch
    other_epoch = (await store.open_log("other")).epoch
    bad_call = [
        rec("general", 4, epoch),
        rec("other", 1, other_epoch),
        rec("general", 2, epoch, body="changed"),  # conflicts with a stored record
        rec("general", 5, epoch),
    ]
    with pytest.raises(StoreUnavailable):
        await store.write(bad_call)
    assert list(await store.read("general", 0, 100)) == written
    assert list(await store.read("other", 0, 100)) == []
    assert (await store.open_log("general")).offset == 3
    assert (await store.open_log("other")).offset == 0
    # the store is still usable after a refused call
    await store.write([rec("general", 4, epoch)])
    assert (await store.open_log("general")).offset == 4


async def test_empty_write_is_a_no_op(store: MessageStore) -> None:
    await store.write([])
    assert (await store.open_log("general")).offset == 0


# -- reads -------------------------------------------------------------------------------


async def test_read_pages_forward(store: MessageStore) -> None:
    written = await fill(store, "general", 23)
    pages: list[Record] = []
    after = 0
    while page := await store.read("general", after, 5):
        assert len(page) <= 5
        pages.extend(page)
        after = page[-1].offset
    assert pages == written
    assert list(await store.read("general", 10, 3)) == written[10:13]
    assert list(await store.read("general", 20, 100)) == written[20:]
    assert list(await store.read("general", 23, 5)) == []
    assert list(await store.read("general", 50, 5)) == []
    assert list(await store.read("general", 0, 0)) == []
    assert list(await store.read("nowhere", 0, 5)) == []


async def test_read_before_pages_backward_newest_first(store: MessageStore) -> None:
    written = await fill(store, "general", 23)
    assert list(await store.read_before("general", 24, 5)) == written[18:23]
    assert list(await store.read_before("general", 1_000, 5)) == written[18:23]
    assert list(await store.read_before("general", 10, 3)) == written[6:9]
    assert list(await store.read_before("general", 3, 10)) == written[:2]
    assert list(await store.read_before("general", 1, 10)) == []
    assert list(await store.read_before("general", 10, 0)) == []
    pages: list[Record] = []
    before = 24
    while page := await store.read_before("general", before, 4):
        assert [r.offset for r in page] == sorted(r.offset for r in page)
        pages[:0] = page
        before = page[0].offset
    assert pages == written


async def test_channels_do_not_see_each_other(store: MessageStore) -> None:
    a = await fill(store, "a", 4)
    b = await fill(store, "b", 2)
    assert list(await store.read("a", 0, 10)) == a
    assert list(await store.read_before("b", 10, 10)) == b


async def test_find_cmid(store: MessageStore) -> None:
    epoch = (await store.open_log("general")).epoch
    mine = rec("general", 1, epoch, sender="alice", cmid="k1")
    theirs = rec("general", 2, epoch, sender="bob", cmid="k2")
    await store.write([mine, theirs])
    assert await store.find_cmid("general", "alice", "k1") == mine
    assert await store.find_cmid("general", "bob", "k2") == theirs
    assert await store.find_cmid("general", "bob", "k1") is None  # other sender
    assert await store.find_cmid("other", "alice", "k1") is None  # other channel
    assert await store.find_cmid("general", "alice", "nope") is None


async def test_read_by_sender_finds_an_authors_messages_newest_first(
    store: MessageStore,
) -> None:
    epoch = (await store.open_log("general")).epoch
    senders = ["alice", "bob", "alice", "alice", "bob", "alice"]
    records = [rec("general", i + 1, epoch, sender=s) for i, s in enumerate(senders)]
    records.append(rec("general", 7, epoch, sender="alice", kind="edit", body="{}"))
    await store.write(records)
    await store.write([rec("other", 1, (await store.open_log("other")).epoch, sender="alice")])
    with trio.fail_after(10):
        while len(found := await store.read_by_sender("general", "alice", 100, 10)) < 4:
            await trio.sleep(0.05)  # a GSI may lag the write by a moment
    assert [r.offset for r in found] == [6, 4, 3, 1]  # messages only, not the edit
    assert [r.offset for r in await store.read_by_sender("general", "alice", 4, 2)] == [3, 1]
    assert [r.offset for r in await store.read_by_sender("general", "bob", 100, 10)] == [5, 2]
    assert await store.read_by_sender("general", "carol", 100, 10) == []
    assert await store.read_by_sender("general", "alice", 100, 0) == []


async def test_statistics_count_calls(store: MessageStore) -> None:
    before = store.statistics()
    assert isinstance(before, StoreStatistics)
    await fill(store, "general", 10, batch=5)
    await store.read("general", 0, 10)
    after = store.statistics()
    assert after.writes - before.writes == 10
    assert after.batches - before.batches == 2
    assert after.reads > before.reads


async def test_a_write_that_returned_is_durable(store_opener: Opener[MessageStore]) -> None:
    async with store_opener.open() as store:
        written = await fill(store, "general", 4)
        # open a second handle on the same data while the first is still open
        async with store_opener.open() as second:
            assert list(await second.read("general", 0, 10)) == written
