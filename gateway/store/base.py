"""The message store: durable history, shaped for DynamoDB's access patterns.

Each method is one key lookup or one range query on a key:

* ``(channel) -> epoch, head``                 : one item per channel log
* ``(channel, offset range)``                  : messages, partition=channel, sort=offset
* ``(channel, sender#cmid)``                    : idempotency index
* ``(channel#sender, offset range)``            : search by author (a sparse index)

Adapters: ``gateway.store.sqlite`` (embedded default) and ``gateway.store.dynamodb``. Every
adapter passes ``tests/contract/test_store_contract.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from gateway.model import Position, Record

__all__ = ["MessageStore", "StoreStatistics", "WriteBehindResult"]


class StoreStatistics(msgspec.Struct):
    writes: int = 0
    batches: int = 0
    reads: int = 0


class WriteBehindResult(msgspec.Struct):
    """What :meth:`MessageStore.write_behind` did besides storing records.

    ``duplicates``: late duplicates, not stored (their sender and cmid are stored at
    another offset; their own offset stays empty in the store). ``refused``: channel ->
    why none of its records was stored (the log is in another epoch); a retry is refused
    the same way until someone resolves it.
    """

    duplicates: list[Record] = msgspec.field(default_factory=list)
    refused: dict[str, str] = msgspec.field(default_factory=dict)


class MessageStore(Protocol):
    """Durable message history.

    Guarantees every adapter gives:

    * ``write`` is atomic per call and idempotent per ``(channel, offset)``: writing a
      record that is already stored changes nothing; on error nothing of the call is
      stored. It raises :class:`gateway.errors.StoreUnavailable` when it cannot write.
    * ``open_log`` returns the same epoch every time for a channel until the store loses
      that channel's data; a fresh store creates a new random epoch.
    * Reads return records in ascending offset order.
    """

    async def open_log(self, channel: str) -> Position:
        """Epoch and highest stored offset (0 if none); creates the epoch if needed."""
        ...

    async def write(self, records: Sequence[Record]) -> None: ...

    async def write_behind(self, records: Sequence[Record]) -> WriteBehindResult:
        """Store records copied from a bus's log (the Redis bus's write-behind).

        Unlike ``write``: not atomic (an error may leave some records stored; retrying
        the same call completes it), idempotent per ``(channel, offset)``, and never
        refuses a whole call for one channel: a channel whose log is in another epoch is
        left out and named in ``refused``; a record whose sender and cmid are already
        stored at another offset (a retry the bus's idempotency window no longer knew) is
        left out and returned in ``duplicates``, so a client message id never makes two
        items. Once it returns, ``open_log`` reports a head at least as high as every
        stored record's offset. Raises :class:`gateway.errors.StoreUnavailable` when it
        cannot write (retryable)."""
        ...

    async def read(self, channel: str, after: int, limit: int) -> Sequence[Record]:
        """Records with ``offset > after``, ascending, at most ``limit``."""
        ...

    async def read_before(self, channel: str, before: int, limit: int) -> Sequence[Record]:
        """The ``limit`` records just below ``before`` (newest page), ascending."""
        ...

    async def find_cmid(self, channel: str, sender: str, cmid: str) -> Record | None: ...

    async def read_by_sender(
        self, channel: str, sender: str, before: int, limit: int
    ) -> Sequence[Record]:
        """Search: the messages (``kind == ""``, not events) ``sender`` posted in ``channel``
        below offset ``before``, newest first, at most ``limit``. May lag ``write`` by a
        moment (DynamoDB serves it from a GSI, which is eventually consistent)."""
        ...

    def statistics(self) -> StoreStatistics: ...

    async def aclose(self) -> None: ...
