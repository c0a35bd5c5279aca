"""Domain records shared by the bus, the store, the actors and the protocol (a leaf)."""

from __future__ import annotations

import msgspec

__all__ = ["Position", "Record"]


class Position(msgspec.Struct, frozen=True):
    """A place in a channel's log: the last offset seen, in a given epoch.

    Offsets start at 1 and grow by one per message. The epoch names one incarnation of
    the log; if the log is lost and recreated, the epoch changes and a resume from an
    older epoch is refused instead of being silently wrong.
    """

    epoch: str
    offset: int


class Record(msgspec.Struct, frozen=True, array_like=True):
    """One message in a channel log, as stored and as delivered."""

    channel: str
    offset: int
    epoch: str
    id: str  # server-assigned message id, unique per channel: "<epoch>-<offset>"
    sender: str
    cmid: str  # client message id (idempotency key, per sender and channel)
    body: str
    ts: int  # server time, milliseconds since the Unix epoch
    thread: str | None = None  # parent message id for a thread reply
    # "" for a message; else an event about the log's messages or channel (see
    # gateway.protocol.events), whose ``body`` is its JSON payload
    kind: str = ""
    files: tuple[str, ...] = ()  # attached file ids (gateway.store.files), messages only
