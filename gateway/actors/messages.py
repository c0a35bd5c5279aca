"""Posting, thread replies, edits, deletes and reactions: validated, stored, fanned out.

Every change a channel's subscribers must see is an entry of the channel's log
(:mod:`gateway.protocol.events`), so ordering, catch-up and resume work for changes as
for messages. The current state of a message (version, tombstone, reaction counts,
thread summary) is kept by the :class:`~gateway.store.message_state.MessageStateStore`,
which is also where the rules that need state are decided atomically (a stale edit, a
second reaction, the distinct-emoji limit). Each change is two writes, state then log,
and both are idempotent by the client's ``cmid``: a client that retries after an error
(the second write failed) completes the change, never applies it twice. A change's log entry
is keyed ``~<kind>:<cmid>``, a namespace client message ids (which never start with
``~``) cannot reach.

Threads: a reply to message ``P`` of channel ``C`` goes to the thread's own log
``C:t<offset of P>`` (subscribing to ``C`` does not deliver replies), and ``C`` gets a
small ``thread`` event with the new reply count.
"""

from __future__ import annotations

import time

from gateway.actors.access import thread_log, thread_parent
from gateway.actors.files import FileService
from gateway.bus import Bus
from gateway.bus.base import Appended
from gateway.domain.errors import Forbidden, InvalidField, NotFound
from gateway.domain.model import Role
from gateway.model import Record
from gateway.protocol import events as ev
from gateway.protocol import frames as f
from gateway.store.domain import DomainStore
from gateway.store.message_state import MessageStateStore

__all__ = ["MAX_REACTION_KINDS", "MessageService"]

MAX_REACTION_KINDS = 50  # distinct emoji on one message
_MANAGERS = (Role.OWNER, Role.ADMIN)


class MessageService:
    def __init__(
        self,
        bus: Bus,
        states: MessageStateStore,
        domain: DomainStore,
        files: FileService | None = None,
    ) -> None:
        self.bus = bus
        self.states = states
        self.domain = domain
        self.files = files

    async def publish(self, user: str, frame: f.Publish) -> Appended:
        thread = thread_parent(frame.channel)
        if thread is not None and frame.thread is None:  # posted in the thread's log
            channel, offset = thread
            parent = await self.find(channel, await self._id_at(channel, offset))
            frame = f.Publish(
                channel=channel,
                cmid=frame.cmid,
                body=frame.body,
                thread=parent.id,
                files=frame.files,
            )
        if frame.thread is None:
            files = await self._attach(user, frame, frame.channel)
            return await self.bus.append(
                frame.channel, sender=user, cmid=frame.cmid, body=frame.body, files=files
            )
        if thread_parent(frame.channel) is not None:
            raise InvalidField("a thread reply cannot start a thread", field="thread")
        parent = await self.find(frame.channel, frame.thread)
        log = thread_log(frame.channel, parent.offset)
        if len(log) > 128:
            raise InvalidField("channel name too long to hold threads", field="thread")
        files = await self._attach(user, frame, log)
        reply = await self.bus.append(
            log, sender=user, cmid=frame.cmid, body=frame.body, thread=parent.id, files=files
        )
        r = reply.record
        state = await self.states.note_reply(
            frame.channel,
            parent.offset,
            author=parent.sender,
            user=r.sender,
            reply_offset=r.offset,
            reply_ms=r.ts,
        )
        summary = ev.ThreadPayload(
            id=parent.id,
            replies=state.replies,
            last_reply_ms=state.last_reply_ms,
            participants=list(state.participants),
        )
        await self.bus.append(
            frame.channel,
            sender=r.sender,
            cmid=f"~t{parent.offset}.{r.offset}",
            body=ev.encode_payload(summary),
            kind=ev.THREAD,
        )
        return reply

    async def change(
        self, user: str, workspace: str | None, frame: f.Edit | f.Delete | f.React
    ) -> tuple[Appended, int]:
        """Apply an edit, delete or reaction by ``user``; ``workspace`` is the channel's
        (None for free channels). Returns the log entry and the message's version."""
        target = await self.find(frame.channel, frame.id)
        op = f"{user}:{frame.cmid}"
        now = int(time.time() * 1000)
        payload: ev.EditPayload | ev.DeletePayload | ev.ReactPayload
        if isinstance(frame, f.Edit):
            if target.sender != user:
                raise Forbidden("only the author may edit a message")
            state = await self.states.edit(
                frame.channel,
                target.offset,
                author=target.sender,
                expected_version=frame.version,
                body=frame.body,
                op=op,
                now_ms=now,
            )
            payload = ev.EditPayload(id=target.id, version=state.version, body=frame.body)
        elif isinstance(frame, f.Delete):
            if target.sender != user and not await self._manages(workspace, user):
                raise Forbidden("only the author or a workspace admin may delete a message")
            _, state = await self.states.delete(
                frame.channel, target.offset, author=target.sender, op=op, now_ms=now
            )
            payload = ev.DeletePayload(id=target.id, version=state.version)
        else:
            _, state = await self.states.react(
                frame.channel,
                target.offset,
                author=target.sender,
                user=user,
                emoji=frame.emoji,
                add=frame.add,
                max_kinds=MAX_REACTION_KINDS,
            )
            payload = ev.ReactPayload(
                id=target.id,
                emoji=frame.emoji,
                added=frame.add,
                count=state.reactions.get(frame.emoji, 0),
            )
        kind = {ev.EditPayload: ev.EDIT, ev.DeletePayload: ev.DELETE}.get(type(payload), ev.REACT)
        appended = await self.bus.append(
            frame.channel,
            sender=user,
            cmid=f"~{kind}:{frame.cmid}",  # its own namespace: never a message's cmid
            body=ev.encode_payload(payload),
            kind=kind,
        )
        return appended, state.version

    async def find(self, channel: str, message_id: str) -> Record:
        """The message ``message_id`` of ``channel`` (not an event), or NotFound."""
        _, sep, tail = message_id.rpartition("-")
        if not sep or not tail.isdigit() or int(tail) < 1:
            raise NotFound("no such message in this channel", reason="message")
        offset = int(tail)
        found = await self.bus.read(channel, offset - 1, 1)
        if not found or found[0].id != message_id or found[0].kind:
            raise NotFound("no such message in this channel", reason="message")
        return found[0]

    async def _attach(self, user: str, frame: f.Publish, log: str) -> tuple[str, ...]:
        """Attach the publish's files to the log it goes to, before it is appended (a
        retry with the same cmid attaches again harmlessly)."""
        if not frame.files:
            return ()
        if self.files is None:
            raise InvalidField("this service takes no attachments", field="files")
        attached = await self.files.attach(user, frame.files, log)
        return tuple(r.id for r in attached)

    async def _id_at(self, channel: str, offset: int) -> str:
        head = await self.bus.head(channel)
        return f"{head.epoch}-{offset}"

    async def _manages(self, workspace: str | None, user: str) -> bool:
        if workspace is None:
            return False
        member = await self.domain.get_member(workspace, user)
        return member is not None and member.role in _MANAGERS
