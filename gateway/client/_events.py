"""What :meth:`Client.events` yields, the bounded buffer behind it, and statistics."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import AsyncIterator
from typing import TypeAlias

import trio

from gateway.model import Position
from gateway.protocol.frames import (
    ChannelEvent,
    MemberEvent,
    MessageDeleted,
    MessageEvent,
    MessageUpdated,
    NotificationEvent,
    PresenceEvent,
    ReactionEvent,
    ReadEvent,
    ReceiptEvent,
    ThreadEvent,
    TypingEvent,
    Unsubscribed,
)

__all__ = [
    "LOG_EVENT_TYPES",
    "ChannelReset",
    "ClientStatistics",
    "Disconnected",
    "Event",
    "LogEvent",
    "Reconnected",
]

LogEvent: TypeAlias = (
    MessageEvent
    | MessageUpdated
    | MessageDeleted
    | ReactionEvent
    | ThreadEvent
    | MemberEvent
    | ChannelEvent
    | ReadEvent
    | NotificationEvent
)
"""An entry of a channel's log: a message or a change (protocol section 18). Each has its
own ``offset`` in the log (offsets count every entry) and is delivered exactly once, in
log order, across reconnects."""

LOG_EVENT_TYPES: tuple[type[LogEvent], ...] = (
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


@dataclasses.dataclass(frozen=True, slots=True)
class Disconnected:
    """Notice: the connection was lost.

    With ``will_reconnect`` the SDK is reconnecting (a :class:`Reconnected` follows once it
    succeeds; nothing is lost meanwhile). Without it the client has stopped for good: this
    is the last event and :meth:`Client.events` ends after it.
    """

    code: int
    reason: str
    will_reconnect: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Reconnected:
    """Notice: a new connection is ready and resumed the channels in ``resumed``.

    The missed messages and other log events of each channel follow (exactly once, before
    live ones).
    ``attempts`` is how many connection attempts it took.
    """

    session: str
    attempts: int
    resumed: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelReset:
    """Notice: a channel could not be continued seamlessly from ``previous``.

    ``reset``: the log was lost and recreated (new epoch); the client's view of the channel
    is stale and ``position`` is the new place. ``truncated``: more log entries were missed
    than the server replays; fetch the gap between ``previous`` and ``position`` over REST.
    """

    channel: str
    previous: Position | None
    position: Position
    reset: bool
    truncated: bool


Event: TypeAlias = (
    LogEvent
    | TypingEvent
    | ReceiptEvent
    | PresenceEvent
    | Unsubscribed
    | ChannelReset
    | Disconnected
    | Reconnected
)
"""Everything :meth:`Client.events` yields: log events (:data:`LogEvent`), typing, presence
and the notices. ``Unsubscribed`` is delivered when the server
ends a subscription on its own (``forbidden``, or ``restart``, which the SDK already handles
by resubscribing from the last position)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ClientStatistics:
    """A snapshot of one client's counters (see :meth:`Client.statistics`)."""

    connected: bool
    session: str | None
    connects: int  # connections that reached ``ready``
    connect_failures: int  # attempts that did not
    subscriptions: int
    pending_publishes: int  # publishes, edits, deletes and reactions not yet answered
    events_buffered: int
    events_capacity: int
    reader_blocked: bool  # the buffer is full: the SDK stopped reading the socket
    messages_delivered: int  # ``message`` events put in the buffer
    changes_delivered: int  # the other log events (edits, deletes, reactions, ...)
    duplicates_dropped: int
    ephemeral_dropped: int  # typing events/frames dropped because a buffer was full
    notices_dropped: int
    frames_sent: int
    frames_received: int
    bytes_sent: int
    bytes_received: int
    publishes_sent: int  # publish, edit, delete and react frames, including re-sends
    publishes_resent: int  # re-sent after a reconnect or a dropped frame
    decode_errors: int
    last_close_code: int | None
    last_close_reason: str | None


class EventQueue:
    """A bounded FIFO of events with one policy per kind of event.

    Log events wait for room (:meth:`put`): the SDK's reader stops, so the socket stops being
    read (TCP backpressure). Notices (:meth:`put_notice`) never wait, and may exceed the
    bound by ``slack`` so a consumer always learns about disconnects; past that they are
    dropped. Ephemeral events use :meth:`put_nowait` and are dropped when it is full.
    """

    __slots__ = ("_closed", "_getters", "_items", "_maxsize", "_putters", "_slack")

    def __init__(self, maxsize: int, slack: int = 1000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: collections.deque[Event] = collections.deque()
        self._maxsize = maxsize
        self._slack = slack
        self._getters = trio.lowlevel.ParkingLot()
        self._putters = trio.lowlevel.ParkingLot()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    def full(self) -> bool:
        return len(self._items) >= self._maxsize

    async def put(self, event: Event) -> None:
        """Append ``event``, waiting while the queue is full. Dropped once closed."""
        await trio.lowlevel.checkpoint()
        while len(self._items) >= self._maxsize and not self._closed:
            await self._putters.park()
        if not self._closed:
            self._items.append(event)
            self._getters.unpark()

    def put_nowait(self, event: Event) -> bool:
        """Append ``event`` if there is room; return whether it was appended."""
        return self._append(event, self._maxsize)

    def put_notice(self, event: Event) -> bool:
        """Append a notice, past the bound by up to ``slack``; return whether appended."""
        return self._append(event, self._maxsize + self._slack)

    def _append(self, event: Event, limit: int) -> bool:
        if self._closed or len(self._items) >= limit:
            return False
        self._items.append(event)
        self._getters.unpark()
        return True

    async def get(self) -> Event:
        """Take the oldest event; raise :exc:`trio.EndOfChannel` once closed and empty."""
        await trio.lowlevel.checkpoint()
        while not self._items:
            if self._closed:
                raise trio.EndOfChannel
            await self._getters.park()
        event = self._items.popleft()
        self._putters.unpark()
        return event

    def close(self) -> None:
        """No more events will be added; getters drain what is left, then stop."""
        self._closed = True
        self._getters.unpark_all()
        self._putters.unpark_all()


class EventStream(AsyncIterator[Event]):
    """The async iterator returned by :meth:`Client.events`."""

    __slots__ = ("_queue",)

    def __init__(self, queue: EventQueue) -> None:
        self._queue = queue

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._queue.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
