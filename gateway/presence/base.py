"""The presence interface: per-device status, aggregated per user, shared by all nodes.

Adapters: ``gateway.presence.memory`` (embedded default, one process) and
``gateway.presence.redis`` (several nodes). Every adapter passes
``tests/contract/test_presence_contract.py``.

Model: a user has zero or more *devices* (one per WebSocket connection, identified by a
connection id unique across nodes). Each device is ``online`` or ``away`` and has a lease:
it counts until ``expires_at`` unless it is refreshed. A node refreshes the leases of its
live devices every ``ttl / 3`` seconds; a node that dies stops refreshing, so its devices
lapse and their users go offline on their own, without anyone announcing it.

A user's aggregate status: ``online`` if any unexpired device is online, else ``away`` if
any unexpired device is away, else ``offline``. ``last_seen`` is the time (ms since the
Unix epoch) the user was last known connected: now while any device counts, else when the
last device left (or lapsed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import msgspec

__all__ = ["DeviceStatus", "Presence", "PresenceState", "Status", "WatchHandler"]

Status = Literal["online", "away", "offline"]
DeviceStatus = Literal["online", "away"]


class PresenceState(msgspec.Struct, frozen=True):
    user: str
    status: Status
    last_seen: int  # ms since the Unix epoch; 0 if never seen


WatchHandler = Callable[[PresenceState], None]


class Presence(Protocol):
    """Presence shared by the nodes of one deployment.

    Guarantees every adapter gives:

    * ``set_device`` / ``remove_device`` are visible to ``get`` on every node as soon as
      they return, and return the user's new aggregate.
    * The adapter renews, every ``ttl / 3`` seconds, the lease of every device this node
      set and has not removed. A device whose lease is not renewed for ``ttl`` seconds
      (its node died) no longer counts, so its user may turn offline by itself.
    * After ``on_change(handler)``, ``handler(state)`` is called on this node when the
      aggregate (status, or last_seen when turning offline) of a *watched* user changes:
      by ``set_device``/``remove_device`` on any node within about a second, by a lapse
      within about ``ttl`` seconds. Changes of one user arrive in order; an unchanged
      aggregate is not reported. ``watch``/``unwatch`` are idempotent set operations (the
      node keeps its own reference counts).
    * Closing normally (``aclose``, or leaving the ``open_*`` context without an
      exception) removes this node's devices; a cancelled, failed or killed node leaves
      them to lapse.

    Details callers rely on: reports may be coalesced (after a resubscription only the
    latest state is reported, in order); a lapsed device's user gets ``last_seen`` = the
    lease's end; a change of ``last_seen`` while offline is reported; a device whose
    ``set_device`` failed is still renewed (so set once the backend is back) until
    ``remove_device``; the handler must not block or raise, and nothing is reported
    after close. Empty ids raise ``ValueError``; a backend failure raises
    :class:`gateway.errors.StoreUnavailable`.
    """

    ttl: float

    async def set_device(self, user: str, device: str, status: DeviceStatus) -> PresenceState:
        """Add or update one device of ``user`` (``device`` is unique across nodes)."""
        ...

    async def remove_device(self, user: str, device: str) -> PresenceState:
        """The device left (it disconnected)."""
        ...

    async def get(self, users: Sequence[str]) -> list[PresenceState]:
        """Aggregates of ``users``, in the same order."""
        ...

    def on_change(self, handler: WatchHandler) -> None:
        """Set this node's one change handler (the node fans out to its connections)."""
        ...

    async def watch(self, users: Sequence[str]) -> None:
        """Report changes of ``users`` from now on."""
        ...

    async def unwatch(self, users: Sequence[str]) -> None:
        """Stop reporting changes of ``users``."""
        ...

    async def aclose(self) -> None: ...
