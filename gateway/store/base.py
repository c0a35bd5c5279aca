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

__all__ = ["MessageStore", "StoreStatistics"]


class StoreStatistics(msgspec.Struct):
    writes: int = 0
    batches: int = 0
    reads: int = 0


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
