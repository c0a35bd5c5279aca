"""The Presence contract: every guarantee of ``gateway.presence.base``, for every adapter.

Tests that need two nodes of one deployment (a change made on one node, reported on
another; a node that dies) run only on shared adapters (``shared_presence_opener``);
the others run on every adapter, the watcher being a second node where there can be one
(the ``nodes`` fixture) and the same adapter otherwise.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
import trio

from gateway.presence.base import Presence, PresenceState
from tests.contract.conftest import PRESENCE_TTL, Opener

TTL = PRESENCE_TTL
REPORT_WITHIN = 2.0  # seconds: a change made by set_device/remove_device is reported
SLACK_MS = 50  # the Redis server's clock against ours (the same machine)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Recorder:
    """Collects what one node's change handler is called with."""

    def __init__(self, presence: Presence) -> None:
        self.states: list[PresenceState] = []
        self._lot = trio.lowlevel.ParkingLot()
        presence.on_change(self._changed)

    def _changed(self, state: PresenceState) -> None:
        self.states.append(state)
        self._lot.unpark_all()

    def of(self, user: str) -> list[PresenceState]:
        return [s for s in self.states if s.user == user]

    def statuses(self, user: str) -> list[str]:
        return [s.status for s in self.of(user)]

    async def wait(self, ready: Callable[[], bool], timeout: float = REPORT_WITHIN) -> None:
        with trio.fail_after(timeout):
            while not ready():
                await self._lot.park()

    async def until(self, user: str, status: str, timeout: float = REPORT_WITHIN) -> PresenceState:
        """Wait until the latest report of ``user`` has ``status``; return it."""
        await self.wait(lambda: bool(self.of(user)) and self.of(user)[-1].status == status, timeout)
        return self.of(user)[-1]


@pytest.fixture
async def presence(presence_opener: Opener[Presence]) -> AsyncIterator[Presence]:
    async with presence_opener.open() as p:
        yield p


@pytest.fixture
async def nodes(presence_opener: Opener[Presence]) -> AsyncIterator[tuple[Presence, Presence]]:
    """(writer, watcher): two nodes of one deployment, or one adapter twice."""
    async with presence_opener.open() as writer:
        if getattr(presence_opener.factory, "shared", False):
            async with presence_opener.open() as watcher:
                yield writer, watcher
        else:
            yield writer, writer


def key(s: PresenceState) -> tuple[str, int]:
    """What a report is compared by: the status, and last_seen when offline."""
    return s.status, s.last_seen if s.status == "offline" else 0


def is_subsequence(got: Sequence[PresenceState], done: Sequence[PresenceState]) -> bool:
    it = iter(key(s) for s in done)
    return all(any(k == d for d in it) for k in (key(s) for s in got))


# -- aggregates ----------------------------------------------------------------------------


async def test_a_user_never_seen_is_offline_with_last_seen_0(presence: Presence) -> None:
    assert await presence.get(["nobody", "nobody-else"]) == [
        PresenceState("nobody", "offline", 0),
        PresenceState("nobody-else", "offline", 0),
    ]
    assert await presence.get([]) == []
    assert await presence.remove_device("ghost", "d1") == PresenceState("ghost", "offline", 0)
    assert presence.ttl == TTL


async def test_one_device_online(presence: Presence) -> None:
    t0 = now_ms()
    state = await presence.set_device("alice", "d1", "online")
    t1 = now_ms()
    assert (state.user, state.status) == ("alice", "online")
    assert t0 - SLACK_MS <= state.last_seen <= t1 + SLACK_MS  # online: last seen now
    [got] = await presence.get(["alice"])
    assert got.status == "online"
    assert state.last_seen <= got.last_seen <= now_ms() + SLACK_MS
    assert (await presence.get(["bob"]))[0].status == "offline"  # users are independent


async def test_aggregate_is_online_over_away_over_offline(presence: Presence) -> None:
    assert (await presence.set_device("u", "phone", "away")).status == "away"
    assert (await presence.set_device("u", "laptop", "online")).status == "online"
    assert (await presence.set_device("u", "tablet", "away")).status == "online"
    assert (await presence.set_device("u", "laptop", "away")).status == "away"  # updated
    assert (await presence.set_device("u", "phone", "online")).status == "online"
    assert (await presence.remove_device("u", "phone")).status == "away"
    assert (await presence.remove_device("u", "laptop")).status == "away"
    assert [s.status for s in await presence.get(["u", "v", "u"])] == ["away", "offline", "away"]
    t0 = now_ms()
    last = await presence.remove_device("u", "tablet")
    assert last.status == "offline"
    assert t0 - SLACK_MS <= last.last_seen <= now_ms() + SLACK_MS


async def test_remove_device_turns_offline_with_last_seen(presence: Presence) -> None:
    await presence.set_device("carol", "d1", "online")
    t0 = now_ms()
    gone = await presence.remove_device("carol", "d1")
    t1 = now_ms()
    assert gone.user == "carol" and gone.status == "offline"
    assert t0 - SLACK_MS <= gone.last_seen <= t1 + SLACK_MS
    assert await presence.get(["carol"]) == [gone]  # last_seen stays when it was
    assert await presence.remove_device("carol", "d1") == gone  # removing twice: no change


async def test_leases_are_renewed_while_the_node_lives(
    nodes: tuple[Presence, Presence],
) -> None:
    writer, watcher = nodes
    seen = Recorder(watcher)
    await watcher.watch(["erin"])
    await writer.set_device("erin", "d1", "online")
    await seen.until("erin", "online")
    await trio.sleep(2.5 * TTL)  # the duration under test: longer than a lease
    assert [s.status for s in await watcher.get(["erin"])] == ["online"]
    assert seen.statuses("erin") == ["online"]


async def test_bad_input_raises_value_error(presence: Presence) -> None:
    with pytest.raises(ValueError):
        await presence.set_device("", "d1", "online")
    with pytest.raises(ValueError):
        await presence.set_device("u", "", "online")
    with pytest.raises(ValueError):
        await presence.set_device("u", "d1", "busy")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await presence.remove_device("", "d1")
    with pytest.raises(ValueError):
        await presence.remove_device("u", "")
    for call in (presence.get, presence.watch, presence.unwatch):
        with pytest.raises(ValueError):
            await call(["ok", ""])
    assert await presence.get(["u"]) == [PresenceState("u", "offline", 0)]  # nothing stored


# -- watching ------------------------------------------------------------------------------


async def test_watch_reports_changes(nodes: tuple[Presence, Presence]) -> None:
    writer, watcher = nodes
    seen = Recorder(watcher)
    await watcher.watch(["bob"])
    await writer.set_device("bob", "d1", "online")
    await seen.until("bob", "online")
    await writer.set_device("bob", "d1", "away")
    await seen.until("bob", "away")
    gone = await writer.remove_device("bob", "d1")
    assert await seen.until("bob", "offline") == gone  # with its last_seen
    assert seen.statuses("bob") == ["online", "away", "offline"]
    assert [s.user for s in seen.states] == ["bob"] * 3  # only watched users


async def test_watch_does_not_report_the_state_it_starts_from(
    nodes: tuple[Presence, Presence],
) -> None:
    writer, watcher = nodes
    seen = Recorder(watcher)
    await writer.set_device("bob", "d1", "online")
    await watcher.watch(["bob"])
    await writer.set_device("bob", "d1", "away")
    await seen.until("bob", "away")
    assert seen.statuses("bob") == ["away"]


async def test_an_unchanged_aggregate_is_not_reported(nodes: tuple[Presence, Presence]) -> None:
    writer, watcher = nodes
    seen = Recorder(watcher)
    await watcher.watch(["bob"])
    await writer.set_device("bob", "d1", "online")
    await seen.until("bob", "online")
    await writer.set_device("bob", "d2", "online")  # still online
    await writer.set_device("bob", "d1", "away")  # d2 keeps it online
    await writer.set_device("bob", "d2", "online")  # the same again
    await writer.remove_device("bob", "ghost")  # not a device of bob
    await watcher.watch(["bob"])  # watching twice is watching once
    await writer.remove_device("bob", "d2")  # the next change: now away
    await seen.until("bob", "away")
    await writer.remove_device("bob", "d1")
    await seen.until("bob", "offline")
    assert seen.statuses("bob") == ["online", "away", "offline"]


async def test_unwatch_stops_reports(nodes: tuple[Presence, Presence]) -> None:
    writer, watcher = nodes
    seen = Recorder(watcher)
    await watcher.watch(["bob", "bob"])
    await watcher.watch(["bob"])
    await writer.set_device("bob", "d1", "online")
    await seen.until("bob", "online")
    await watcher.unwatch(["bob", "never-watched"])  # a set: one unwatch is enough
    await writer.set_device("bob", "d1", "away")
    await writer.remove_device("bob", "d1")
    await watcher.watch(["bob"])  # from here on again (offline now: not reported)
    await writer.set_device("bob", "d2", "online")
    await seen.wait(lambda: len(seen.of("bob")) == 2)
    assert seen.statuses("bob") == ["online", "online"]  # nothing while unwatched


async def test_reports_of_one_user_come_in_order(nodes: tuple[Presence, Presence]) -> None:
    writer, watcher = nodes
    seen = Recorder(watcher)
    await watcher.watch(["zoe"])
    done: list[PresenceState] = []
    for i in range(10):
        done.append(await writer.set_device("zoe", f"d{i}", "online"))
        done.append(await writer.set_device("zoe", f"d{i}", "away"))
        done.append(await writer.remove_device("zoe", f"d{i}"))
    await seen.wait(lambda: bool(seen.of("zoe")) and key(seen.of("zoe")[-1]) == key(done[-1]))
    got = seen.of("zoe")
    assert is_subsequence(got, done), (got, done)  # in order; coalesced at most
    assert all(key(a) != key(b) for a, b in itertools.pairwise(got))


async def test_a_hundred_users_watched_at_once(nodes: tuple[Presence, Presence]) -> None:
    writer, watcher = nodes
    seen = Recorder(watcher)
    users = [f"user-{i}" for i in range(100)]
    await watcher.watch(users)
    async with trio.open_nursery() as nursery:
        for u in users:
            nursery.start_soon(writer.set_device, u, f"{u}-d", "online")
    await seen.wait(lambda: all(seen.statuses(u)[-1:] == ["online"] for u in users))
    assert [s.status for s in await watcher.get(users)] == ["online"] * 100
    async with trio.open_nursery() as nursery:
        for u in users:
            nursery.start_soon(writer.remove_device, u, f"{u}-d")
    await seen.wait(lambda: all(seen.statuses(u) == ["online", "offline"] for u in users))


# -- several nodes -------------------------------------------------------------------------


async def test_devices_on_several_nodes_aggregate(
    shared_presence_opener: Opener[Presence],
) -> None:
    async with shared_presence_opener.open() as a, shared_presence_opener.open() as b:
        await a.set_device("kim", "a-1", "away")
        assert (await b.set_device("kim", "b-1", "online")).status == "online"
        assert (await a.get(["kim"]))[0].status == "online"  # visible as soon as it returns
        assert (await b.remove_device("kim", "b-1")).status == "away"
        assert (await a.get(["kim"]))[0].status == "away"


async def test_watch_reports_changes_made_on_another_node(
    shared_presence_opener: Opener[Presence],
) -> None:
    async with shared_presence_opener.open() as a, shared_presence_opener.open() as b:
        seen_a, seen_b = Recorder(a), Recorder(b)
        await a.watch(["lee"])
        await b.watch(["lee"])
        await a.set_device("lee", "a-1", "online")
        await seen_b.until("lee", "online")
        await b.set_device("lee", "b-1", "away")  # no change: a-1 is online
        gone = await a.remove_device("lee", "a-1")
        assert gone.status == "away"
        await seen_a.until("lee", "away")
        await seen_b.until("lee", "away")
        gone = await b.remove_device("lee", "b-1")
        assert await seen_a.until("lee", "offline") == gone
        assert await seen_b.until("lee", "offline") == gone
        assert seen_a.statuses("lee") == seen_b.statuses("lee") == ["online", "away", "offline"]


async def test_a_cancelled_node_lapses_on_the_others(
    shared_presence_opener: Opener[Presence],
) -> None:
    async def doomed_node(task_status: trio.TaskStatus[int]) -> None:
        async with shared_presence_opener.open() as node:
            state = await node.set_device("dave", "dead-1", "online")
            await node.set_device("dave", "dead-2", "away")
            task_status.started(state.last_seen)
            await trio.sleep_forever()

    async with shared_presence_opener.open() as watcher:
        seen = Recorder(watcher)
        await watcher.watch(["dave"])
        async with trio.open_nursery() as nursery:
            set_at = await nursery.start(doomed_node)
            await seen.until("dave", "online")
            await trio.sleep(TTL / 2)  # let the node renew its leases at least once
            nursery.cancel_scope.cancel()  # dies: it removes nothing
        killed, t0 = now_ms(), trio.current_time()
        assert (await watcher.get(["dave"]))[0].status == "online"  # still leased
        gone = await seen.until("dave", "offline", timeout=2 * TTL)
        assert trio.current_time() - t0 >= TTL / 2  # lapsed, not removed
        assert set_at <= gone.last_seen <= now_ms() + SLACK_MS
        assert gone.last_seen >= killed - SLACK_MS  # the lease outlived the node
        assert await watcher.get(["dave"]) == [gone]
        assert seen.statuses("dave") == ["online", "offline"]


async def test_a_graceful_close_removes_devices_at_once(
    shared_presence_opener: Opener[Presence],
) -> None:
    async with shared_presence_opener.open() as watcher:
        seen = Recorder(watcher)
        await watcher.watch(["fay"])
        async with shared_presence_opener.open() as node:
            await node.set_device("fay", "n-1", "online")
            await node.set_device("fay", "n-2", "away")
            await seen.until("fay", "online")
            t0 = now_ms()
        [state] = await watcher.get(["fay"])  # no waiting for a lease
        assert state.status == "offline"
        assert t0 - SLACK_MS <= state.last_seen <= now_ms() + SLACK_MS
        assert await seen.until("fay", "offline", timeout=TTL / 2) == state
