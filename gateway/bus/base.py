"""The bus: one ordered, durable log per channel, and a live tail of it.

Offsets and epochs come from the log, so every gateway node agrees on them. Adapters:
``gateway.bus.memory`` (embedded default: in-process, durable through the message store)
and, later, Redis Streams. Every adapter passes ``tests/contract/test_bus_contract.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import msgspec

from gateway.model import Position, Record

__all__ = ["Appended", "Bus", "BusStatistics", "EphemeralHandler", "RevokeHandler"]

EphemeralHandler = Callable[[str, str], None]  # (kind, user)
RevokeHandler = Callable[[str, str], object]  # (user, channel); the result is ignored


class Appended(msgspec.Struct, frozen=True):
    """Result of :meth:`Bus.append`: the record as stored, and whether it already was."""

    record: Record
    duplicate: bool = False


class BusStatistics(msgspec.Struct):
    appends: int = 0
    duplicates: int = 0
    tails_open: int = 0
    channels: int = 0
    commit_batches: int = 0
    persist_backlog: int = 0  # records accepted but not yet in the message store
    persist_failures: int = 0  # write-behind calls the store failed (retried with backoff)
    persist_refused: int = 0  # channels the store refused (another epoch; retried slowly)
    late_duplicates: int = 0  # records the store left out: their cmid was stored before


class Bus(Protocol):
    """Per-channel logs.

    Guarantees every adapter gives:

    * ``append`` returns only once the record is durable (it survives a restart of this
      process) and has the next offset of the channel (1, 2, 3 ... within an epoch).
    * Idempotency: an append with a ``(channel, sender, cmid)`` already in the log returns
      the original record with ``duplicate=True`` and appends nothing, also when the two
      appends run concurrently. An adapter may bound this to an idempotency window (the
      Redis bus: retries within at least ``idempotency_window`` seconds of the original).
    * If ``append`` raises :class:`gateway.errors.StoreUnavailable`, nothing was appended.
    * A tail yields every record after its start offset exactly once, in offset order,
      with no gaps, in batches, for as long as it is open (records appended before or
      after it was opened alike).
    """

    async def append(
        self,
        channel: str,
        *,
        sender: str,
        cmid: str,
        body: str,
        thread: str | None = None,
        kind: str = "",
        files: tuple[str, ...] = (),
    ) -> Appended:
        """Append durably, or return the record already appended with ``(sender, cmid)``.
        ``kind`` "" is a message; others are events (:mod:`gateway.protocol.events`)."""
        ...

    async def head(self, channel: str) -> Position:
        """Epoch and last offset (0 for an empty log); creates the log if needed."""
        ...

    async def read(self, channel: str, after: int, limit: int) -> Sequence[Record]:
        """Records with ``offset > after``, in order, at most ``limit``."""
        ...

    async def read_by_sender(
        self, channel: str, sender: str, before: int, limit: int
    ) -> Sequence[Record]:
        """Search: ``sender``'s messages below ``before``, newest first, from the message
        store (what is not yet written behind is not found)."""
        ...

    def open_tail(
        self, channel: str, after: int, on_ephemeral: EphemeralHandler | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Sequence[Record]]]:
        """Live records with ``offset > after``, in order, in batches.

        ``on_ephemeral(kind, user)`` is called for ephemeral events that *other nodes*
        sent with :meth:`ephemeral` on this channel while the tail is open.
        """
        ...

    def ephemeral(self, channel: str, kind: str, user: str) -> None:
        """Tell the other nodes' tails of ``channel`` about an ephemeral event (typing).

        Fire and forget: never stored, never replayed, dropped when the bus is busy or
        down. A bus of one process has no other nodes and does nothing.
        """
        ...

    def on_revoke(self, handler: RevokeHandler) -> None:
        """Set this node's handler for revocations made on *other* nodes."""
        ...

    async def revoke(self, user: str, channel: str, ttl: float) -> None:
        """Withdraw ``user``'s access to ``channel`` on every node, for ``ttl`` seconds:
        other nodes' handlers are called at once, and :meth:`revoked` answers True on
        every node until it lapses (also on nodes started later). ``ttl`` 0 records
        nothing and only calls the other nodes' handlers (membership kicks). Raises
        :class:`gateway.errors.StoreUnavailable` if it could not be recorded."""
        ...

    async def revoked(self, user: str, channel: str) -> bool:
        """Whether a revocation of ``user`` on ``channel`` is in force."""
        ...

    async def check(self) -> None:
        """Raise :class:`gateway.errors.StoreUnavailable` if appends cannot succeed now
        (for ``/readyz``)."""
        ...

    def statistics(self) -> BusStatistics: ...

    async def aclose(self) -> None: ...
