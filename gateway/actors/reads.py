"""Read cursors, unread counts, DM receipts and notifications, as the node serves them.

* **Counting** happens where messages become durable: :class:`NotingStore` wraps the
  message store, and after each ``write`` (which the bus makes in log order per channel)
  :meth:`ReadService.after_write` notes every message of a domain channel (``ch.``/``dm.``)
  in the :class:`~gateway.store.read_state.ReadStateStore` (its mentions too) and files
  the notifications it causes: mentions of channel members, DMs to the other participants,
  replies to a thread's author and participants. If any of that fails, ``write`` fails,
  and the bus retries it: every step is idempotent (by offset, by notification id).
* **Read cursors** move forward only, are clamped to the log's head, and are synced to the
  user's other devices as ``read`` events in the user's own log ``u.<user>``; new
  notifications are pushed there too (``notification`` events).
* **Receipts** (DMs only): ``read`` and ``delivered`` frames update the store and are
  fanned out to the DM's subscribers as ephemeral ``receipt`` events.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from gateway.actors.access import is_domain_channel, thread_parent, user_channel
from gateway.bus import Bus
from gateway.domain.errors import DomainError
from gateway.domain.mentions import parse_mentions
from gateway.errors import GatewayError
from gateway.model import Position, Record
from gateway.protocol import events as ev
from gateway.store.base import MessageStore, StoreStatistics, WriteBehindResult
from gateway.store.domain import DomainStore
from gateway.store.message_state import MessageStateStore
from gateway.store.read_state import MAX_PREVIEW_CHARS, Notification, ReadStateStore, Receipt

__all__ = ["NOTIFICATION_TTL_MS", "NotingStore", "ReadService"]

log = logging.getLogger("gateway.reads")
NOTIFICATION_TTL_MS = 30 * 86_400_000  # notifications expire after 30 days
_DM_CACHE = 10_000  # DM participant sets and channel workspaces kept (they never change)
_THREAD_SCAN = 200  # earlier replies read to find whom a reply notifies


MAX_BACKLOG = 100_000  # records waiting to be counted while the read-state store fails


class NotingStore:
    """A :class:`MessageStore` that reports every successful ``write`` to ``on_written``.

    A failure of ``on_written`` does not fail the write (the messages are durable and
    acked; counting is secondary): the records wait in a backlog, in order, and are
    reported again, before the new ones, with the next write. ``on_written`` must be
    idempotent. Past :data:`MAX_BACKLOG` the oldest are dropped (logged): their messages
    are then never counted nor notified."""

    def __init__(self, inner: MessageStore) -> None:
        self.inner = inner
        self.on_written: Callable[[Sequence[Record]], Awaitable[None]] | None = None
        self.backlog: list[Record] = []

    async def open_log(self, channel: str) -> Position:
        return await self.inner.open_log(channel)

    async def write(self, records: Sequence[Record]) -> None:
        await self.inner.write(records)
        await self._note(records)

    async def write_behind(self, records: Sequence[Record]) -> WriteBehindResult:
        result = await self.inner.write_behind(records)
        skip = {(r.channel, r.offset) for r in result.duplicates}
        skip |= {(r.channel, r.offset) for r in records if r.channel in result.refused}
        await self._note([r for r in records if (r.channel, r.offset) not in skip])
        return result

    async def _note(self, records: Sequence[Record]) -> None:
        if self.on_written is None or not (records or self.backlog):
            return
        todo = [*self.backlog, *records]
        try:
            await self.on_written(todo)
        except DomainError as exc:  # a refusal a retry would repeat: give up on these
            log.error("records not counted", extra={"error": str(exc), "records": len(todo)})
            self.backlog = []
        except GatewayError as exc:  # unavailable: try again with the next write
            if len(todo) > MAX_BACKLOG:
                log.error(
                    "read state backlog full: dropping", extra={"dropped": len(todo) - MAX_BACKLOG}
                )
                todo = todo[-MAX_BACKLOG:]
            if not self.backlog:
                log.warning(
                    "counting failed; retried with the next write", extra={"error": str(exc)}
                )
            self.backlog = todo
        else:
            self.backlog = []

    async def read(self, channel: str, after: int, limit: int) -> Sequence[Record]:
        return await self.inner.read(channel, after, limit)

    async def read_before(self, channel: str, before: int, limit: int) -> Sequence[Record]:
        return await self.inner.read_before(channel, before, limit)

    async def find_cmid(self, channel: str, sender: str, cmid: str) -> Record | None:
        return await self.inner.find_cmid(channel, sender, cmid)

    async def read_by_sender(
        self, channel: str, sender: str, before: int, limit: int
    ) -> Sequence[Record]:
        return await self.inner.read_by_sender(channel, sender, before, limit)

    def statistics(self) -> StoreStatistics:
        return self.inner.statistics()

    async def aclose(self) -> None:
        await self.inner.aclose()


class ReadService:
    def __init__(
        self,
        store: ReadStateStore,
        domain: DomainStore,
        states: MessageStateStore,
        bus: Bus,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> None:
        self.store = store
        self.domain = domain
        self.states = states
        self.bus = bus
        self._spawn = spawn
        self._dms: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._workspaces: OrderedDict[str, str] = OrderedDict()  # channels never move

    # -- cursors and receipts ------------------------------------------------------------

    async def mark_read(self, user: str, channel: str, offset: int) -> Receipt | None:
        """Move ``user``'s cursor on ``channel`` to ``offset`` (clamped to the head); sync
        the user's devices. Returns the DM receipt to fan out, else None."""
        head = await self.bus.head(channel)
        offset = min(offset, head.offset)
        if offset < 1:
            return None
        cursor = await self.store.mark_read(user, channel, offset, now_ms=_now())
        if cursor.offset == offset:  # it moved (or a retry of this very move)
            payload = ev.ReadPayload(target=channel, read_offset=offset)
            await self.bus.append(
                user_channel(user),
                sender=user,
                cmid=f"~r:{channel}:{offset}",
                body=ev.encode_payload(payload),
                kind=ev.READ,
            )
        return await self._receipt(user, channel)

    async def mark_delivered(self, user: str, channel: str, offset: int) -> Receipt | None:
        if not channel.startswith("dm."):
            return None
        head = await self.bus.head(channel)
        offset = min(offset, head.offset)
        if offset < 1:
            return None
        await self.store.mark_delivered(user, channel, offset, now_ms=_now())
        return await self._receipt(user, channel)

    async def _receipt(self, user: str, channel: str) -> Receipt | None:
        if not channel.startswith("dm."):
            return None
        for receipt in await self.store.receipts(channel):
            if receipt.user == user:
                return receipt
        return None

    # -- after each durable write ----------------------------------------------------------

    async def after_write(self, records: Sequence[Record]) -> None:
        for r in records:
            if r.kind:
                continue
            if is_domain_channel(r.channel):
                await self._note(r)
            elif (parent := thread_parent(r.channel)) is not None and is_domain_channel(parent[0]):
                await self._reply_notifications(r, *parent)

    async def _note(self, r: Record) -> None:
        users, everyone = parse_mentions(r.body)
        await self.store.note_message(
            r.channel, r.offset, sender=r.sender, mentions=users, everyone=everyone
        )
        if r.channel.startswith("dm."):
            for user in await self._participants(r.channel):
                if user != r.sender and await self._reads(user, r.channel):
                    await self._notify(user, "dm", r)
            return
        for user in users:
            if user != r.sender and await self._reads(user, r.channel):
                await self._notify(user, "mention", r)

    async def _reply_notifications(self, r: Record, channel: str, parent: int) -> None:
        """The parent's author and everyone who replied *before* this reply (read from
        the thread's log, so the answer does not depend on when the write-behind runs;
        past :data:`_THREAD_SCAN` earlier replies, the summary's first participants)."""
        records = await self.bus.read(channel, parent - 1, 1)
        if not records or records[0].offset != parent:
            return
        earlier = await self.bus.read(r.channel, 0, min(r.offset - 1, _THREAD_SCAN))
        users = [records[0].sender, *(x.sender for x in earlier if not x.kind)]
        if r.offset - 1 > _THREAD_SCAN:
            state = (await self.states.get_states(channel, [parent])).get(parent)
            users += [] if state is None else state.participants
        for user in dict.fromkeys(users):
            if user != r.sender and await self._reads(user, channel):
                await self._notify(user, "reply", r)

    async def _reads(self, user: str, channel: str) -> bool:
        """Whether ``user`` is still a member of ``channel`` *and* of its workspace
        (removing a workspace member leaves its channel memberships behind)."""
        workspace = await self._workspace(channel)
        if workspace is None or await self.domain.get_member(workspace, user) is None:
            return False
        if channel.startswith("dm."):  # a DM's members are its participants, for good
            return user in await self._participants(channel)
        return await self.domain.is_channel_member(channel, user)

    async def _workspace(self, channel: str) -> str | None:
        found = self._workspaces.get(channel)
        if found is None:
            record = await self.domain.get_channel(channel)
            if record is None:
                return None
            found = self._workspaces[channel] = record.workspace
            if len(self._workspaces) > _DM_CACHE:
                self._workspaces.popitem(last=False)
        return found

    async def _participants(self, channel: str) -> tuple[str, ...]:
        users = self._dms.get(channel)
        if users is None:
            conv = await self.domain.get_conversation(channel)
            users = () if conv is None else tuple(conv.participants)
            self._dms[channel] = users
            if len(self._dms) > _DM_CACHE:
                self._dms.popitem(last=False)
        return users

    async def _notify(self, user: str, kind: str, r: Record) -> None:
        note = Notification(
            id=f"{r.channel}:{r.offset}",
            user=user,
            kind=kind,  # type: ignore[arg-type]
            channel=r.channel,
            message_id=r.id,
            offset=r.offset,
            sender=r.sender,
            preview=r.body[:MAX_PREVIEW_CHARS],
            created_ms=r.ts,
            expires_ms=r.ts + NOTIFICATION_TTL_MS,
        )
        if await self.store.notify(user, note):
            try:
                self._spawn(lambda: self._push(note))
            except RuntimeError:  # the node is shutting down: it stays listed over REST
                log.info("notification not pushed: shutting down", extra={"user": user})

    async def _push(self, note: Notification) -> None:
        """Realtime copy of a stored notification; best effort (it is listed over REST)."""
        payload = ev.NotificationPayload(
            id=note.id,
            kind=note.kind,
            target=note.channel,
            message_id=note.message_id,
            message_offset=note.offset,
            preview=note.preview,
        )
        try:
            await self.bus.append(
                user_channel(note.user),
                sender=note.sender,
                cmid=f"~n:{note.id}",
                body=ev.encode_payload(payload),
                kind=ev.NOTIFICATION,
            )
        except GatewayError as exc:
            log.warning("notification not pushed", extra={"user": note.user, "error": str(exc)})


def _now() -> int:
    return time.time_ns() // 1_000_000
