"""The MessageStore contract, ``write_behind``: what the Redis bus's write-behind relies on,
for every adapter (idempotent, per-channel refusals, late duplicates left out)."""

from __future__ import annotations

from gateway.store.base import MessageStore, WriteBehindResult
from tests.contract.test_store_contract import fill, rec


async def test_stores_records_and_raises_the_head(store: MessageStore) -> None:
    epoch = (await store.open_log("general")).epoch
    records = [rec("general", i, epoch) for i in range(1, 6)]
    assert await store.write_behind(records) == WriteBehindResult()
    assert list(await store.read("general", 0, 100)) == records
    assert (await store.open_log("general")).offset == 5
    found = await store.find_cmid("general", "alice", "c3")
    assert found == records[2]


async def test_is_idempotent_and_overlaps(store: MessageStore) -> None:
    epoch = (await store.open_log("general")).epoch
    records = [rec("general", i, epoch) for i in range(1, 9)]
    await store.write_behind(records[:5])
    assert await store.write_behind(records[:5]) == WriteBehindResult()  # all again
    assert await store.write_behind(records[3:]) == WriteBehindResult()  # 4, 5 again
    assert await store.write_behind([records[0], records[0]]) == WriteBehindResult()
    assert list(await store.read("general", 0, 100)) == records
    assert (await store.open_log("general")).offset == 8


async def test_a_log_the_store_never_saw_is_created_in_the_records_epoch(
    store: MessageStore,
) -> None:
    records = [rec("fresh", i, "e-from-the-bus") for i in range(1, 4)]
    assert await store.write_behind(records) == WriteBehindResult()
    position = await store.open_log("fresh")
    assert (position.epoch, position.offset) == ("e-from-the-bus", 3)
    assert list(await store.read("fresh", 0, 10)) == records


async def test_spans_channels_and_many_records(store: MessageStore) -> None:
    a = (await store.open_log("a")).epoch
    b = (await store.open_log("b")).epoch
    records = [rec("a", i, a, body="x" * (i % 50)) for i in range(1, 131)]
    records += [rec("b", i, b) for i in range(1, 41)]
    assert await store.write_behind(records[::-1]) == WriteBehindResult()  # any order
    assert list(await store.read("a", 0, 1000)) == records[:130]
    assert list(await store.read("b", 0, 1000)) == records[130:]
    assert (await store.open_log("a")).offset == 130
    assert (await store.open_log("b")).offset == 40


async def test_a_late_duplicate_is_left_out_and_returned(store: MessageStore) -> None:
    stored = await fill(store, "general", 2)
    epoch = stored[0].epoch
    late = rec("general", 3, epoch, cmid="c1", body="sent again after the window")
    after = rec("general", 4, epoch)
    for _ in range(2):  # and the same again: a retried write-behind
        result = await store.write_behind([late, after])
        assert result == WriteBehindResult(duplicates=[late])
    assert list(await store.read("general", 0, 100)) == [*stored, after]
    assert await store.find_cmid("general", "alice", "c1") == stored[0]
    assert (await store.open_log("general")).offset == 4  # offset 3 stays empty


async def test_a_cmid_twice_in_one_call_keeps_the_lower_offset(store: MessageStore) -> None:
    epoch = (await store.open_log("general")).epoch
    first = rec("general", 1, epoch, cmid="same")
    second = rec("general", 2, epoch, cmid="same", body="again")
    result = await store.write_behind([second, first])
    assert result == WriteBehindResult(duplicates=[second])
    assert list(await store.read("general", 0, 100)) == [first]
    assert (await store.open_log("general")).offset in (1, 2)  # the empty offset may count


async def test_a_channel_in_another_epoch_is_refused_alone(store: MessageStore) -> None:
    stored = await fill(store, "general", 3)
    other = (await store.open_log("other")).epoch
    wrong = [rec("general", i, "not-the-stores-epoch") for i in (4, 5)]
    fine = [rec("other", i, other) for i in (1, 2)]
    result = await store.write_behind([*wrong, *fine])
    assert list(result.refused) == ["general"]
    assert "epoch" in result.refused["general"]
    assert result.duplicates == []
    assert list(await store.read("general", 0, 100)) == stored
    assert (await store.open_log("general")).offset == 3
    assert list(await store.read("other", 0, 100)) == fine


async def test_an_empty_call_does_nothing(store: MessageStore) -> None:
    assert await store.write_behind([]) == WriteBehindResult()
    assert (await store.open_log("general")).offset == 0
