"""The client SDK and ``gateway chat`` against a real gateway node (``gateway.app``)."""

from __future__ import annotations

import dataclasses
import functools
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from gateway.app import Gateway, open_gateway
from gateway.auth import load_or_create_dev_secret, mint_dev_token
from gateway.client import (
    Ack,
    ChannelEvent,
    Client,
    ConnectionClosed,
    Disconnected,
    Event,
    LogEvent,
    MemberEvent,
    MessageDeleted,
    MessageEvent,
    MessageUpdated,
    Position,
    ReactionEvent,
    Reconnected,
    SubscribeError,
    ThreadEvent,
    TypingEvent,
    open_client,
    thread_channel,
    thread_of,
)
from gateway.client._conn import CloseInfo
from gateway.config import Limits, Settings
from tests.client.test_sdk import FAST, next_event, next_message
from tests.conftest import make_settings, token

TIMEOUT = 30


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_publish_subscribe_typing_ping(gateway: Gateway, codec: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_client(gateway.ws_url, token("alice"), codec=codec) as alice,
            open_client(gateway.ws_url, token("bob")) as bob,
        ):
            assert alice.user == "alice"
            sub = await alice.subscribe("general")
            await bob.subscribe("general")
            assert alice.positions["general"] == Position(sub.epoch, 0)
            await bob.typing("general")
            typed = await next_event(alice)
            assert isinstance(typed, TypingEvent) and (typed.channel, typed.user) == (
                "general",
                "bob",
            )
            ack = await alice.publish("general", "hello", cmid="c1")
            assert (ack.offset, ack.duplicate) == (1, False)
            again = await alice.publish("general", "hello", cmid="c1")
            assert (again.offset, again.id, again.duplicate) == (1, ack.id, True)
            message = await next_message(bob)
            assert (message.sender, message.body, message.offset) == ("alice", "hello", 1)
            assert (await next_message(alice)).id == ack.id
            assert await alice.ping() > 0


async def test_bad_token_and_forbidden_channel(gateway: Gateway) -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConnectionClosed) as info:
            async with open_client(gateway.ws_url, "not-a-jwt"):
                raise AssertionError("unreachable")
        assert (info.value.code, info.value.may_resume) == (4001, False)
        async with open_client(gateway.ws_url, token("carol", channels=["team-*"])) as carol:
            await carol.subscribe("team-a")
            with pytest.raises(SubscribeError) as refused:
                await carol.subscribe("general")
            assert refused.value.code == "forbidden"


async def test_drain_is_a_resumable_disconnect(gateway: Gateway) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_client(gateway.ws_url, token("alice"), **FAST) as alice:
            await alice.subscribe("general")
            await gateway.drain()
            disconnected = await next_event(alice)
            assert isinstance(disconnected, Disconnected)
            assert (disconnected.code, disconnected.will_reconnect) == (4100, True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_resume_across_a_node_restart(tmp_path: Path) -> None:
    """Alice loses her node; while she is away bob publishes on the new node; she resumes
    from her positions: missed messages once, her unacked publish stored once."""
    settings = make_settings(tmp_path, ws_port=_free_port())
    gate = trio.Event()
    calls = 0

    async def alice_token() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            await gate.wait()  # keep alice away until bob has published
        return token("alice")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            first = await _start_node(nursery, settings)
            async with open_client(first.ws_url, alice_token, **FAST) as alice:
                await alice.subscribe("general")
                await alice.publish("general", "a1")
                assert (await next_message(alice)).body == "a1"
                await first.drain()
                first.stop()
                await next_event(alice, Disconnected)
                pending: list[int] = []
                acked = trio.Event()

                async def publish_while_away() -> None:
                    pending.append((await alice.publish("general", "a2", cmid="away")).offset)
                    acked.set()

                nursery.start_soon(publish_while_away)
                second = await _start_node(nursery, settings)
                async with open_client(second.ws_url, token("bob")) as bob:
                    await bob.subscribe("general")
                    await bob.publish("general", "b1")
                    await bob.publish("general", "b2")
                gate.set()
                reconnected = await next_event(alice, Reconnected)
                assert isinstance(reconnected, Reconnected)
                assert reconnected.resumed == ("general",)
                bodies = [(await next_message(alice)).body for _ in range(3)]
                assert bodies == ["b1", "b2", "a2"]
                await acked.wait()
                assert pending == [4]
                assert alice.positions["general"].offset == 4
                assert alice.statistics().duplicates_dropped == 0
                second.stop()
            nursery.cancel_scope.cancel()


class _Node:
    def __init__(self, gateway: Gateway, done: trio.Event) -> None:
        self.gateway = gateway
        self.ws_url = gateway.ws_url
        self._done = done

    async def drain(self) -> None:
        await self.gateway.drain()

    def stop(self) -> None:
        self._done.set()


async def _start_node(nursery: trio.Nursery, settings: Settings) -> _Node:
    async def run(task_status: trio.TaskStatus[_Node]) -> None:
        done = trio.Event()
        async with open_gateway(settings) as gw:
            task_status.started(_Node(gw, done))
            await done.wait()

    node: _Node = await nursery.start(run)
    return node


async def test_slow_consumer_is_shed_and_resumes_without_loss(tmp_path: Path) -> None:
    """The documented backpressure policy, end to end: a client that does not consume
    stops reading, the server sheds it with 4101, the SDK resumes, nothing is lost."""
    limits = Limits(outbox_max_bytes=64 * 1024, rate_per_second=100_000.0, rate_burst=100_000)
    settings = make_settings(tmp_path, limits=limits)
    body = "x" * 16_000
    count = 600  # ~10 MB: more than loopback socket buffers plus the 64 KiB outbox
    with trio.fail_after(TIMEOUT):
        async with (
            open_gateway(settings) as gateway,
            open_client(gateway.ws_url, token("slow"), max_events=4, **FAST) as slow,
            open_client(gateway.ws_url, token("fast")) as fast,
        ):
            await slow.subscribe("general")
            await fast.subscribe("general")
            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(fast.publish, "general", f"{i}:{body}")
            offsets: list[int] = []
            shed = False
            while len(offsets) < count:
                event = await next_event(slow)
                if isinstance(event, MessageEvent):
                    offsets.append(event.offset)
                elif isinstance(event, Disconnected):
                    assert (event.code, event.will_reconnect) == (4101, True)
                    shed = True
            assert offsets == list(range(1, count + 1))
            assert shed
            assert slow.statistics().connects >= 2


async def test_chat_command_end_to_end(tmp_path: Path) -> None:
    """``python -m gateway chat --user alice`` against a node using the dev secret."""
    settings = dataclasses.replace(make_settings(tmp_path), jwt_secret="")
    with trio.fail_after(TIMEOUT):
        async with open_gateway(settings) as gateway:
            argv = [
                sys.executable,
                "-m",
                "gateway",
                "chat",
                "--url",
                gateway.ws_url,
                "--user",
                "alice",
                "--data-dir",
                str(tmp_path),
                "--channel",
                "room",
            ]
            secret = load_or_create_dev_secret(str(tmp_path))
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    functools.partial(
                        trio.run_process,
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        check=False,
                    )
                )
                assert process.stdin is not None and process.stdout is not None
                seen = b""

                async def read_until(text: bytes) -> None:
                    nonlocal seen
                    assert process.stdout is not None
                    while text not in seen:
                        chunk = await process.stdout.receive_some()
                        assert chunk, f"chat exited early; output so far: {seen!r}"
                        seen += chunk

                await read_until(b"/quit to leave")
                await process.stdin.send_all(b"hello from the terminal\n")
                await read_until(b"[#room 1] alice: hello from the terminal")
                async with open_client(gateway.ws_url, mint_dev_token(secret, "bob")) as bob:
                    await bob.subscribe("room")
                    await bob.publish("room", "hi alice")
                await read_until(b"[#room 2] bob: hi alice")
                await process.stdin.send_all(b"/quit\n")
                assert await process.wait() == 0


# ------------------------------------------------------------------ changes and threads

LOG_EVENTS = (
    MessageEvent,
    MessageUpdated,
    MessageDeleted,
    ReactionEvent,
    ThreadEvent,
    MemberEvent,
    ChannelEvent,
)


class _Collector:
    """Records every log event a client receives, per channel, and the notices."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.entries: dict[str, list[LogEvent]] = {}
        self.notices: list[Event] = []
        self._changed = trio.Event()

    async def run(self) -> None:
        async for event in self.client.events():
            if isinstance(event, LOG_EVENTS):
                self.entries.setdefault(event.channel, []).append(event)
            elif isinstance(event, Disconnected | Reconnected):
                self.notices.append(event)
            self._changed.set()
            self._changed = trio.Event()

    def head(self, channel: str) -> int:
        entries = self.entries.get(channel)
        return entries[-1].offset if entries else 0

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def reach(self, channel: str, offset: int) -> None:
        await self.wait_for(lambda: self.head(channel) >= offset)


async def _replay(url: str, channel: str, epoch: str, head: int) -> list[LogEvent]:
    """The log of ``channel`` up to ``head``, as a fresh subscriber replays it."""
    async with open_client(url, token("carol")) as carol:
        await carol.subscribe(channel, since=Position(epoch, 0))
        got: list[LogEvent] = []
        while not got or got[-1].offset < head:
            event = await next_event(carol, *LOG_EVENTS)
            assert isinstance(event, LOG_EVENTS)
            got.append(event)
        return got


def _drop(client: Client) -> None:
    """Drop the client's TCP connection without a close handshake (it sees 1006)."""
    conn = client._state.conn
    assert conn is not None
    conn.abort(CloseInfo(1006, "test: connection dropped"))


async def test_changes_and_thread_arrive_exactly_once_across_a_drop(gateway: Gateway) -> None:
    """A conversation with edits, reactions, a delete and a thread reply; bob's connection
    drops mid-stream (right after a run of changes, with more in flight) and stays away
    while more happens; he resumes and gets every entry of both logs once, in order."""
    gate = trio.Event()
    gate.set()
    url = gateway.ws_url

    async def bob_token() -> str:
        await gate.wait()
        return token("bob")

    with trio.fail_after(TIMEOUT):
        async with (
            open_client(url, token("alice")) as alice,
            open_client(url, bob_token, **FAST) as bob,
            trio.open_nursery() as nursery,
        ):
            seen = _Collector(bob)
            nursery.start_soon(seen.run)
            sub = await alice.subscribe("room")
            await bob.subscribe("room")
            m1 = await alice.publish("room", "hello")
            m2 = await bob.publish("room", "tpyo")
            thumbs = await bob.react("room", m1.id, "👍")
            assert (thumbs.offset, thumbs.version) == (3, 1)
            edited = await alice.edit("room", m1.id, "hello all", version=1)
            assert (edited.offset, edited.version, edited.duplicate) == (4, 2, False)
            reply = await bob.publish("room", "a reply", thread=m1.id)
            thread = thread_of(m1)
            assert (reply.channel, reply.offset) == (thread, 1) == ("room:t1", 1)
            assert thread_channel("room", m1.offset) == thread
            await bob.subscribe(thread, since=Position(reply.epoch, 0))
            await alice.subscribe(thread)
            deleted = await bob.delete("room", m2.id)
            assert (deleted.offset, deleted.version) == (6, 2)
            await alice.react("room", m1.id, ":tada:")
            await bob.react("room", m1.id, "👍", add=False)
            await seen.reach("room", 8)
            await seen.reach(thread, 1)
            kinds = [type(e) for e in seen.entries["room"]]
            assert kinds == [
                MessageEvent,
                MessageEvent,
                ReactionEvent,
                MessageUpdated,
                ThreadEvent,
                MessageDeleted,
                ReactionEvent,
                ReactionEvent,
            ]
            summary = seen.entries["room"][4]
            assert isinstance(summary, ThreadEvent)
            assert (summary.id, summary.replies, summary.participants) == (m1.id, 1, ["bob"])
            assert bob.positions["room"] == Position(sub.epoch, 8)  # past the last change

            # mid-stream: a run of changes, bob dropped while they are still arriving
            a3 = await alice.publish("room", "third")
            await alice.react("room", a3.id, "🎉")
            await alice.edit("room", a3.id, "third!", version=1)
            await alice.publish("room", "in thread", thread=m1.id)
            gate = trio.Event()  # bob stays away until told
            _drop(bob)
            await seen.wait_for(lambda: any(isinstance(n, Disconnected) for n in seen.notices))
            # while he is away
            await alice.edit("room", a3.id, "third!!", version=2)
            await alice.react("room", m1.id, ":tada:", add=False)
            await alice.delete("room", a3.id)
            await alice.publish("room", "thread again", thread=m1.id)
            gate.set()
            # racing with his resume
            last_reply = await alice.publish("room", "thread, live", thread=m1.id)
            last = await alice.react("room", m1.id, "👀")
            await seen.reach("room", last.offset)
            await seen.reach(thread, last_reply.offset)

            reconnected = [n for n in seen.notices if isinstance(n, Reconnected)]
            assert len(reconnected) == 1
            assert reconnected[0].resumed == ("room", thread)
            for channel, head in (("room", last.offset), (thread, last_reply.offset)):
                got = seen.entries[channel]
                assert [e.offset for e in got] == list(range(1, head + 1))
                assert got == await _replay(url, channel, got[0].epoch, head)
            assert last.offset == 18 and last_reply.offset == 4
            assert bob.statistics().connects == 2
            nursery.cancel_scope.cancel()


async def test_unacked_edit_is_resent_after_reconnect_and_applied_once(gateway: Gateway) -> None:
    """Bob's edit is applied but its ack is lost with the connection (his reader is held
    by a full event buffer, so the ack is never read); the SDK re-sends it with the same
    cmid after the resume and gets the original back (``duplicate``): one update."""
    url = gateway.ws_url
    with trio.fail_after(TIMEOUT):
        async with (
            open_client(url, token("alice")) as alice,
            open_client(url, token("bob"), max_events=2, **FAST) as bob,
        ):
            await alice.subscribe("room")
            await bob.subscribe("room")
            posted = await bob.publish("room", "helo")
            await alice.publish("room", "a1")  # bob's buffer: [helo, a1], full
            await alice.publish("room", "a2")  # his reader now waits to buffer this one
            acks: list[Ack] = []

            async def edit() -> None:
                acks.append(await bob.edit("room", posted.id, "hello", version=1, cmid="fix"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(edit)
                # applied: alice sees the update; bob's ack is stuck behind his buffer
                for _ in range(4):
                    event = await next_event(alice, *LOG_EVENTS)
                assert isinstance(event, MessageUpdated) and event.version == 2
                assert not acks
                _drop(bob)
                got: list[LogEvent] = []
                while len(got) < 4:
                    entry = await next_event(bob, *LOG_EVENTS)
                    assert isinstance(entry, LOG_EVENTS)
                    got.append(entry)
            assert [(type(e), e.offset) for e in got] == [
                (MessageEvent, 1),
                (MessageEvent, 2),
                (MessageEvent, 3),
                (MessageUpdated, 4),
            ]
            assert (acks[0].offset, acks[0].version, acks[0].duplicate) == (4, 2, True)
            assert bob.statistics().publishes_resent == 1
            # applied once: the message is at version 2, and no second update follows
            again = await bob.edit("room", posted.id, "hello!", version=2)
            assert (again.offset, again.version) == (5, 3)
            entry = await next_event(bob, *LOG_EVENTS)
            assert isinstance(entry, MessageUpdated) and (entry.offset, entry.version) == (5, 3)


async def test_changes_resume_on_another_node_of_the_url_list(tmp_path: Path) -> None:
    """Alice's node dies; on the next node of her URL list she resumes: the changes made
    meanwhile arrive once, and her reaction sent while away is applied once."""
    first_settings = make_settings(tmp_path, ws_port=_free_port())
    second_settings = dataclasses.replace(first_settings, ws_port=_free_port())
    urls = [f"ws://127.0.0.1:{s.ws_port}/ws" for s in (first_settings, second_settings)]
    gate = trio.Event()
    gate.set()

    async def alice_token() -> str:
        await gate.wait()
        return token("alice")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            first = await _start_node(nursery, first_settings)
            async with open_client(urls, alice_token, **FAST) as alice:
                seen = _Collector(alice)
                nursery.start_soon(seen.run)
                sub = await alice.subscribe("room")
                posted = await alice.publish("room", "hello")
                await alice.react("room", posted.id, "👍")
                await alice.edit("room", posted.id, "hello all", version=1)
                await seen.reach("room", 3)
                gate = trio.Event()
                await first.drain()
                first.stop()
                await seen.wait_for(lambda: bool(seen.notices))
                reacted: list[Ack] = []
                acked = trio.Event()

                async def react_while_away() -> None:
                    reacted.append(await alice.react("room", posted.id, ":tada:", cmid="away"))
                    acked.set()

                nursery.start_soon(react_while_away)
                second = await _start_node(nursery, second_settings)
                async with open_client(second.ws_url, token("bob")) as bob:
                    await bob.subscribe("room")
                    await bob.react("room", posted.id, "👍")
                    await bob.publish("room", "b1", thread=posted.id)
                    b2 = await bob.publish("room", "b2")
                    await bob.delete("room", b2.id)
                gate.set()
                await seen.reach("room", 8)
                await acked.wait()
                got = seen.entries["room"]
                assert [(type(e), e.offset) for e in got] == [
                    (MessageEvent, 1),
                    (ReactionEvent, 2),
                    (MessageUpdated, 3),
                    (ReactionEvent, 4),
                    (ThreadEvent, 5),
                    (MessageEvent, 6),
                    (MessageDeleted, 7),
                    (ReactionEvent, 8),
                ]
                mine = got[-1]
                assert isinstance(mine, ReactionEvent) and (mine.user, mine.emoji) == (
                    "alice",
                    ":tada:",
                )
                assert (reacted[0].offset, reacted[0].duplicate) == (8, False)
                assert got == await _replay(second.ws_url, "room", sub.epoch, 8)
                assert alice.statistics().connects == 2
                second.stop()
            nursery.cancel_scope.cancel()
