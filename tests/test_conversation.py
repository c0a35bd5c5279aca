"""A whole conversation of the chat domain, end to end: several users and devices through
the Python SDK and the REST API against real gateway nodes, each assertion about who sees
what (protocol sections 18-26).

The world, built over REST: a workspace owned by alice, with bob (admin), carol (member),
dave (guest) and erin (member); #general (public: alice, bob, carol, erin), #secret
(private: alice, bob) and a DM of alice and bob. zed has a valid token and nothing else.

Every client runs through a :class:`Device`, which records what :meth:`Client.events`
yields and, through a tap on the SDK's frame dispatch, every frame the server sent (the SDK
drops entries of channels it is not subscribed to, so only the wire shows a leak).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVarTuple

import httpx
import pytest
import trio

from gateway.app import Gateway
from gateway.client import (
    Ack,
    ChannelEvent,
    Client,
    Disconnected,
    Event,
    MemberEvent,
    MessageDeleted,
    MessageEvent,
    MessageUpdated,
    NotificationEvent,
    Position,
    PresenceEvent,
    PublishError,
    ReactionEvent,
    ReadEvent,
    ReceiptEvent,
    Reconnected,
    SubscribeError,
    ThreadEvent,
    TypingEvent,
    Unsubscribed,
    open_client,
    thread_of,
)
from gateway.client._conn import CloseInfo
from gateway.client._util import raise_single
from gateway.protocol import frames as f
from tests.client.test_sdk import FAST
from tests.conftest import token
from tests.routes.domain_helpers import auth, check_error, make_channel, make_user, make_workspace
from tests.test_multinode import open_nodes

Ts = TypeVarTuple("Ts")

TIMEOUT = 60
AT_ONCE = 5  # seconds: what "at once" may take on a loaded two-core machine

LOG_TYPES = (
    MessageEvent,
    MessageUpdated,
    MessageDeleted,
    ReactionEvent,
    ThreadEvent,
    MemberEvent,
    ChannelEvent,
    ReadEvent,
    NotificationEvent,
)
TRAFFIC = (*LOG_TYPES, TypingEvent, ReceiptEvent)  # frames that carry a channel's traffic


def typers(d: Any) -> set[tuple[str, str]]:
    """(channel, user) of the typing events a device got (their expiry aside)."""
    return {(t.channel, t.user) for t in d.typing}


# ------------------------------------------------------------------ devices


class Device:
    """One client (a user's device): what it was given, and what the server sent it."""

    def __init__(self, label: str, client: Client) -> None:
        self.label = label
        self.client = client
        self.log: dict[str, list[Any]] = {}  # log entries per channel, as delivered
        self.typing: list[TypingEvent] = []
        self.receipts: list[ReceiptEvent] = []
        self.presence: list[PresenceEvent] = []
        self.ended: list[Unsubscribed] = []
        self.notices: list[Event] = []
        self.wire: list[f.ServerFrame] = []  # every frame received, before the SDK's filter
        self._changed = trio.Event()
        state = client._state
        dispatch = state.dispatch

        async def tap(conn: Any, frame: f.ServerFrame) -> None:
            self.wire.append(frame)
            self._poke()
            await dispatch(conn, frame)

        state.dispatch = tap  # type: ignore[method-assign]

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> None:
        async for event in self.client.events():
            if isinstance(event, LOG_TYPES):
                self.log.setdefault(event.channel, []).append(event)
            elif isinstance(event, TypingEvent):
                self.typing.append(event)
            elif isinstance(event, ReceiptEvent):
                self.receipts.append(event)
            elif isinstance(event, PresenceEvent):
                self.presence.append(event)
            elif isinstance(event, Unsubscribed):
                self.ended.append(event)
            else:
                self.notices.append(event)
            self._poke()

    async def until(self, predicate: Callable[[*Ts], object], *args: *Ts) -> None:
        """Wait until ``predicate(*args)`` holds (the args bind a loop's variables)."""
        while not predicate(*args):
            await self._changed.wait()

    def entries(self, channel: str, kind: type[Any] | None = None) -> list[Any]:
        got = self.log.get(channel, [])
        return got if kind is None else [e for e in got if isinstance(e, kind)]

    def head(self, channel: str) -> int:
        got = self.log.get(channel)
        return got[-1].offset if got else 0

    async def reach(self, channel: str, offset: int) -> None:
        await self.until(lambda: self.head(channel) >= offset)

    def traffic(self, channel: str | None = None) -> list[Any]:
        """Frames of channel traffic on the wire (log entries, typing, receipts)."""
        return [
            fr
            for fr in self.wire
            if isinstance(fr, TRAFFIC) and (channel is None or fr.channel == channel)
        ]

    def channels_heard(self) -> set[str]:
        return {fr.channel for fr in self.traffic()}

    def status(self, user: str) -> str | None:
        mine = [p for p in self.presence if p.user == user]
        return mine[-1].status if mine else None

    def ended_on(self, channel: str) -> Unsubscribed | None:
        return next((u for u in self.ended if u.channel == channel), None)

    def drop(self) -> None:
        """Drop the TCP connection without a close handshake (the SDK sees 1006)."""
        conn = self.client._state.conn
        assert conn is not None
        conn.abort(CloseInfo(1006, "test: connection dropped"))


class Devices:
    """Opens devices inside one nursery (their collectors) and one exit stack (clients)."""

    def __init__(self, nursery: trio.Nursery, stack: AsyncExitStack) -> None:
        self._nursery = nursery
        self._stack = stack

    async def open(self, url: str, user: str, label: str = "", **kw: Any) -> Device:
        return await self.open_with(url, token(user), label or user, **kw)

    async def open_with(self, url: str, tok: Any, label: str, **kw: Any) -> Device:
        client = await self._stack.enter_async_context(open_client(url, tok, **kw))
        device = Device(label, client)
        self._nursery.start_soon(device.run)
        return device


@asynccontextmanager
async def devices() -> AsyncIterator[Devices]:
    """Leaving closes the clients (their collectors end with ``events()``); a failure
    inside comes out unwrapped from the nursery's exception group."""
    try:
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            yield Devices(nursery, stack)
    except BaseExceptionGroup as group:
        raise_single(group)


class Gate:
    """A token source that can hold a device away (its reconnects wait for ``open``)."""

    def __init__(self, user: str) -> None:
        self.user = user
        self._open = trio.Event()
        self._open.set()

    def close(self) -> None:
        self._open = trio.Event()

    def open(self) -> None:
        self._open.set()

    async def __call__(self) -> str:
        await self._open.wait()
        return token(self.user)


async def all_reach(devs: Iterable[Device], channel: str, offset: int) -> None:
    for dev in devs:
        await dev.reach(channel, offset)


async def refused(client: Client, channel: str, since: Position | None = None) -> str:
    with pytest.raises(SubscribeError) as info:
        await client.subscribe(channel, since=since)
    return info.value.code


async def publish_refused(call: Any) -> str:
    with pytest.raises(PublishError) as info:
        await call
    return info.value.code


# ------------------------------------------------------------------ the world, over REST


@dataclasses.dataclass(frozen=True)
class World:
    ws: str
    general: str
    secret: str
    dm: str

    @property
    def ws_log(self) -> str:
        return f"ws.{self.ws}"


async def join(http: httpx.AsyncClient, channel: str, user: str, *, by: str | None = None) -> None:
    r = await http.put(f"/v1/channels/{channel}/members/{user}", headers=auth(by or user))
    assert r.status_code == 201, r.text


async def build_world(http: httpx.AsyncClient) -> World:
    await make_user(http, "alice")
    ws = await make_workspace(
        http, "alice", {"bob": "admin", "carol": "member", "dave": "guest", "erin": "member"}
    )
    general = (await make_channel(http, ws, "alice", "general"))["id"]
    for user in ("bob", "carol", "erin"):
        await join(http, general, user)  # members join public channels themselves
    secret = (await make_channel(http, ws, "alice", "secret", "private"))["id"]
    await join(http, secret, "bob", by="alice")
    r = await http.post(f"/v1/workspaces/{ws}/dms", headers=auth("alice"), json={"users": ["bob"]})
    assert r.status_code == 200, r.text
    dm = r.json()["id"]
    assert dm.startswith("dm.") and general.startswith("ch.") and secret.startswith("ch.")
    # what each one may list
    for user, expected in (
        ("alice", {general, secret}),
        ("bob", {general, secret}),
        ("carol", {general}),
        ("erin", {general}),
        ("dave", set()),
    ):
        r = await http.get(f"/v1/workspaces/{ws}/channels", headers=auth(user))
        assert r.status_code == 200, r.text
        assert {c["id"] for c in r.json()["items"]} == expected, user
    r = await http.get(f"/v1/workspaces/{ws}/channels", headers=auth("zed"))
    assert r.status_code in (403, 404), r.text
    return World(ws, general, secret, dm)


async def history(
    http: httpx.AsyncClient, channel: str, user: str, **params: Any
) -> httpx.Response:
    return await http.get(
        f"/v1/channels/{channel}/messages", headers=auth(user), params=params or None
    )


async def unread(http: httpx.AsyncClient, ws: str, user: str) -> dict[str, Any]:
    r = await http.get("/v1/users/me/unread", params={"workspace": ws}, headers=auth(user))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["more"] is False
    channels: dict[str, Any] = body["channels"]
    return channels


async def notifications(http: httpx.AsyncClient, user: str, **params: str) -> list[Any]:
    r = await http.get("/v1/users/me/notifications", headers=auth(user), params=params or None)
    assert r.status_code == 200, r.text
    items: list[Any] = r.json()["items"]
    return items


def notes_of(dev: Device, log: str) -> list[str]:
    return [n.id for n in dev.entries(log, NotificationEvent)]


def member_event(dev: Device, channel: str, user: str, joined: bool) -> MemberEvent | None:
    for e in dev.entries(channel, MemberEvent):
        if e.user == user and e.joined is joined:
            assert isinstance(e, MemberEvent)
            return e
    return None


# ------------------------------------------------------------------ 1 + 6: the conversation


async def test_a_conversation_reaches_exactly_its_audience(gateway: Gateway) -> None:
    """Messages, reactions, an edit, a thread and a delete in #general, a message in #secret
    and in the DM: each member gets every entry once, in order, the same as every other
    member; nobody gets what is not theirs; the REST history shows the current state."""
    url = gateway.ws_url
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
            w = await build_world(http)
            async with devices() as room:
                alice = await room.open(url, "alice")
                bob = await room.open(url, "bob", codec="json")
                carol = await room.open(url, "carol")
                erin = await room.open(url, "erin")
                dave = await room.open(url, "dave")
                zed = await room.open(url, "zed")
                everyone = (alice, bob, carol, erin, dave, zed)
                members = (alice, bob, carol, erin)

                # -- who may subscribe to what
                subs = [await d.client.subscribe(w.general) for d in members]
                assert len({(s.epoch, s.offset) for s in subs}) == 1
                start = subs[0].offset  # the channel's creation and the joins
                assert start == 4
                for d in (alice, bob):
                    await d.client.subscribe(w.secret)
                    await d.client.subscribe(w.dm)
                for d, channel in (
                    (carol, w.secret),
                    (carol, w.dm),
                    (erin, w.secret),
                    (erin, w.dm),
                    (dave, w.general),  # a guest sees only the channels it is in
                    (dave, w.secret),
                    (dave, w.dm),
                    (zed, w.general),  # a stranger sees nothing
                    (zed, w.secret),
                    (zed, w.dm),
                    (zed, w.ws_log),
                    (carol, "u.alice"),  # another user's log
                ):
                    assert await refused(d.client, channel) == "forbidden", (d.label, channel)
                await dave.client.subscribe(w.ws_log)  # guests may follow the workspace

                # -- #general: messages, reactions, an edit, a thread, a delete
                gen = w.general
                m1 = await alice.client.publish(gen, "hello team")
                m2 = await bob.client.publish(gen, "hi alice")
                m3 = await carol.client.publish(gen, "lunhc at noon?")
                r1 = await bob.client.react(gen, m1.id, "👍")
                r2 = await carol.client.react(gen, m1.id, "👍")
                r3 = await erin.client.react(gen, m1.id, ":tada:")
                assert [(r.offset, r.version) for r in (r1, r2, r3)] == [
                    (start + 4, 1),
                    (start + 5, 1),
                    (start + 6, 1),
                ]
                # only the author edits, and only from the version it saw
                code = await publish_refused(alice.client.edit(gen, m3.id, "no", version=1))
                assert code == "forbidden"
                code = await publish_refused(carol.client.edit(gen, m3.id, "no", version=2))
                assert code == "stale_version"
                e1 = await carol.client.edit(gen, m3.id, "lunch at noon?", version=1)
                assert (e1.offset, e1.version) == (start + 7, 2)
                thread = thread_of(m1)
                assert thread == f"{gen}:t{m1.offset}"
                await erin.client.subscribe(thread)  # erin follows the thread from the start
                t1 = await bob.client.publish(gen, "count me in", thread=m1.id)
                t2 = await carol.client.publish(gen, "me too", thread=m1.id)
                assert (t1.channel, t1.offset, t2.channel, t2.offset) == (thread, 1, thread, 2)
                m4 = await erin.client.publish(gen, "wrong channel, sorry")
                assert m4.offset == start + 10  # after the two thread summaries
                # a member may not delete another's message; an admin may
                assert await publish_refused(carol.client.delete(gen, m4.id)) == "forbidden"
                d1 = await bob.client.delete(gen, m4.id)
                assert (d1.offset, d1.version) == (start + 11, 2)
                code = await publish_refused(alice.client.react(gen, m4.id, "👀"))
                assert code == "conflict"  # a tombstone takes no reactions
                code = await publish_refused(carol.client.edit(gen, m4.id, "x", version=2))
                assert code == "forbidden"

                # -- #secret and the DM, then a last message of #general: once bob has the
                # secret and the DM entries, they were fanned out to every subscriber
                s1 = await alice.client.publish(w.secret, "salary review at 3")
                s2 = await bob.client.react(w.secret, s1.id, "👀")
                dm1 = await alice.client.publish(w.dm, "bob, a word?")
                await bob.reach(w.secret, s2.offset)
                await bob.reach(w.dm, dm1.offset)
                await alice.reach(w.secret, s2.offset)
                await alice.reach(w.dm, dm1.offset)
                last = await alice.client.publish(gen, "see you at noon")
                assert last.offset == start + 12
                await all_reach(members, gen, last.offset)
                await erin.reach(thread, t2.offset)

                # -- every member saw the same #general log, in order, without gaps
                seen = alice.entries(gen)
                assert [e.offset for e in seen] == list(range(start + 1, start + 13))
                for d in members:
                    assert d.entries(gen) == seen, d.label
                    assert [fr.offset for fr in d.traffic(gen)] == [e.offset for e in seen]
                kinds = [type(e) for e in seen]
                assert kinds == [
                    MessageEvent,
                    MessageEvent,
                    MessageEvent,
                    ReactionEvent,
                    ReactionEvent,
                    ReactionEvent,
                    MessageUpdated,
                    ThreadEvent,
                    ThreadEvent,
                    MessageEvent,
                    MessageDeleted,
                    MessageEvent,
                ]
                assert [(e.sender, e.body, e.id) for e in seen if isinstance(e, MessageEvent)] == [
                    ("alice", "hello team", m1.id),
                    ("bob", "hi alice", m2.id),
                    ("carol", "lunhc at noon?", m3.id),  # as posted; the edit follows
                    ("erin", "wrong channel, sorry", m4.id),
                    ("alice", "see you at noon", last.id),
                ]
                assert [
                    (e.user, e.emoji, e.added, e.count)
                    for e in seen
                    if isinstance(e, ReactionEvent)
                ] == [("bob", "👍", True, 1), ("carol", "👍", True, 2), ("erin", ":tada:", True, 1)]
                edit = seen[6]
                assert (edit.id, edit.version, edit.body, edit.by) == (
                    m3.id,
                    2,
                    "lunch at noon?",
                    "carol",
                )
                summaries = [e for e in seen if isinstance(e, ThreadEvent)]
                assert [(s.id, s.user, s.replies, s.participants) for s in summaries] == [
                    (m1.id, "bob", 1, ["bob"]),
                    (m1.id, "carol", 2, ["bob", "carol"]),
                ]
                tomb = seen[10]
                assert (tomb.id, tomb.version, tomb.by) == (m4.id, 2, "bob")

                # -- the thread: its followers get the replies, the channel the summaries
                replies = erin.entries(thread)
                assert [(r.offset, r.sender, r.body, r.thread) for r in replies] == [
                    (1, "bob", "count me in", m1.id),
                    (2, "carol", "me too", m1.id),
                ]
                await alice.client.subscribe(thread, since=Position(t1.epoch, 0))
                await alice.reach(thread, 2)
                assert alice.entries(thread) == replies
                # the repliers do not follow the thread: only their acks name it
                for d in (bob, carol):
                    assert d.traffic(thread) == [], d.label

                # -- nobody heard what is not theirs (on the wire, not only in events())
                assert alice.channels_heard() == {gen, w.secret, w.dm, thread}
                assert bob.channels_heard() == {gen, w.secret, w.dm}
                assert carol.channels_heard() == {gen}
                assert erin.channels_heard() == {gen, thread}
                assert dave.channels_heard() == set()
                assert zed.channels_heard() == set()
                assert bob.entries(w.secret) == alice.entries(w.secret)
                assert [type(e) for e in bob.entries(w.secret)] == [MessageEvent, ReactionEvent]
                assert [e.body for e in bob.entries(w.dm)] == ["bob, a word?"]
                for d in everyone:
                    assert d.ended == [], d.label  # nothing was withdrawn

            # -- 6: the REST history shows the current state
            r = await history(http, gen, "carol", after=str(start))
            assert r.status_code == 200, r.text
            page = r.json()
            assert (page["channel"], page["epoch"], page["head"]) == (gen, m1.epoch, start + 12)
            by_id = {m["id"]: m for m in page["messages"]}
            assert [m["id"] for m in page["messages"]] == [m1.id, m2.id, m3.id, m4.id, last.id]
            assert all(m["kind"] == "message" for m in page["messages"])
            first = by_id[m1.id]
            assert (first["body"], first["version"], first["deleted"]) == ("hello team", 1, False)
            assert first["reactions"] == {"👍": 2, ":tada:": 1}
            assert (first["replies"], first["participants"]) == (2, ["bob", "carol"])
            assert first["last_reply_ms"] > 0
            edited = by_id[m3.id]
            assert (edited["body"], edited["version"]) == ("lunch at noon?", 2)
            assert edited["edited_ms"] > 0
            gone = by_id[m4.id]
            assert (gone["body"], gone["deleted"], gone["version"]) == ("", True, 2)
            assert gone["reactions"] == {}
            assert by_id[m2.id]["replies"] == 0 and by_id[m2.id]["reactions"] == {}

            r = await history(http, gen, "alice", after=str(start), events="true")
            assert r.status_code == 200, r.text
            entries = r.json()["messages"]
            assert [(e["offset"], e["kind"]) for e in entries] == [
                (start + 1, "message"),
                (start + 2, "message"),
                (start + 3, "message"),
                (start + 4, "react"),
                (start + 5, "react"),
                (start + 6, "react"),
                (start + 7, "edit"),
                (start + 8, "thread"),
                (start + 9, "thread"),
                (start + 10, "message"),
                (start + 11, "delete"),
                (start + 12, "message"),
            ]
            assert [e["offset"] for e in entries] == [e.offset for e in seen]
            assert [e["id"] for e in entries] == [
                f"{m1.epoch}-{e.offset}" for e in seen
            ]  # an event's id is its own entry's
            assert entries[4]["data"] == {"id": m1.id, "emoji": "👍", "added": True, "count": 2}
            assert entries[6]["data"] == {"id": m3.id, "version": 2, "body": "lunch at noon?"}
            assert (entries[8]["data"]["replies"], entries[8]["data"]["participants"]) == (
                2,
                ["bob", "carol"],
            )
            assert entries[10]["data"] == {"id": m4.id, "version": 2}
            assert (entries[10]["sender"], entries[6]["sender"]) == ("bob", "carol")
            # the whole log from the start: the channel's creation and the joins too
            r = await history(http, gen, "alice", after="0", limit="4", events="true")
            assert [e["kind"] for e in r.json()["messages"]] == [
                "channel",
                "member",
                "member",
                "member",
            ]

            r = await history(http, thread, "erin")
            assert r.status_code == 200, r.text
            assert [(m["sender"], m["body"], m["thread"]) for m in r.json()["messages"]] == [
                ("bob", "count me in", m1.id),
                ("carol", "me too", m1.id),
            ]
            r = await history(http, w.secret, "bob", events="true")
            assert [m["kind"] for m in r.json()["messages"]][-2:] == ["message", "react"]
            assert r.json()["messages"][-2]["reactions"] == {"👀": 1}

            # and who may read it
            for user, channel, status in (
                ("carol", w.secret, 403),
                ("erin", w.dm, 403),
                ("carol", w.dm, 403),
                ("dave", gen, 403),
                ("dave", thread, 403),
                ("dave", w.secret, 403),
                ("zed", gen, 403),
                ("zed", w.dm, 403),
                ("bob", w.dm, 200),
                ("carol", thread, 200),
            ):
                r = await history(http, channel, user)
                assert r.status_code == status, (user, channel, r.text)
            for user in ("dave", "zed"):
                r = await http.get(f"/v1/channels/{gen}", headers=auth(user))
                check_error(r, 404, "not_found", reason="channel")


# ------------------------------------------------------------------ 2: typing and presence


async def test_typing_reaches_the_others_and_is_never_replayed_presence_its_watchers(
    gateway: Gateway,
) -> None:
    """Typing goes to the channel's other connections (the typer's other devices too),
    never back to the typing connection, never into the log: neither a resume nor a
    replay brings it. Presence goes to the connections watching the user."""
    url = gateway.ws_url
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
            w = await build_world(http)
        gen = w.general
        carol_gate = Gate("carol")
        async with devices() as room:
            alice = await room.open(url, "alice")
            bob = await room.open(url, "bob", "bob-phone")
            bob2 = await room.open(url, "bob", "bob-laptop")
            carol = await room.open_with(url, carol_gate, "carol", **FAST)
            erin = await room.open(url, "erin")
            in_general = (alice, bob, bob2, carol, erin)
            for d in in_general:
                await d.client.subscribe(gen)
            await alice.client.subscribe(w.secret)
            await bob.client.subscribe(w.secret)

            # -- bob types: every other connection of the channel hears it, his own
            # other device too; his typing connection does not
            await bob.client.typing(gen)
            for d in (alice, bob2, carol, erin):
                await d.until(lambda d: (gen, "bob") in typers(d), d)
            said = await bob.client.publish(gen, "typed this")
            await all_reach(in_general, gen, said.offset)
            assert TypingEvent not in {type(fr) for fr in bob.wire}
            # typing in #secret stays in #secret
            await alice.client.typing(w.secret)
            await bob.until(lambda: (w.secret, "alice") in typers(bob))
            for d in (alice, bob2, carol, erin):
                assert all(t.channel == gen for t in d.traffic() if isinstance(t, TypingEvent))

            # -- carol is away while alice types and posts: her resume brings the
            # message, never the typing
            carol_gate.close()
            carol.drop()
            await carol.until(lambda: any(isinstance(n, Disconnected) for n in carol.notices))
            await alice.client.typing(gen)
            for d in (bob, bob2, erin):
                await d.until(lambda d: (gen, "alice") in typers(d), d)
            away = await alice.client.publish(gen, "while carol was away")
            carol_gate.open()
            await carol.until(lambda: any(isinstance(n, Reconnected) for n in carol.notices))
            back = await alice.client.publish(gen, "welcome back")
            await carol.reach(gen, back.offset)
            assert [e.body for e in carol.entries(gen, MessageEvent)] == [
                "typed this",
                "while carol was away",
                "welcome back",
            ]
            assert carol.entries(gen, MessageEvent)[1].id == away.id
            assert [(t.channel, t.user) for t in carol.typing] == [(gen, "bob")]  # not replayed
            reconnected = next(n for n in carol.notices if isinstance(n, Reconnected))
            assert reconnected.resumed == (gen,)
            # a fresh subscriber replaying the whole log gets no typing either
            async with devices() as late:
                erin2 = await late.open(url, "erin", "erin-late")
                await erin2.client.subscribe(gen, since=Position(said.epoch, 0))
                await erin2.reach(gen, back.offset)
                assert erin2.typing == []

            # -- presence: watchers see the changes of whom they watch, nobody else
            await alice.client.watch_presence(["bob", "carol", "dave"])
            await alice.until(lambda: alice.status("dave") == "offline")
            await alice.until(lambda: alice.status("bob") == alice.status("carol") == "online")
            dave_first = next(p for p in alice.presence if p.user == "dave")
            assert dave_first.last_seen == 0
            await carol.client.watch_presence(["dave"])
            await carol.until(lambda: carol.status("dave") == "offline")
            await bob.client.set_presence("away")
            await bob2.client.set_presence("away")  # every device away: bob is away
            await alice.until(lambda: alice.status("bob") == "away")
            await bob.client.set_presence("online")
            await alice.until(lambda: alice.status("bob") == "online")
            async with devices() as visit:
                await visit.open(url, "dave")
                await alice.until(lambda: alice.status("dave") == "online")
                await carol.until(lambda: carol.status("dave") == "online")
            await alice.until(lambda: alice.status("dave") == "offline")
            await carol.until(lambda: carol.status("dave") == "offline")
            gone = [p for p in alice.presence if p.user == "dave"][-1]
            assert gone.last_seen > 0
            # carol watches dave only; erin and bob watch nobody
            assert {p.user for p in carol.presence} == {"dave"}
            for d in (erin, bob, bob2):
                assert not any(isinstance(fr, PresenceEvent) for fr in d.wire), d.label


# ------------------------------------------------------------------ 3: read cursors


async def test_read_cursors_sync_devices_and_unread_counts(gateway: Gateway) -> None:
    url = gateway.ws_url
    with trio.fail_after(TIMEOUT):
        async with (
            httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http,
            devices() as room,
        ):
            w = await build_world(http)
            gen = w.general
            phone = await room.open(url, "alice", "alice-phone")
            laptop = await room.open(url, "alice", "alice-laptop")
            bob = await room.open(url, "bob")
            carol = await room.open(url, "carol")
            for d in (phone, laptop):
                await d.client.subscribe("u.alice")
                await d.client.subscribe(gen)
                await d.client.subscribe(w.dm)
            await bob.client.subscribe(gen)
            await bob.client.subscribe(w.dm)
            await carol.client.subscribe(gen)

            before = await unread(http, w.ws, "alice")
            assert set(before) == {gen, w.secret, w.dm}  # DMs included
            for channel in (gen, w.secret, w.dm):
                assert before[channel] == {"messages": 0, "mentions": 0, "read_offset": 0}

            morning = await bob.client.publish(gen, "morning")
            ask = await bob.client.publish(gen, "@alice can you review the notes?")
            standup = await carol.client.publish(gen, "@channel standup in 5")
            mine = await phone.client.publish(gen, "on my way, @carol")
            # neither replies, edits nor reactions count
            await bob.client.publish(gen, "@alice in a thread", thread=morning.id)
            await bob.client.edit(gen, morning.id, "good morning", version=1)
            head = (await carol.client.react(gen, ask.id, "👀")).offset
            ping = await bob.client.publish(w.dm, "ping")
            counts = await unread(http, w.ws, "alice")
            assert counts[gen] == {"messages": 3, "mentions": 2, "read_offset": 0}
            assert counts[w.dm] == {"messages": 1, "mentions": 0, "read_offset": 0}
            assert counts[w.secret]["messages"] == 0
            theirs = await unread(http, w.ws, "carol")
            # carol read what was there when she joined; her own @channel does not count
            assert set(theirs) == {gen}
            assert (theirs[gen]["messages"], theirs[gen]["mentions"]) == (3, 1)
            assert 0 < theirs[gen]["read_offset"] < morning.offset
            assert (await unread(http, w.ws, "bob"))[gen]["messages"] == 2  # not his own

            # -- the phone reads up to bob's question: the laptop follows
            await phone.client.mark_read(gen, ask.offset)
            for d in (phone, laptop):
                await d.until(lambda d: d.entries("u.alice", ReadEvent), d)
            synced = laptop.entries("u.alice", ReadEvent)[0]
            assert (synced.target, synced.read_offset) == (gen, ask.offset)
            counts = await unread(http, w.ws, "alice")
            assert counts[gen] == {"messages": 1, "mentions": 1, "read_offset": ask.offset}
            assert standup.offset > ask.offset and mine.offset > standup.offset

            # -- the laptop reads the rest (up to the reaction, an event: counted too)
            await laptop.client.mark_read(gen, head)
            for d in (phone, laptop):
                await d.until(lambda d: len(d.entries("u.alice", ReadEvent)) == 2, d)
            assert phone.entries("u.alice", ReadEvent)[1].read_offset == head
            counts = await unread(http, w.ws, "alice")
            assert counts[gen] == {"messages": 0, "mentions": 0, "read_offset": head}

            # -- the cursor moves forward only, clamped to the head: no event then
            await phone.client.mark_read(gen, 1)
            r = await http.put(
                f"/v1/channels/{gen}/read", json={"offset": 1}, headers=auth("alice")
            )
            assert r.json() == {"channel": gen, "offset": head}
            r = await http.put(
                f"/v1/channels/{gen}/read", json={"offset": 10**9}, headers=auth("alice")
            )
            assert r.json() == {"channel": gen, "offset": head}
            # the next read event is the DM's: the marks above appended nothing
            await laptop.client.mark_read(w.dm, ping.offset)
            for d in (phone, laptop):
                await d.until(lambda d: len(d.entries("u.alice", ReadEvent)) == 3, d)
            reads = [(e.target, e.read_offset) for e in phone.entries("u.alice", ReadEvent)]
            assert reads == [(gen, ask.offset), (gen, head), (w.dm, ping.offset)]
            assert phone.entries("u.alice") == laptop.entries("u.alice")  # one log, both devices
            counts = await unread(http, w.ws, "alice")
            assert counts[w.dm] == {"messages": 0, "mentions": 0, "read_offset": ping.offset}
            # nobody else hears alice's reads
            for d in (bob, carol):
                assert not any(isinstance(fr, ReadEvent) for fr in d.wire), d.label
            # a channel one may not read takes no cursor
            r = await http.put(
                f"/v1/channels/{w.secret}/read", json={"offset": 1}, headers=auth("carol")
            )
            check_error(r, 404, "not_found", reason="channel")
            r = await http.get(
                "/v1/users/me/unread", params={"workspace": w.ws}, headers=auth("zed")
            )
            assert r.status_code in (403, 404), r.text


# ------------------------------------------------------------------ 4: DM receipts


async def test_dm_receipts_reach_the_participants(gateway: Gateway) -> None:
    url = gateway.ws_url
    with trio.fail_after(TIMEOUT):
        async with (
            httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http,
            devices() as room,
        ):
            w = await build_world(http)
            dm = w.dm
            alice = await room.open(url, "alice")
            bob = await room.open(url, "bob")
            carol = await room.open(url, "carol")
            for d in (alice, bob):
                await d.client.subscribe(dm)
            await carol.client.subscribe(w.general)
            await alice.client.subscribe(w.general)
            b1 = await bob.client.publish(dm, "are you there?")
            b2 = await bob.client.publish(dm, "the launch moved to Monday")
            await alice.reach(dm, b2.offset)

            await alice.client.mark_read(dm, b2.offset, delivered=True)
            expected = [ReceiptEvent(channel=dm, user="alice", delivered=b2.offset, read=0)]
            await bob.until(lambda: bob.receipts == expected)
            await alice.client.mark_read(dm, b1.offset)
            expected.append(
                ReceiptEvent(channel=dm, user="alice", delivered=b2.offset, read=b1.offset)
            )
            await bob.until(lambda: bob.receipts == expected)
            await alice.client.mark_read(dm, b2.offset)
            expected.append(
                ReceiptEvent(channel=dm, user="alice", delivered=b2.offset, read=b2.offset)
            )
            await bob.until(lambda: bob.receipts == expected)
            # the marking user's own connections get them too
            await alice.until(lambda: alice.receipts == expected)
            # delivered never goes back, nor below the read cursor
            await alice.client.mark_read(dm, b1.offset, delivered=True)
            b3 = await bob.client.publish(dm, "thanks")
            await alice.reach(dm, b3.offset)
            await alice.client.mark_read(dm, b3.offset)
            expected.append(
                ReceiptEvent(channel=dm, user="alice", delivered=b3.offset, read=b3.offset)
            )
            await bob.until(lambda: bob.receipts[-1:] == expected[-1:])
            assert all(r.delivered >= r.read for r in bob.receipts)
            assert [(r.delivered, r.read) for r in bob.receipts] == sorted(
                (r.delivered, r.read) for r in bob.receipts
            )
            assert carol.traffic(dm) == [] and not any(
                isinstance(fr, ReceiptEvent) for fr in carol.wire
            )

            # -- over REST: the current receipts; receipts are never replayed
            r = await http.get(f"/v1/channels/{dm}/receipts", headers=auth("bob"))
            assert r.status_code == 200, r.text
            by_user = {x["user"]: x for x in r.json()["receipts"]}
            mark = by_user["alice"]
            assert (mark["channel"], mark["delivered"], mark["read"]) == (dm, b3.offset, b3.offset)
            assert mark["delivered_ms"] > 0 and mark["read_ms"] > 0
            assert by_user.get("bob", {"read": 0})["read"] == 0  # bob marked nothing
            async with devices() as late:
                bob2 = await late.open(url, "bob", "bob-late")
                await bob2.client.subscribe(dm, since=Position(b1.epoch, 0))
                await bob2.reach(dm, b3.offset)
                assert bob2.receipts == []
                # a REST read is a receipt too
                r = await http.put(
                    f"/v1/channels/{dm}/read", json={"offset": b3.offset}, headers=auth("bob")
                )
                assert r.json() == {"channel": dm, "offset": b3.offset}
                mark_bob = ReceiptEvent(channel=dm, user="bob", delivered=b3.offset, read=b3.offset)
                for d in (alice, bob, bob2):
                    await d.until(lambda d: mark_bob in d.receipts, d)

            # a channel is no DM; a DM is its participants' only
            r = await http.get(f"/v1/channels/{w.general}/receipts", headers=auth("alice"))
            check_error(r, 400, "invalid_field")
            r = await http.get(f"/v1/channels/{dm}/receipts", headers=auth("carol"))
            check_error(r, 404, "not_found")


# ------------------------------------------------------------------ 5: notifications


async def test_notifications_of_mentions_dms_and_replies(gateway: Gateway) -> None:
    url = gateway.ws_url
    with trio.fail_after(TIMEOUT):
        async with (
            httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http,
            devices() as room,
        ):
            w = await build_world(http)
            gen = w.general
            alice = await room.open(url, "alice")
            bob = await room.open(url, "bob")
            carol = await room.open(url, "carol")
            dave = await room.open(url, "dave")
            for d in (alice, bob, carol, dave):
                await d.client.subscribe(f"u.{d.label}")
            await alice.client.subscribe(gen)
            await alice.client.subscribe(w.dm)
            await carol.client.subscribe(gen)

            text = "@carol @dave @zed please check the notes (mail alice@example.com)"
            ask = await alice.client.publish(gen, text)
            await carol.until(lambda: carol.entries("u.carol", NotificationEvent))
            (note,) = carol.entries("u.carol", NotificationEvent)
            assert (note.kind, note.target, note.message_id, note.message_offset) == (
                "mention",
                gen,
                ask.id,
                ask.offset,
            )
            assert (note.id, note.sender, note.preview) == (f"{gen}:{ask.offset}", "alice", text)
            dm1 = await alice.client.publish(w.dm, "bob, did @carol see it?")
            await bob.until(lambda: bob.entries("u.bob", NotificationEvent))
            (dm_note,) = bob.entries("u.bob", NotificationEvent)
            assert (dm_note.kind, dm_note.target, dm_note.message_id, dm_note.sender) == (
                "dm",
                w.dm,
                dm1.id,
                "alice",
            )
            # carol answers in the thread: alice, the author, hears of it
            reply = await carol.client.publish(gen, "done, @dave", thread=ask.id)
            await alice.until(lambda: alice.entries("u.alice", NotificationEvent))
            (reply_note,) = alice.entries("u.alice", NotificationEvent)
            assert (reply_note.kind, reply_note.target, reply_note.message_offset) == (
                "reply",
                reply.channel,
                reply.offset,
            )

            # -- REST: the notifications filed (filed before the ack on one node)
            carols = await notifications(http, "carol")
            assert [(n["id"], n["kind"], n["read"]) for n in carols] == [
                (note.id, "mention", False)
            ]  # not the DM she is named in, not her own reply
            bobs = await notifications(http, "bob")
            assert [(n["kind"], n["channel"], n["sender"]) for n in bobs] == [("dm", w.dm, "alice")]
            assert [n["kind"] for n in await notifications(http, "alice")] == ["reply"]
            # a guest outside the channel and a stranger are not notified
            assert await notifications(http, "dave") == []
            assert await notifications(http, "zed") == []
            r = await history(http, "u.dave", "dave", events="true")
            assert r.json()["head"] == 0
            assert dave.traffic() == []
            # each log is its user's: nobody hears another's notifications
            assert bob.channels_heard() == {"u.bob"}
            assert {c for c in carol.channels_heard() if c.startswith("u.")} == {"u.carol"}

            # -- marking: reading the DM does not mark its notification read
            r = await http.put(
                f"/v1/channels/{w.dm}/read", json={"offset": dm1.offset}, headers=auth("bob")
            )
            assert r.status_code == 200, r.text
            assert [n["read"] for n in await notifications(http, "bob", unread_only="true")] == [
                False
            ]
            for expected in (1, 0):
                r = await http.post(
                    "/v1/users/me/notifications/read",
                    json={"ids": [note.id]},
                    headers=auth("carol"),
                )
                assert r.json() == {"marked": expected}
            assert await notifications(http, "carol", unread_only="true") == []
            (done,) = await notifications(http, "carol")
            assert done["read"] is True and done["read_ms"] > 0
            r = await http.post(
                "/v1/users/me/notifications/read", json={"ids": "all"}, headers=auth("bob")
            )
            assert r.json() == {"marked": 1}
            assert await notifications(http, "bob", unread_only="true") == []
            # marking another user's notification marks nothing
            r = await http.post(
                "/v1/users/me/notifications/read",
                json={"ids": [reply_note.id]},
                headers=auth("carol"),
            )
            assert r.json() == {"marked": 0}
            assert [n["read"] for n in await notifications(http, "alice")] == [False]


# ------------------------------------------------------------------ 7: removal


async def test_removal_mid_conversation(gateway: Gateway) -> None:
    """bob removes erin from #general (public) and from #launch (private) while her
    devices are subscribed and alice's messages flow. Her live devices lose both at once
    and get nothing after; her tablet, offline meanwhile, resumes without #launch. A
    public channel stays readable (a preview: section 23) but not postable; the private
    one is gone; removed from the workspace, she loses the preview too."""
    url = gateway.ws_url
    with trio.fail_after(TIMEOUT):
        async with (
            httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http,
            devices() as room,
        ):
            w = await build_world(http)
            gen = w.general
            launch = (await make_channel(http, w.ws, "alice", "launch", "private"))["id"]
            for user in ("bob", "erin"):
                await join(http, launch, user, by="alice")
            tablet_gate = Gate("erin")
            alice = await room.open(url, "alice")
            bob = await room.open(url, "bob")
            phone = await room.open(url, "erin", "erin-phone")
            laptop = await room.open(url, "erin", "erin-laptop", codec="json")
            tablet = await room.open_with(url, tablet_gate, "erin-tablet", **FAST)
            erins = (phone, laptop)
            for d in (alice, bob, phone, laptop, tablet):
                await d.client.subscribe(gen)
                await d.client.subscribe(launch)
            await phone.client.subscribe("u.erin")
            kickoff = await alice.client.publish(gen, "kickoff")
            thread = thread_of(kickoff)
            await phone.client.subscribe(thread)
            await alice.client.subscribe(thread)
            first_reply = await bob.client.publish(gen, "on it", thread=kickoff.id)
            plan = await alice.client.publish(launch, "the plan")
            for d in (*erins, tablet):
                await d.reach(gen, kickoff.offset)
                await d.reach(launch, plan.offset)
            await phone.reach(thread, first_reply.offset)
            # the tablet goes offline before the removal, with its positions
            tablet_gate.close()
            tablet.drop()
            await tablet.until(lambda: any(isinstance(n, Disconnected) for n in tablet.notices))
            tablet_positions = dict(tablet.client.positions)

            # -- alice keeps talking in both channels; bob removes erin halfway
            halfway = trio.Event()
            removed_at: list[int] = []
            flow: list[tuple[int, Ack, Ack]] = []

            async def talk() -> None:
                i = 0
                while not removed_at or i < removed_at[0] + 8:
                    g = await alice.client.publish(gen, f"g{i}")
                    lch = await alice.client.publish(launch, f"l{i}")
                    flow.append((i, g, lch))
                    i += 1
                    if i == 8:
                        halfway.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk)
                await halfway.wait()
                r = await http.delete(f"/v1/channels/{gen}/members/erin", headers=auth("bob"))
                assert r.status_code == 204, r.text
                r = await http.delete(f"/v1/channels/{launch}/members/erin", headers=auth("bob"))
                assert r.status_code == 204, r.text
                removed_at.append(len(flow))
                # at once: both live devices lose both channels (and the thread with #general)
                with trio.fail_after(AT_ONCE):
                    for d in erins:
                        for channel in (gen, launch):
                            await d.until(d.ended_on, channel)
                    await phone.until(lambda: phone.ended_on(thread))
                after = await bob.client.publish(
                    gen, "a reply erin must not see", thread=kickoff.id
                )
            last_g, last_l = flow[-1][1], flow[-1][2]
            assert len(flow) >= removed_at[0] + 8 > 8  # messages flowed after the removal
            await alice.reach(gen, last_g.offset)
            await alice.reach(launch, last_l.offset)
            await alice.reach(thread, after.offset)

            for d in erins:
                for channel in (gen, launch):
                    assert d.ended_on(channel) == Unsubscribed(channel=channel, reason="forbidden")
            assert phone.ended_on(thread) == Unsubscribed(channel=thread, reason="forbidden")
            assert laptop.ended_on(thread) is None  # never subscribed to it
            assert "u.erin" in phone.client.positions  # her own log is untouched
            for channel, head in ((gen, last_g.offset), (launch, last_l.offset)):
                gone = member_event(alice, channel, "erin", joined=False)
                assert gone is not None and gone.by == "bob", channel
                assert gone.offset < head
                for d in erins:
                    # a gap-free prefix of the log, ending before the removal (on the wire)
                    offsets = [fr.offset for fr in d.traffic(channel)]
                    assert offsets, (d.label, channel)
                    assert offsets == list(range(offsets[0], offsets[-1] + 1)), (d.label, channel)
                    assert offsets[-1] < gone.offset, (d.label, channel, offsets[-1], gone.offset)
                    assert [e.offset for e in d.entries(channel)] == offsets
            assert [fr.offset for fr in phone.traffic(thread)] == [first_reply.offset]

            # -- the private channel is gone for good: subscribe, resume, history, post
            for d in erins:
                assert await refused(d.client, launch) == "forbidden"
            async with devices() as fresh:  # a new client with the old positions
                again = await fresh.open(url, "erin", "erin-again")
                assert await refused(again.client, launch, tablet_positions[launch]) == "forbidden"
                assert await refused(again.client, thread_of(plan)) == "forbidden"
            r = await history(http, launch, "erin")
            check_error(r, 403, "forbidden")
            r = await history(http, thread_of(plan), "erin")
            check_error(r, 403, "forbidden")
            r = await http.get(
                "/v1/users/me/channels", params={"workspace": w.ws}, headers=auth("erin")
            )
            assert {m["channel"] for m in r.json()["items"]} == set()
            # the tablet comes back: its resume cannot bring #launch back
            tablet_gate.open()
            await tablet.until(lambda: any(isinstance(n, Reconnected) for n in tablet.notices))
            await tablet.until(lambda: tablet.ended_on(launch))
            assert tablet.ended_on(launch) == Unsubscribed(channel=launch, reason="forbidden")
            assert launch not in tablet.client.positions
            assert [e.offset for e in tablet.entries(launch)][-1] == plan.offset
            # (a public channel is readable by every member of the workspace: the resume
            # continues #general as a preview, and posting there is refused)
            await tablet.reach(gen, last_g.offset)
            code = await publish_refused(tablet.client.publish(gen, "back?"))
            assert code == "forbidden"

            # -- #general, public: readable as a preview, not postable; not a member
            sub = await phone.client.subscribe(gen)
            assert sub.offset >= last_g.offset
            code = await publish_refused(phone.client.publish(gen, "let me back in"))
            assert code == "forbidden"
            code = await publish_refused(phone.client.react(gen, kickoff.id, "🙏"))
            assert code == "forbidden"
            assert (await history(http, gen, "erin")).status_code == 200
            r = await http.get(f"/v1/channels/{gen}/members", headers=auth("alice"))
            assert "erin" not in {m["user"] for m in r.json()["items"]}

            # -- removed from the workspace: the preview goes too, and stays gone
            r = await http.delete(f"/v1/workspaces/{w.ws}/members/erin", headers=auth("bob"))
            assert r.status_code == 204, r.text
            with trio.fail_after(AT_ONCE):
                await phone.until(lambda: len([u for u in phone.ended if u.channel == gen]) == 2)
                await tablet.until(lambda: len([u for u in tablet.ended if u.channel == gen]) == 1)
            for d in (phone, laptop, tablet):
                assert await refused(d.client, gen) == "forbidden"
            check_error(await history(http, gen, "erin"), 403, "forbidden")
            head = (await alice.client.publish(gen, "bye erin")).offset
            await alice.reach(gen, head)
            for d in (phone, laptop, tablet):
                assert all(fr.offset < head for fr in d.traffic(gen)), d.label


async def test_a_user_removed_from_the_workspace_is_no_longer_notified(gateway: Gateway) -> None:
    """Once out of the workspace, erin may read none of its channels (section 23), so she
    must not be notified of their messages either: a notification carries a preview."""
    url = gateway.ws_url
    with trio.fail_after(TIMEOUT):
        async with (
            httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http,
            devices() as room,
        ):
            w = await build_world(http)
            gen = w.general
            r = await http.post(
                f"/v1/workspaces/{w.ws}/dms", headers=auth("alice"), json={"users": ["erin"]}
            )
            dm = r.json()["id"]
            alice = await room.open(url, "alice")
            erin = await room.open(url, "erin")
            await alice.client.subscribe(gen)
            await alice.client.subscribe(dm)
            await erin.client.subscribe(gen)
            await erin.client.subscribe("u.erin")
            parent = await alice.client.publish(gen, "who takes the launch notes?")
            await erin.client.publish(gen, "me", thread=parent.id)  # erin is a participant
            r = await http.delete(f"/v1/workspaces/{w.ws}/members/erin", headers=auth("bob"))
            assert r.status_code == 204, r.text
            await erin.until(lambda: erin.ended_on(gen))
            before = {n["id"] for n in await notifications(http, "erin")}
            # a mention, a DM, a reply in her thread: each one also notifies someone
            # still in the workspace, so the notifications were filed when acked
            await alice.client.publish(gen, "@erin @carol the salaries are in the sheet")
            await alice.client.publish(dm, "erin, the plan for your replacement")
            await alice.client.publish(gen, "carol takes them now", thread=parent.id)
            assert [n["kind"] for n in await notifications(http, "carol")] == ["mention"]
            assert [n["kind"] for n in await notifications(http, "alice")] == ["reply"]
            leaked = [
                (n["kind"], n["preview"])
                for n in await notifications(http, "erin")
                if n["id"] not in before
            ]
            assert leaked == []
            assert erin.entries("u.erin", NotificationEvent) == []


# ------------------------------------------------------------------ 8: two nodes


async def test_a_conversation_across_two_nodes(tmp_path: Path, redis_url: str) -> None:
    """The reduced scenario with clients on two nodes sharing one Redis: messages, a
    thread, reactions, an edit and a delete reach every member on both nodes, the same;
    bob removes erin on one node while her devices are on both."""
    with trio.fail_after(TIMEOUT):
        async with (
            open_nodes(tmp_path, redis_url, 2) as (a, b),
            httpx.AsyncClient(base_url=a.http_url, timeout=10) as http_a,
            httpx.AsyncClient(base_url=b.http_url, timeout=10) as http_b,
            devices() as room,
        ):
            w = await build_world(http_a)
            gen = w.general
            alice = await room.open(a.ws_url, "alice")
            bob = await room.open(b.ws_url, "bob")
            carol = await room.open(a.ws_url, "carol", codec="json")
            erin_a = await room.open(a.ws_url, "erin", "erin-on-a")
            erin_b = await room.open(b.ws_url, "erin", "erin-on-b")
            dave = await room.open(b.ws_url, "dave")
            members = (alice, bob, carol, erin_a, erin_b)
            subs = [await d.client.subscribe(gen) for d in members]
            assert len({(s.epoch, s.offset) for s in subs}) == 1
            start = subs[0].offset
            await alice.client.subscribe(w.secret)
            await bob.client.subscribe(w.secret)
            await alice.client.subscribe("u.alice")
            await carol.client.subscribe("u.carol")
            assert await refused(carol.client, w.secret) == "forbidden"
            assert await refused(dave.client, gen) == "forbidden"

            m1 = await alice.client.publish(gen, "hello from a")
            m2 = await bob.client.publish(gen, "hello from b")
            thread = thread_of(m1)
            await erin_b.client.subscribe(thread)
            await bob.client.react(gen, m1.id, "👍")
            await carol.client.react(gen, m1.id, "👍")
            t1 = await bob.client.publish(gen, "reply from b", thread=m1.id)
            t2 = await carol.client.publish(gen, "reply from a", thread=m1.id)
            await bob.client.edit(gen, m2.id, "hello from node b", version=1)
            await alice.client.delete(gen, m2.id)  # the owner deletes bob's message
            s1 = await alice.client.publish(w.secret, "only for bob")
            await bob.reach(w.secret, s1.offset)
            last = await carol.client.publish(gen, "done")
            assert last.offset == start + 9
            await all_reach(members, gen, last.offset)
            await erin_b.reach(thread, t2.offset)
            seen = alice.entries(gen)
            assert [e.offset for e in seen] == list(range(start + 1, last.offset + 1))
            for d in members:
                assert d.entries(gen) == seen, d.label
            assert [type(e) for e in seen] == [
                MessageEvent,
                MessageEvent,
                ReactionEvent,
                ReactionEvent,
                ThreadEvent,
                ThreadEvent,
                MessageUpdated,
                MessageDeleted,
                MessageEvent,
            ]
            assert [e.count for e in seen if isinstance(e, ReactionEvent)] == [1, 2]
            summary = seen[5]
            assert isinstance(summary, ThreadEvent)
            assert (summary.replies, summary.participants) == (2, ["bob", "carol"])
            replies = erin_b.entries(thread)
            assert [(r.sender, r.body, r.offset) for r in replies] == [
                ("bob", "reply from b", t1.offset),
                ("carol", "reply from a", t2.offset),
            ]
            # (their own logs u.<user> get the reply notifications when written behind)
            assert carol.channels_heard() - {"u.carol"} == {gen}
            assert erin_a.channels_heard() == {gen}
            assert erin_b.channels_heard() == {gen, thread}
            assert dave.channels_heard() == set()
            assert bob.channels_heard() == alice.channels_heard() - {"u.alice"} == {gen, w.secret}
            # the history, read on the other node, shows the current state
            r = await history(http_b, gen, "carol", after=str(start))
            by_id = {m["id"]: m for m in r.json()["messages"]}
            assert by_id[m1.id]["reactions"] == {"👍": 2}
            assert (by_id[m1.id]["replies"], by_id[m1.id]["participants"]) == (2, ["bob", "carol"])
            assert (by_id[m2.id]["deleted"], by_id[m2.id]["body"], by_id[m2.id]["version"]) == (
                True,
                "",
                3,
            )

            # -- removal on node b while alice talks on node a
            halfway = trio.Event()
            removed_at: list[int] = []
            flow: list[Ack] = []

            async def talk() -> None:
                i = 0
                while not removed_at or i < removed_at[0] + 8:
                    flow.append(await alice.client.publish(gen, f"g{i}"))
                    i += 1
                    if i == 8:
                        halfway.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk)
                await halfway.wait()
                r = await http_b.delete(f"/v1/channels/{gen}/members/erin", headers=auth("bob"))
                assert r.status_code == 204, r.text
                removed_at.append(len(flow))
                with trio.fail_after(AT_ONCE):
                    for d in (erin_a, erin_b):
                        await d.until(d.ended_on, gen)
                    await erin_b.until(lambda: erin_b.ended_on(thread))
            after = await bob.client.publish(gen, "erin must not see this", thread=m1.id)
            await alice.reach(gen, flow[-1].offset)
            await bob.reach(gen, flow[-1].offset)
            gone = member_event(alice, gen, "erin", joined=False)
            assert gone is not None and gone.by == "bob"
            assert member_event(bob, gen, "erin", joined=False) == gone
            for d in (erin_a, erin_b):
                assert d.ended_on(gen) == Unsubscribed(channel=gen, reason="forbidden")
                offsets = [fr.offset for fr in d.traffic(gen)]
                assert offsets == list(range(start + 1, offsets[-1] + 1)), d.label
                assert offsets[-1] < gone.offset, (d.label, offsets[-1], gone.offset)
            assert [fr.offset for fr in erin_b.traffic(thread)] == [t1.offset, t2.offset]
            assert after.offset == 3
            # a preview again on either node (public channel), never a post
            for d in (erin_a, erin_b):
                await d.client.subscribe(gen)
                code = await publish_refused(d.client.publish(gen, "still here?"))
                assert code == "forbidden", d.label
            for http in (http_a, http_b):
                r = await http.get(
                    "/v1/users/me/channels", params={"workspace": w.ws}, headers=auth("erin")
                )
                assert r.json()["items"] == []

            # -- the last reply notifies alice (the author) and carol (a participant) when
            # it is written behind to the store, on whichever node writes it (section 24);
            # wait for both pushes (each is its own task)
            note = f"{thread}:{after.offset}"
            for d in (alice, carol):
                log = f"u.{d.label}"
                await d.until(lambda d, log: note in notes_of(d, log), d, log)
            first = f"{thread}:{t1.offset}"
            # (each push is its own task: their order in u.<user> is not the replies')
            assert sorted(notes_of(alice, "u.alice")) == sorted(
                [first, f"{thread}:{t2.offset}", note]
            )
            # carol replied after t1: t1 does not notify her, however late it is written
            # behind (whom a reply notifies is read from the thread's log before it)
            assert set(notes_of(carol, "u.carol")) == {note}
