"""The trio client of the gateway: :func:`open_client` and :class:`Client`.

Structure: ``open_client`` owns a nursery with one supervisor task
(:mod:`gateway.client._connector`). The supervisor opens a connection, authenticates
(``auth``, or ``resume`` with the last positions after a reconnect), then runs one reader
(itself, reading frames in order) next to one writer task (the only one writing to the
socket, :mod:`gateway.client._conn`) and a heartbeat. When the connection ends it decides,
from the close code, whether to reconnect (full-jitter exponential backoff) or to stop for
good. State that survives reconnects lives in :mod:`gateway.client._state`.

Delivery guarantees, per subscribed channel, for every entry of its log (messages and the
change events: ``message_updated``, ``message_deleted``, ``reaction``, ``thread``,
``member``, ``channel``; offsets count them all): no duplicates (an entry whose offset is
at or before the last one delivered is dropped) and no gaps (the resume or resubscribe
sends the last delivered position, and the server replays what came after it). When the
server cannot replay (another epoch, or more missed than it replays) a
:class:`ChannelReset` notice says so. Unacked publishes, edits, deletes and reactions are
re-sent with the same ``cmid`` after a reconnect; the server deduplicates them, so none is
applied twice.

Backpressure policy: :meth:`Client.events` is fed by a bounded buffer (``max_events``,
default 10,000). When it is full the reader stops reading the socket until the
application consumes: nothing is dropped by the SDK, TCP backpressure reaches the server,
and the server may then shed the connection with 4101 ("slow consumer"); the SDK then
reconnects and resumes from the last entry it buffered, so still nothing is lost.
Acks and pongs queue behind unconsumed messages meanwhile, so an application that
publishes must also consume :meth:`Client.events` (or unsubscribe from what it does not
read). Typing events are ephemeral and dropped when the buffer is full.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import MappingProxyType

import trio

from gateway.client._connector import Connector, TokenSource
from gateway.client._errors import PublishError, SubscribeError
from gateway.client._events import ClientStatistics, Event, EventStream
from gateway.client._state import Lost, Pending, State, Sub
from gateway.client._threads import message_offset, thread_channel
from gateway.client._util import (
    Waiter,
    check_body,
    check_channel,
    check_cmid,
    check_id,
    raise_single,
)
from gateway.model import Position
from gateway.protocol import frames as f
from gateway.protocol.codec import JSON, MSGPACK

__all__ = ["Client", "TokenSource", "open_client"]

MAX_NONCE = 2**53
MAX_MESSAGE_ID = 96
MAX_EMOJI = 64
MAX_VERSION = 2**31


class Client:
    """A connection to the gateway that survives reconnects. Create it with
    :func:`open_client`; every method must be called from inside that ``async with``.

    Attributes:
        user: the authenticated user id (from ``ready``).
        session: the server session id of the current (or last) connection.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        token: TokenSource,
        *,
        codec: str,
        reconnect: bool,
        backoff_initial: float,
        backoff_max: float,
        connect_timeout: float,
        max_pending: int,
        max_events: int,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        codecs = {"msgpack": MSGPACK, "json": JSON}
        if codec not in codecs:
            raise ValueError(f"codec must be 'msgpack' or 'json', not {codec!r}")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._state = State(codecs[codec], max_events)
        self._connector = Connector(
            self._state,
            url,
            token,
            reconnect=reconnect,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            connect_timeout=connect_timeout,
            ssl_context=ssl_context,
        )
        self._slots = trio.Semaphore(max_pending)
        self._nonces = itertools.count(1)

    # ================================================================ public API

    @property
    def user(self) -> str | None:
        """The authenticated user id."""
        return self._state.user

    @property
    def session(self) -> str | None:
        """The server session id of the current (or last) connection."""
        return self._state.session

    @property
    def positions(self) -> Mapping[str, Position]:
        """Last position per subscribed channel: the last log entry (message or change)
        delivered to the event buffer, or the log head the subscription went live at.
        Read-only live view."""
        return MappingProxyType(self._state.positions)

    async def subscribe(self, channel: str, since: Position | None = None) -> f.Subscribed:
        """Subscribe to ``channel`` and wait until the server confirms it.

        With ``since``, the log entries after that position are replayed (into
        :meth:`events`) before live ones; ``since`` also becomes the client's position, so
        an older one re-delivers entries already seen. Subscribing again to a subscribed
        channel without ``since`` continues from the current position. The subscription
        is kept across reconnects until :meth:`unsubscribe`. Cancelling this call does not
        undo the subscription.

        Raises :class:`SubscribeError` if the server refuses (``forbidden``, too many
        subscriptions), :class:`ConnectionClosed` if the client stopped for good.
        """
        check_channel(channel)
        st = self._state
        st.check_open()
        sub = st.subs.get(channel)
        new = sub is None
        if sub is None:
            sub = st.subs[channel] = Sub(channel)
        if since is not None:
            st.positions[channel] = since
        waiter: Waiter[f.Subscribed] = Waiter()
        sub.waiters.append(waiter)
        conn = st.conn
        if conn is not None and (new or since is not None or sub.live_gen == conn.gen):
            # (a subscription being resumed right now is confirmed without a new frame)
            conn.send(f.Subscribe(channel=channel, since=st.positions.get(channel)))
        try:
            return await waiter.wait()
        finally:
            if waiter in sub.waiters:
                sub.waiters.remove(waiter)

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``; forget its position; wait for the server's answer.

        Events of the channel still in the buffer are delivered; none are added after.
        A pending :meth:`subscribe` of the channel raises :class:`SubscribeError`.
        """
        check_channel(channel)
        st = self._state
        st.check_open()
        st.drop_subscription(
            channel, SubscribeError("unsubscribed", "unsubscribe() was called", channel=channel)
        )
        conn = st.conn
        if conn is None:  # nothing to tell: the next connection will not resubscribe it
            await trio.lowlevel.checkpoint()
            return
        waiter: Waiter[None] = Waiter()
        st.unsub_waiters.setdefault(channel, []).append(waiter)
        conn.send(f.Unsubscribe(channel=channel))
        try:
            await waiter.wait()
        finally:
            waiters = st.unsub_waiters.get(channel)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del st.unsub_waiters[channel]

    async def publish(
        self,
        channel: str,
        body: str,
        *,
        cmid: str | None = None,
        thread: str | None = None,
        files: Sequence[str] = (),
    ) -> f.Ack:
        """Publish ``body`` to ``channel`` (subscribe to it first) and wait for the ack.

        ``cmid`` is the idempotency key (default: a random uuid4 hex). The publish
        survives reconnects: until acked it is re-sent with the same ``cmid``, and the
        server never stores it twice (a re-send is acked with ``duplicate=True``). At most
        ``max_pending`` publishes (edits, deletes, reactions) are in flight; more calls
        wait for a slot. Calls awaited one after another keep their order. Cancelling the
        call after the frame was written does not take it back.

        With ``thread`` (the ``id`` of a message of ``channel``) the publish is a reply in
        that message's thread: it is stored in the thread's log, which the ack names
        (``ack.channel``, see :func:`thread_channel` and :func:`thread_of`); subscribe to
        that log to receive the replies. ``channel`` itself gets a ``thread`` event.

        ``files``: ids of uploaded files to attach (``POST /v1/files``, upload, complete;
        at most 10): yours, ready, and not attached to another channel.

        Raises :class:`PublishError` if the server refuses it, :class:`ValueError` for a
        malformed argument, :class:`ConnectionClosed` if the client stopped for good.
        """
        check_channel(channel)
        check_body(body)
        if len(files) > 10:
            raise ValueError("at most 10 files per message")
        cmid = self._cmid(cmid)
        ack_channel = channel
        if thread is not None:
            check_id("thread", thread, MAX_MESSAGE_ID)
            # (a malformed parent is refused by the server: not_found or invalid_field)
            with contextlib.suppress(ValueError):
                ack_channel = thread_channel(channel, message_offset(thread))
        self._check_body_limit(channel, cmid, body)
        frame = f.Publish(channel=channel, cmid=cmid, body=body, thread=thread, files=list(files))
        return await self._call(frame, ack_channel)

    async def edit(
        self,
        channel: str,
        message_id: str,
        body: str,
        *,
        version: int,
        cmid: str | None = None,
    ) -> f.Ack:
        """Replace the body of one's own message ``message_id`` of ``channel`` and wait
        for the ack; ``ack.version`` is the message's new version.

        ``version`` is the version last seen (1 as posted, then
        ``MessageUpdated.version``): if the message changed since, the server refuses
        with ``stale_version``. ``cmid``, re-sends, slots and cancellation work as for
        :meth:`publish`: an edit re-sent after a reconnect is applied once (its re-send
        is acked with ``duplicate=True``). Every subscriber, this client too, then gets a
        :class:`MessageUpdated`. A thread reply is edited on the thread's log.

        Raises :class:`PublishError` if the server refuses it (``forbidden``,
        ``not_found``, ``stale_version``, ``conflict`` for a deleted message...),
        :class:`ValueError` for a malformed argument, :class:`ConnectionClosed` if the
        client stopped for good.
        """
        check_channel(channel)
        check_id("message_id", message_id, MAX_MESSAGE_ID)
        check_body(body)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError("version must be an int")
        if not 1 <= version <= MAX_VERSION:
            raise ValueError(f"version must be 1 to {MAX_VERSION}")
        cmid = self._cmid(cmid)
        self._check_body_limit(channel, cmid, body)
        frame = f.Edit(channel=channel, id=message_id, cmid=cmid, body=body, version=version)
        return await self._call(frame, channel)

    async def delete(self, channel: str, message_id: str, *, cmid: str | None = None) -> f.Ack:
        """Delete message ``message_id`` of ``channel`` (one's own, or as a workspace
        owner or admin) and wait for the ack; the message becomes a tombstone and every
        subscriber gets a :class:`MessageDeleted`. Works like :meth:`edit` otherwise."""
        check_channel(channel)
        check_id("message_id", message_id, MAX_MESSAGE_ID)
        cmid = self._cmid(cmid)
        return await self._call(f.Delete(channel=channel, id=message_id, cmid=cmid), channel)

    async def react(
        self,
        channel: str,
        message_id: str,
        emoji: str,
        *,
        add: bool = True,
        cmid: str | None = None,
    ) -> f.Ack:
        """Add (``add=True``) or remove this user's ``emoji`` reaction on message
        ``message_id`` of ``channel`` and wait for the ack; every subscriber gets a
        :class:`ReactionEvent` with the new count. Idempotent: adding twice is one
        reaction. Works like :meth:`edit` otherwise."""
        check_channel(channel)
        check_id("message_id", message_id, MAX_MESSAGE_ID)
        check_id("emoji", emoji, MAX_EMOJI)
        if not isinstance(add, bool):
            raise ValueError("add must be a bool")
        cmid = self._cmid(cmid)
        frame = f.React(channel=channel, id=message_id, cmid=cmid, emoji=emoji, add=add)
        return await self._call(frame, channel)

    async def typing(self, channel: str) -> None:
        """Tell the other subscribers of ``channel`` this user is typing.

        Ephemeral and best effort: dropped (silently) while disconnected, while the
        channel is not confirmed subscribed, or when too many are queued.
        """
        check_channel(channel)
        st = self._state
        st.check_open()
        await trio.lowlevel.checkpoint()
        conn = st.conn
        sub = st.subs.get(channel)
        if conn is None or sub is None or sub.live_gen != conn.gen or not conn.send_typing(channel):
            st.counters.ephemeral_dropped += 1

    async def mark_read(self, channel: str, offset: int, *, delivered: bool = False) -> None:
        """Tell the server this user has read ``channel`` up to ``offset`` (or, with
        ``delivered``, that this device received it: DM receipts). The read cursor syncs
        the user's other devices (``ReadEvent`` in ``u.<user>``) and feeds unread counts.

        Best effort like :meth:`typing`: dropped while disconnected or not subscribed;
        the cursor only moves forward, so sending the latest offset again is harmless.
        """
        check_channel(channel)
        if not 1 <= offset <= 2**53:
            raise ValueError("offset must be 1..2**53")
        st = self._state
        st.check_open()
        await trio.lowlevel.checkpoint()
        conn = st.conn
        sub = st.subs.get(channel)
        frame = (f.Delivered if delivered else f.Read)(channel=channel, offset=offset)
        if conn is None or sub is None or sub.live_gen != conn.gen or not conn.send_receipt(frame):
            st.counters.ephemeral_dropped += 1

    async def watch_presence(self, users: Sequence[str]) -> None:
        """Follow the presence of ``users`` (replacing the previous set; empty: none).

        A :class:`PresenceEvent` with the current state of each user follows, then one per
        change (``online``, ``away``, ``offline``, with ``last_seen``). The set is sent
        again after every reconnect, so the current states follow each reconnect too.
        """
        wanted = tuple(dict.fromkeys(users))
        for user in wanted:
            if not isinstance(user, str) or not 0 < len(user) <= 128:
                raise ValueError(f"invalid user id {user!r}")
        st = self._state
        st.check_open()
        limits = st.limits
        if limits is not None and len(wanted) > limits.max_presence_watch:
            raise ValueError(f"at most {limits.max_presence_watch} users")
        st.presence_watch = wanted
        await trio.lowlevel.checkpoint()
        if st.conn is not None:
            st.conn.send(f.PresenceWatch(users=list(wanted)))

    async def set_presence(self, status: str) -> None:
        """This connection's status, ``"online"`` (the default) or ``"away"``; kept across
        reconnects."""
        if status not in ("online", "away"):
            raise ValueError("status must be 'online' or 'away'")
        st = self._state
        st.check_open()
        st.presence_status = status
        await trio.lowlevel.checkpoint()
        if st.conn is not None:
            st.conn.send(f.PresenceSet(status="online" if status == "online" else "away"))

    async def ping(self) -> float:
        """Send an application ``ping`` and return the round trip in seconds.

        Waits for a connection if there is none; retried on the next connection if the
        current one drops before the ``pong``.
        """
        st = self._state
        while True:
            conn = await st.wait_ready()
            nonce = next(self._nonces) % MAX_NONCE or 1
            waiter: Waiter[None] = Waiter()
            st.pings[nonce] = waiter
            start = trio.current_time()
            conn.send(f.Ping(nonce=nonce))
            try:
                await waiter.wait()
            except Lost:
                continue
            finally:
                st.pings.pop(nonce, None)
            return trio.current_time() - start

    def events(self) -> AsyncIterator[Event]:
        """Iterate over received events: the log events of subscribed channels
        (:class:`MessageEvent`, :class:`MessageUpdated`, :class:`MessageDeleted`,
        :class:`ReactionEvent`, :class:`ThreadEvent`, :class:`MemberEvent`,
        :class:`ChannelEvent`: each exactly once, in log order per channel),
        :class:`TypingEvent`, :class:`PresenceEvent`, :class:`Unsubscribed` (ended by the
        server) and the notices :class:`Disconnected`, :class:`Reconnected`,
        :class:`ChannelReset`.

        All iterators share one buffer (use one consumer). The iteration ends after the
        client stops for good (after a final ``Disconnected(will_reconnect=False)`` if the
        server ended it) or when the ``async with`` block exits.
        """
        return EventStream(self._state.events)

    def statistics(self) -> ClientStatistics:
        """A snapshot of the client's counters and state."""
        st = self._state
        c = st.counters
        conn = st.conn
        last = st.last_close
        return ClientStatistics(
            connected=conn is not None,
            session=st.session,
            connects=c.connects,
            connect_failures=c.connect_failures,
            subscriptions=len(st.subs),
            pending_publishes=len(st.pending),
            events_buffered=len(st.events),
            events_capacity=st.events.maxsize,
            reader_blocked=conn is not None and conn.reader_blocked,
            messages_delivered=c.messages_delivered,
            changes_delivered=c.changes_delivered,
            duplicates_dropped=c.duplicates_dropped,
            ephemeral_dropped=c.ephemeral_dropped,
            notices_dropped=c.notices_dropped,
            frames_sent=c.frames_sent,
            frames_received=c.frames_received,
            bytes_sent=c.bytes_sent,
            bytes_received=c.bytes_received,
            publishes_sent=c.publishes_sent,
            publishes_resent=c.publishes_resent,
            decode_errors=c.decode_errors,
            last_close_code=None if last is None else last.code,
            last_close_reason=None if last is None else last.reason,
        )

    # ================================================================ internals

    @staticmethod
    def _cmid(cmid: str | None) -> str:
        if cmid is None:
            return uuid.uuid4().hex
        check_cmid(cmid)
        return cmid

    def _check_body_limit(self, channel: str, cmid: str, body: str) -> None:
        self._state.check_open()
        limits = self._state.limits
        if limits is not None and len(body.encode()) > limits.max_body_bytes:
            raise PublishError(
                "too_large",
                f"body over {limits.max_body_bytes} bytes",
                channel=channel,
                cmid=cmid,
            )

    async def _call(
        self, frame: f.Publish | f.Edit | f.Delete | f.React, ack_channel: str
    ) -> f.Ack:
        """Send a frame the server acks by ``cmid`` and wait for its ack (or refusal),
        re-sending it with the same ``cmid`` on every new connection until answered."""
        st = self._state
        st.check_open()
        cmid = frame.cmid
        async with self._slots:
            st.check_open()
            if cmid in st.pending:
                raise ValueError(f"a call with cmid {cmid!r} is already in flight")
            p = Pending(cmid, frame.channel, st.encode(frame), ack_channel)
            st.pending[cmid] = p
            if st.conn is not None:
                st.conn.queue_publish(p)
            try:
                return await p.waiter.wait()
            finally:
                p.done = True
                if st.pending.get(cmid) is p:
                    del st.pending[cmid]


@asynccontextmanager
async def open_client(
    url: str | Sequence[str],
    token: TokenSource,
    *,
    codec: str = "msgpack",
    reconnect: bool = True,
    backoff_initial: float = 0.2,
    backoff_max: float = 10.0,
    connect_timeout: float = 10.0,
    max_pending: int = 1000,
    max_events: int = 10_000,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Client]:
    """Connect to the gateway at ``url`` (``ws://host:port/ws`` or ``wss://...``) and
    yield a ready, authenticated :class:`Client`.

    ``url`` may be a list of node URLs: each new connection tries the next one, so a
    client whose node died resumes on another (behind a load balancer, one URL does).

    ``token`` is a JWT or an async callable returning a fresh one for each connection
    (use one when tokens expire: the server closes with 4105 at expiry and the SDK
    resumes with a new token). ``codec`` is ``"msgpack"`` (binary frames) or ``"json"``
    (text frames).

    The first connection is tried once (``connect_timeout`` bounds TCP, TLS, WebSocket
    handshake and authentication): if it fails, :class:`ConnectionClosed` is raised (or
    the token callable's own exception). Later losses are repaired by reconnecting, with
    full-jitter exponential backoff between ``backoff_initial`` and ``backoff_max``
    seconds and without a limit on attempts, as long as the close code allows a resume
    (:func:`gateway.errors.may_resume`; a dropped TCP connection and HTTP 5xx/408/429
    refusals count as resumable, other HTTP refusals stop with code 1002).
    ``reconnect=False`` stops at the first loss instead.

    ``max_pending`` bounds publishes (edits, deletes, reactions) in flight;
    ``max_events`` bounds the event buffer (see the module docstring for the backpressure
    policy). Leaving the block closes the connection with code 1000 (or drops it at once
    if the block is being cancelled).
    """
    client = Client(
        url,
        token,
        codec=codec,
        reconnect=reconnect,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        connect_timeout=connect_timeout,
        max_pending=max_pending,
        max_events=max_events,
        ssl_context=ssl_context,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client._connector.supervise)
            try:
                yield client
            finally:
                await client._connector.shutdown()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_single(group)
