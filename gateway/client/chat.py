"""``gateway chat``: a line-oriented terminal chat client built on the SDK.

It subscribes to one channel, prints what arrives on it (live entries only: no history),
a message as ``[#channel offset] sender: body`` and a change (edit, delete, reaction,
thread reply, member, channel update) as one readable line in the same form, and
publishes each line read from stdin. ``/quit``
or end of input leaves. Reconnects are handled by the SDK and shown as ``* ...`` lines.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import TextIO

import trio

from gateway.client._errors import ClientError, ConnectionClosed, PublishError
from gateway.client._events import (
    LOG_EVENT_TYPES,
    ChannelReset,
    Disconnected,
    LogEvent,
    Reconnected,
)
from gateway.client.sdk import Client, open_client
from gateway.protocol.frames import (
    MemberEvent,
    MessageDeleted,
    MessageEvent,
    MessageUpdated,
    NotificationEvent,
    ReactionEvent,
    ReadEvent,
    ThreadEvent,
    TypingEvent,
    Unsubscribed,
)

__all__ = ["chat", "configure_parser", "format_event", "format_message", "run"]

DEFAULT_URL = "ws://127.0.0.1:8000/ws"


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the ``chat`` options to ``p``."""
    p.add_argument("--url", default=DEFAULT_URL, help=f"WebSocket URL (default {DEFAULT_URL})")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--token", help="JWT to authenticate with")
    who.add_argument("--user", help="mint a development token for this user (with the dev secret)")
    p.add_argument(
        "--data-dir",
        default="./data",
        help="where the gateway keeps its dev secret, for --user (default ./data)",
    )
    p.add_argument("--channel", default="general", help="channel to join (default general)")
    p.add_argument("--json", action="store_true", help="use the JSON codec instead of MessagePack")


def run(args: argparse.Namespace) -> int:
    """Run the chat until ``/quit``, end of input, or a final disconnect. Exit status:
    0 on a normal exit, 1 if the connection was refused or closed for good, 2 for usage."""
    if args.token:
        token: str = args.token
    elif args.user:
        from gateway.auth import load_or_create_dev_secret, mint_dev_token

        token = mint_dev_token(load_or_create_dev_secret(args.data_dir), args.user)
    else:
        print("gateway chat: give --token or --user", file=sys.stderr)
        return 2
    codec = "json" if args.json else "msgpack"
    try:
        return trio.run(functools.partial(_run_stdio, args.url, token, args.channel, codec))
    except KeyboardInterrupt:
        return 130


async def _run_stdio(url: str, token: str, channel: str, codec: str) -> int:
    async with aclosing(_lines(sys.stdin)) as lines:
        return await chat(
            url, token, channel, lines=lines, out=sys.stdout, err=sys.stderr, codec=codec
        )


async def _lines(stdin: TextIO) -> AsyncGenerator[str, None]:
    """Lines of ``stdin``, read in a thread that is abandoned if we leave first."""
    while True:
        line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
        if not line:
            return
        yield line


def format_message(event: MessageEvent) -> str:
    """One message as ``[#channel offset] sender: body``."""
    return f"[#{event.channel} {event.offset}] {event.sender}: {event.body}"


def format_event(event: LogEvent) -> str:
    """One log entry on one line, ``[#channel offset] ...``: a message as
    :func:`format_message`, a change as what happened (messages named by ``id``)."""
    if isinstance(event, MessageEvent):
        return format_message(event)
    head = f"[#{event.channel} {event.offset}]"
    if isinstance(event, MessageUpdated):
        return f"{head} {event.by} edited {event.id} (v{event.version}): {event.body}"
    if isinstance(event, MessageDeleted):
        return f"{head} {event.by} deleted {event.id}"
    if isinstance(event, ReactionEvent):
        sign = "+" if event.added else "-"
        return f"{head} {event.user} reacted {sign}{event.emoji} on {event.id} ({event.count})"
    if isinstance(event, ThreadEvent):
        replies = "1 reply" if event.replies == 1 else f"{event.replies} replies"
        return f"{head} {event.user} replied in the thread of {event.id} ({replies})"
    if isinstance(event, MemberEvent):
        verb = "joined" if event.joined else "left"
        text = f"{head} {event.user} {verb}"
        if event.by != event.user:
            text = f"{head} {event.user} was {'added' if event.joined else 'removed'} by {event.by}"
        return f"{text} as {event.role}" if event.role and event.joined else text
    if isinstance(event, ReadEvent):
        return f"{head} read #{event.target} up to {event.read_offset}"
    if isinstance(event, NotificationEvent):
        return f"{head} {event.kind} from {event.sender} in #{event.target}: {event.preview}"
    info = event.info
    details = [f"topic {info.topic!r}"] if info.topic else []
    if info.archived:
        details.append("archived")
    suffix = f": {', '.join(details)}" if details else ""
    return f"{head} {event.by} {event.what} #{info.name} ({info.id}){suffix}"


async def chat(
    url: str,
    token: str,
    channel: str,
    *,
    lines: AsyncIterator[str],
    out: TextIO,
    err: TextIO,
    codec: str = "msgpack",
) -> int:
    """The chat session: publish each of ``lines``, print what arrives to ``out``."""
    try:
        async with open_client(url, token, codec=codec) as client:
            subscribed = await client.subscribe(channel)
            _say(out, f"* {client.user} joined #{channel} at offset {subscribed.offset}")
            _say(out, "* type a message and press enter; /quit to leave")
            ended: list[Disconnected] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_print_events, client, out, ended, nursery.cancel_scope)
                await _publish_lines(client, channel, lines, out)
                nursery.cancel_scope.cancel()
            if ended:
                _say(err, f"! connection closed: {ended[0].code} {ended[0].reason}")
                return 1
    except ConnectionClosed as exc:
        _say(err, f"! {exc}")
        return 1
    return 0


async def _publish_lines(
    client: Client, channel: str, lines: AsyncIterator[str], out: TextIO
) -> None:
    async for line in lines:
        text = line.rstrip("\r\n")
        if text.strip() == "/quit":
            return
        if not text.strip():
            continue
        try:
            await client.publish(channel, text)
        except (PublishError, ValueError) as exc:
            _say(out, f"! not sent: {exc}")
        except ClientError:
            return  # closed for good: _print_events reports it


async def _print_events(
    client: Client, out: TextIO, ended: list[Disconnected], scope: trio.CancelScope
) -> None:
    async for event in client.events():
        if isinstance(event, LOG_EVENT_TYPES):
            _say(out, format_event(event))
        elif isinstance(event, TypingEvent):
            _say(out, f"* {event.user} is typing in #{event.channel}")
        elif isinstance(event, Disconnected):
            if event.will_reconnect:
                _say(out, f"* disconnected ({event.code} {event.reason}); reconnecting")
            else:
                ended.append(event)
        elif isinstance(event, Reconnected):
            _say(out, "* reconnected")
        elif isinstance(event, ChannelReset):
            what = "history was reset" if event.reset else "some messages were skipped"
            _say(out, f"* #{event.channel}: {what}")
        elif isinstance(event, Unsubscribed):
            _say(out, f"* #{event.channel} ended by the server ({event.reason})")
    scope.cancel()  # the client stopped for good: stop reading input


def _say(stream: TextIO, text: str) -> None:
    print(text, file=stream, flush=True)
