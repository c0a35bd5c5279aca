"""The ``fake chat`` command, driven through its inner coroutine against the fake."""

from __future__ import annotations

import argparse
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

import gateway.auth
from gateway.client import LogEvent, chat, open_client
from gateway.protocol import frames as f
from tests.client.fake_gateway import FakeGateway

TIMEOUT = 10


class Output(io.StringIO):
    """A text stream a test can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        self._changed.set()
        self._changed = trio.Event()
        return n

    async def wait_for(self, predicate: Callable[[str], bool]) -> None:
        while not predicate(self.getvalue()):
            await self._changed.wait()


async def lines_from(receive: trio.MemoryReceiveChannel[str]) -> AsyncIterator[str]:
    async for line in receive:
        yield line


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    chat.configure_parser(parser)
    return parser.parse_args(argv)


def test_parser_defaults() -> None:
    args = parse()
    assert args.url == "ws://127.0.0.1:8000/ws"
    assert (args.token, args.user, args.data_dir) == (None, None, "./data")
    assert (args.channel, args.json) == ("general", False)
    args = parse("--user", "bob", "--channel", "random", "--json", "--data-dir", "/tmp/d")
    assert (args.user, args.channel, args.json, args.data_dir) == ("bob", "random", True, "/tmp/d")
    with pytest.raises(SystemExit):
        parse("--user", "bob", "--token", "t")


def test_run_needs_a_token_or_user(capsys: pytest.CaptureFixture[str]) -> None:
    assert chat.run(parse()) == 2
    assert "--token or --user" in capsys.readouterr().err


def test_format_message() -> None:
    event = f.MessageEvent(
        channel="general", offset=7, epoch="e1", id="e1-7", sender="bob", cmid="c", body="hi", ts=1
    )
    assert chat.format_message(event) == "[#general 7] bob: hi"


def test_format_event() -> None:
    at: dict[str, Any] = {"channel": "general", "epoch": "e1", "ts": 1}
    cases: list[tuple[LogEvent, str]] = [
        (
            f.MessageUpdated(offset=2, id="e1-1", version=2, body="hi all", by="bob", **at),
            "[#general 2] bob edited e1-1 (v2): hi all",
        ),
        (
            f.MessageDeleted(offset=3, id="e1-1", version=3, by="bob", **at),
            "[#general 3] bob deleted e1-1",
        ),
        (
            f.ReactionEvent(
                offset=4, id="e1-1", emoji="👍", user="carol", added=True, count=2, **at
            ),
            "[#general 4] carol reacted +👍 on e1-1 (2)",
        ),
        (
            f.ReactionEvent(
                offset=5, id="e1-1", emoji=":tada:", user="carol", added=False, count=0, **at
            ),
            "[#general 5] carol reacted -:tada: on e1-1 (0)",
        ),
        (
            f.ThreadEvent(
                offset=6,
                id="e1-1",
                user="dave",
                replies=3,
                last_reply_ms=1,
                participants=["bob", "dave"],
                **at,
            ),
            "[#general 6] dave replied in the thread of e1-1 (3 replies)",
        ),
        (
            f.MemberEvent(offset=7, user="erin", joined=True, by="erin", **at),
            "[#general 7] erin joined",
        ),
        (
            f.MemberEvent(offset=8, user="erin", joined=False, by="bob", **at),
            "[#general 8] erin was removed by bob",
        ),
        (
            f.ChannelEvent(
                offset=9,
                what="updated",
                info=f.ChannelInfo(
                    id="ch.1",
                    name="general",
                    kind="public",
                    topic="launch",
                    archived=False,
                    position=0,
                    version=2,
                ),
                by="bob",
                **at,
            ),
            "[#general 9] bob updated #general (ch.1): topic 'launch'",
        ),
    ]
    for event, line in cases:
        assert chat.format_event(event) == line


async def test_chat_prints_changes(fake: FakeGateway) -> None:
    out, err = Output(), Output()
    send, receive = trio.open_memory_channel[str](10)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: chat.chat(
                    fake.url,
                    "tok:alice",
                    "general",
                    lines=lines_from(receive),
                    out=out,
                    err=err,
                    codec="json",
                )
            )
            await out.wait_for(lambda text: "/quit to leave" in text)
            async with open_client(fake.url, "tok:bob") as bob:
                await bob.subscribe("general")
                posted = await bob.publish("general", "helo")
                await bob.edit("general", posted.id, "hello", version=1)
                await bob.react("general", posted.id, "👍")
                await bob.publish("general", "in a thread", thread=posted.id)
                await bob.delete("general", posted.id)
            await out.wait_for(lambda text: "[#general 5] bob deleted e1-1" in text)
            assert out.getvalue().splitlines()[-5:] == [
                "[#general 1] bob: helo",
                "[#general 2] bob edited e1-1 (v2): hello",
                "[#general 3] bob reacted +👍 on e1-1 (1)",
                "[#general 4] bob replied in the thread of e1-1 (1 reply)",
                "[#general 5] bob deleted e1-1",
            ]
            send.close()


@pytest.mark.parametrize("json", [False, True])
async def test_chat_publishes_lines_and_prints_messages(fake: FakeGateway, json: bool) -> None:
    out, err = Output(), Output()
    send, receive = trio.open_memory_channel[str](10)
    codec = "json" if json else "msgpack"
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            status: list[int] = []

            async def session() -> None:
                status.append(
                    await chat.chat(
                        fake.url,
                        "tok:alice",
                        "general",
                        lines=lines_from(receive),
                        out=out,
                        err=err,
                        codec=codec,
                    )
                )

            nursery.start_soon(session)
            await out.wait_for(lambda text: "/quit to leave" in text)
            assert "* alice joined #general at offset 0" in out.getvalue()
            await send.send("hello there\n")
            await out.wait_for(lambda text: "[#general 1] alice: hello there" in text)
            await send.send("   \n")  # blank lines are not sent
            async with open_client(fake.url, "tok:bob") as bob:
                await bob.subscribe("general")
                await bob.typing("general")
                await out.wait_for(lambda text: "* bob is typing in #general" in text)
                await bob.publish("general", "hi alice")
                await out.wait_for(lambda text: "[#general 2] bob: hi alice" in text)
            await send.send("/quit\n")
        assert status == [0]
        assert [m.body for m in fake.messages("general")] == ["hello there", "hi alice"]
        assert fake.conns[0].codec.binary is not json
        assert err.getvalue() == ""


async def test_chat_reports_reconnects_and_final_close(fake: FakeGateway) -> None:
    out, err = Output(), Output()
    send, receive = trio.open_memory_channel[str](10)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            status: list[int] = []

            async def session() -> None:
                status.append(
                    await chat.chat(
                        fake.url,
                        "tok:alice",
                        "general",
                        lines=lines_from(receive),
                        out=out,
                        err=err,
                    )
                )

            nursery.start_soon(session)
            await out.wait_for(lambda text: "/quit to leave" in text)
            await fake.close_all(4100, "draining")
            await out.wait_for(lambda text: "* reconnected" in text)
            assert "* disconnected (4100 draining); reconnecting" in out.getvalue()
            await fake.close_all(4003, "forbidden")
        assert status == [1]  # ended without /quit: the session stops reading input
        assert "! connection closed: 4003 forbidden" in err.getvalue()
        send.close()


async def test_chat_with_a_bad_token_fails(fake: FakeGateway) -> None:
    out, err = Output(), Output()
    _send, receive = trio.open_memory_channel[str](1)
    with trio.fail_after(TIMEOUT):
        status = await chat.chat(
            fake.url, "bad", "general", lines=lines_from(receive), out=out, err=err
        )
    assert status == 1
    assert "4001" in err.getvalue()


async def test_publish_refusal_is_printed(fake: FakeGateway) -> None:
    out, err = Output(), Output()
    send, receive = trio.open_memory_channel[str](10)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: chat.chat(
                    fake.url,
                    "tok:alice",
                    "general",
                    lines=lines_from(receive),
                    out=out,
                    err=err,
                )
            )
            await out.wait_for(lambda text: "/quit to leave" in text)
            await send.send("x" * 20000 + "\n")  # over the announced 16384-byte limit
            await out.wait_for(lambda text: "! not sent: too_large" in text)
            send.close()  # end of input leaves like /quit


def test_run_with_user_mints_a_dev_token(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def secret(data_dir: str) -> str:
        seen["data_dir"] = data_dir
        return "s3cret"

    def mint(secret_: str, user: str, **_: object) -> str:
        seen["mint"] = (secret_, user)
        return "minted"

    async def fake_run_stdio(url: str, token: str, channel: str, codec: str) -> int:
        await trio.lowlevel.checkpoint()
        seen["run"] = (url, token, channel, codec)
        return 0

    monkeypatch.setattr(gateway.auth, "load_or_create_dev_secret", secret)
    monkeypatch.setattr(gateway.auth, "mint_dev_token", mint)
    monkeypatch.setattr(chat, "_run_stdio", fake_run_stdio)
    args = parse("--user", "carol", "--data-dir", "d", "--json", "--url", "ws://h:1/ws")
    assert chat.run(args) == 0
    assert seen == {
        "data_dir": "d",
        "mint": ("s3cret", "carol"),
        "run": ("ws://h:1/ws", "minted", "general", "json"),
    }
