"""Thread logs: naming the log that holds the replies to a message (protocol section 21).

A reply to the message at offset ``N`` of channel ``C`` goes to the thread's own log
``C:t<N>``; a message id is ``<epoch>-<offset>``, so the id names the thread too.
"""

from __future__ import annotations

import re
from typing import TypeAlias

from gateway.client._util import check_channel
from gateway.protocol import frames as f

__all__ = ["Threaded", "message_offset", "thread_channel", "thread_of", "thread_parent"]

_THREAD = re.compile(r"^(.+):t([1-9][0-9]{0,15})\Z")
_MAX_OFFSET = 10**16 - 1

Threaded: TypeAlias = (
    f.Ack | f.MessageEvent | f.MessageUpdated | f.MessageDeleted | f.ReactionEvent | f.ThreadEvent
)
"""What :func:`thread_of` accepts: a publish's ack, a message, or an event naming one."""


def thread_parent(channel: str) -> tuple[str, int] | None:
    """``(channel, parent offset)`` if ``channel`` is a thread's log, else None."""
    m = _THREAD.match(channel)
    return None if m is None else (m.group(1), int(m.group(2)))


def message_offset(message_id: str) -> int:
    """The offset of message ``message_id`` (``<epoch>-<offset>``) in its log."""
    _, sep, tail = message_id.rpartition("-")
    if not sep or not tail.isdigit() or not 1 <= int(tail) <= _MAX_OFFSET:
        raise ValueError(f"not a message id: {message_id!r}")
    return int(tail)


def thread_channel(channel: str, parent_offset: int) -> str:
    """The log of the thread under the message at ``parent_offset`` of ``channel``:
    ``<channel>:t<parent_offset>``. Subscribe to it to receive the thread's replies.

    Raises :class:`ValueError` if ``channel`` is itself a thread's log (no threads in
    threads) or too long to take the suffix.
    """
    check_channel(channel)
    if isinstance(parent_offset, bool) or not isinstance(parent_offset, int):
        raise ValueError("parent_offset must be an int")
    if not 1 <= parent_offset <= _MAX_OFFSET:
        raise ValueError(f"parent_offset out of range: {parent_offset}")
    if thread_parent(channel) is not None:
        raise ValueError(f"{channel!r} is a thread's log: threads have no threads")
    log = f"{channel}:t{parent_offset}"
    try:
        check_channel(log)
    except ValueError:
        raise ValueError(f"channel name too long to hold threads: {channel!r}") from None
    return log


def thread_of(item: Threaded) -> str:
    """The thread log that ``item`` belongs to or opens.

    * An item of a thread's log (a reply, its ack, an event on a reply): that log.
    * The :class:`~gateway.protocol.frames.Ack` of a publish, or a
      :class:`~gateway.protocol.frames.MessageEvent`: the thread under that message.
    * A ``thread`` event (or ``message_updated``, ``message_deleted``, ``reaction``): the
      thread under the message it names (``id``).

    The ack of an edit, delete or react names the change's log entry, not the message:
    it raises :class:`ValueError`.
    """
    if thread_parent(item.channel) is not None:
        return item.channel
    if isinstance(item, f.Ack):
        if item.version:
            raise ValueError("the ack of an edit, delete or react does not name a message")
        return thread_channel(item.channel, item.offset)
    if isinstance(item, f.MessageEvent):
        return thread_channel(item.channel, item.offset)
    return thread_channel(item.channel, message_offset(item.id))
