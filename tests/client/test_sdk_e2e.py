"""The client SDK and ``gateway chat`` against a real gateway node (``gateway.app``)."""

from __future__ import annotations

import dataclasses
import functools
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from gateway.app import Gateway, open_gateway
from gateway.auth import load_or_create_dev_secret, mint_dev_token
from gateway.client import (
    ConnectionClosed,
    Disconnected,
    MessageEvent,
    Position,
    Reconnected,
    SubscribeError,
    TypingEvent,
    open_client,
)
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
            assert await next_event(alice) == TypingEvent(channel="general", user="bob")
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
