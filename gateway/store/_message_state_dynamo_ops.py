"""DynamoDB operations of the message-state store (validated input, see the store).

Each operation decides in the SQLite adapter's order (author, retry by ``op``, deleted,
version / presence / kinds limit), so both adapters refuse the same way, from the item a
conditional write failed on (``ALL_OLD``) or from a consistent read; see
``docs/data-model.md`` ("MessageStateStore") for the requests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
import trio

from gateway.domain.errors import Conflict, LimitExceeded, StaleVersion
from gateway.errors import StoreUnavailable
from gateway.store import _message_state_dynamo_items as i
from gateway.store._message_state_dynamo_table import MAX_DECISIONS, StateTables
from gateway.store.message_state import MAX_PARTICIPANTS, MessageState

log = logging.getLogger("gateway.store.message_state")

_A = TypeVar("_A")
_B = TypeVar("_B")


def _as_posted(channel: str, offset: int, author: str) -> MessageState:
    return MessageState(channel=channel, offset=offset, author=author)


def _decoded(item: i.Item | None) -> MessageState | None:
    return None if item is None else i.item_state(item)


def _check_author(state: MessageState, author: str) -> None:
    if state.author != author:
        raise Conflict(
            f"message {state.channel}/{state.offset} is not by {author!r}", reason="author"
        )


def _deleted(state: MessageState) -> Conflict:
    return Conflict(f"message {state.channel}/{state.offset} is deleted", reason="deleted")


async def _both(a: Callable[[], Awaitable[_A]], b: Callable[[], Awaitable[_B]]) -> tuple[_A, _B]:
    """``(await a(), await b())``, run concurrently; the first error is raised as is (not
    in an exception group) and cancels the other call."""
    results: list[Any] = [None, None]
    errors: list[Exception] = []

    async def run(index: int, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            results[index] = await call()
        except Exception as exc:
            errors.append(exc)
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 0, a)
        nursery.start_soon(run, 1, b)
    if errors:
        raise errors[0]
    return results[0], results[1]


# -- reads ---------------------------------------------------------------------------------


async def get_states(
    t: StateTables, channel: str, offsets: Sequence[int]
) -> dict[int, MessageState]:
    states = sorted(map(i.item_state, await t.get_states(channel, offsets)), key=_offset)
    return {s.offset: s for s in states}


def _offset(state: MessageState) -> int:
    return state.offset


async def my_reactions(t: StateTables, channel: str, offset: int, user: str) -> frozenset[str]:
    prefix = i.user_prefix(offset, user)
    item, keys = await _both(
        lambda: t.get_state(channel, offset, only="#d"),
        lambda: t.reaction_keys(channel, prefix),
    )
    if item is not None and item["deleted"]["BOOL"]:
        return frozenset()  # reaction items a failed sweep left behind
    return frozenset(rk[len(prefix) :] for rk in keys)


# -- edits and deletes ---------------------------------------------------------------------


async def edit(
    t: StateTables,
    channel: str,
    offset: int,
    *,
    author: str,
    expected_version: int,
    body: str,
    op: str,
    now_ms: int,
) -> MessageState:
    params = i.edit_update(
        author=author, expected=expected_version, body=body, op=op, now_ms=now_ms
    )
    for _ in range(MAX_DECISIONS):
        applied, item = await t.update(channel, offset, params)
        if applied:
            assert item is not None
            return i.item_state(item)
        state = _decoded(item)
        if state is None:  # absent: version 1, and expected_version is not
            raise StaleVersion(
                f"message {channel}/{offset} is at version 1, not {expected_version}", current=1
            )
        _check_author(state, author)
        if state.op == op:
            return state  # a retry of the edit (or delete) that was applied last
        if state.deleted:
            raise _deleted(state)
        if state.version != expected_version:
            raise StaleVersion(
                f"message {channel}/{offset} is at version {state.version}, not {expected_version}",
                current=state.version,
            )
    raise t.gave_up("edit")


async def delete(
    t: StateTables, channel: str, offset: int, *, author: str, op: str, now_ms: int
) -> tuple[bool, MessageState]:
    params = i.delete_update(author=author, op=op, now_ms=now_ms)
    for _ in range(MAX_DECISIONS):
        applied, item = await t.update(channel, offset, params)
        state = _decoded(item)
        if state is None:
            continue  # cannot fail on an absent item: ask again
        if not applied:
            _check_author(state, author)
            if not state.deleted:
                continue
        # Deleted (now or before): sweep the reaction items, also on a repeated delete, so
        # that a retry finishes a sweep that failed.
        await _sweep(t, channel, offset)
        return applied, state
    raise t.gave_up("delete")


async def _sweep(t: StateTables, channel: str, offset: int) -> None:
    """Delete the reaction items of a deleted message. A failure is logged, not raised:
    the tombstone is stored, and :func:`my_reactions` hides what is left."""
    try:
        keys = await t.reaction_keys(channel, i.message_prefix(offset))
        if keys:
            await t.delete_reactions(channel, keys)
    except StoreUnavailable as exc:
        t.sweeps_failed += 1
        log.warning(
            "reaction items of deleted message %s/%s not swept: %s",
            channel,
            offset,
            exc,
            extra={"channel": channel, "offset": offset},
        )


# -- reactions -----------------------------------------------------------------------------


class _Unknown:
    pass


_UNKNOWN = _Unknown()


async def react(
    t: StateTables,
    channel: str,
    offset: int,
    *,
    author: str,
    user: str,
    emoji: str,
    add: bool,
    max_kinds: int,
) -> tuple[bool, MessageState]:
    """One transaction of the reaction item and the state item. The first one assumes a
    stored item (no read before it); a cancelled one tells what is stored (``ALL_OLD``, or
    a read), and the next is decided from that. A successful one is followed by a read, so
    the state returned holds this change and any that landed since (counts are never
    older than the write)."""
    rkey = i.reaction_key(channel, offset, user, emoji)
    skey = i.state_key(channel, offset)
    known: MessageState | _Unknown | None = _UNKNOWN
    for _ in range(MAX_DECISIONS):
        count = 1  # the count guessed for a removal before anything is known
        new: MessageState | None = None
        if not isinstance(known, _Unknown):
            state = known or _as_posted(channel, offset, author)
            count = state.reactions.get(emoji, 0)
            if not add and count == 0:
                return False, state  # no such reaction (a reaction item implies a count)
            if add and count == 0 and len(state.reactions) >= max_kinds:
                raise LimitExceeded(
                    f"message {channel}/{offset} has {len(state.reactions)} kinds of"
                    f" reactions (at most {max_kinds})",
                    reason="reactions",
                )
            if known is None and add:
                new = msgspec.structs.replace(state, reactions={emoji: 1})
        if add:
            reaction = i.put_absent(t.reactions, rkey, "#rk")
        else:
            reaction = i.delete_present(t.reactions, rkey)
        if new is not None:
            counter = i.put_absent(t.state, i.state_item(new), "#c")
        else:
            counter = i.count_update(
                t.state, skey, author=author, emoji=emoji, add=add, max_kinds=max_kinds, count=count
            )
        cancelled = await t.transact([reaction, counter])
        if cancelled is None:
            if new is not None:
                return True, new  # the item this transaction created
            stored = _decoded(await t.get_state(channel, offset))
            return True, stored or _as_posted(channel, offset, author)
        item = cancelled.item(1) if cancelled.failed(1) else await t.get_state(channel, offset)
        known = _decoded(item)
        state = known or _as_posted(channel, offset, author)
        _check_author(state, author)
        if state.deleted:
            raise _deleted(state)
        if cancelled.failed(0):
            return False, state  # already there (adding) or already gone (removing)
    raise t.gave_up("react")


# -- thread summaries ----------------------------------------------------------------------


async def note_reply(
    t: StateTables,
    channel: str,
    parent: int,
    *,
    author: str,
    user: str,
    reply_offset: int,
    reply_ms: int,
) -> MessageState:
    """Read, decide, write on condition; a failed condition hands back the stored item
    (``ALL_OLD``), from which the next round decides without another read."""
    item = await t.get_state(channel, parent)
    for _ in range(MAX_DECISIONS):
        stored = _decoded(item)
        state = stored or _as_posted(channel, parent, author)
        _check_author(state, author)
        participants = state.participants
        append = user not in participants and len(participants) < MAX_PARTICIPANTS
        new = msgspec.structs.replace(
            state,
            replies=max(state.replies, reply_offset),
            last_reply_ms=max(state.last_reply_ms, reply_ms),
            participants=(*participants, user) if append else participants,
        )
        if stored is not None and new == stored:
            return stored  # a repeat (or an older reply): nothing to write
        if stored is None:
            applied, item = await t.put_state(i.state_item(new))
            if applied:
                return new
        else:
            params = i.reply_update(author=author, new=new, user=user, append=append)
            applied, item = await t.update(channel, parent, params)
            if applied:
                assert item is not None
                return i.item_state(item)
    raise t.gave_up("note_reply")
