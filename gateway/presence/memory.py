"""In-process presence: the embedded default for a single node.

How it keeps the :class:`gateway.presence.base.Presence` guarantees:

* **One process, one node.** Every device lives in a dict of this process; ``get`` on
  this adapter sees a change as soon as ``set_device``/``remove_device`` return, and no
  other node exists to see it.
* **Leases.** Each device has an expiry (wall clock, ms since the epoch). The background
  task (:meth:`MemoryPresence.run`, started by :func:`open_memory_presence`) renews every
  device every ``ttl / 3`` seconds, then purges lapsed devices of watched users that are
  not offline, reporting them. As every device belongs to this process, a device lapses
  only once that task has stopped (the context was cancelled), like a dead node's.
* **Reports.** The handler is called synchronously, inside the ``set_device`` /
  ``remove_device`` / ``get`` call (or the background check) that changed a watched
  user's aggregate, so changes of one user are reported in order. An unchanged
  aggregate (same status; for ``offline`` also the same ``last_seen``) is not reported.
  A handler that raises is logged and does not break the caller. Nothing is reported
  once the adapter is closing.
* **Closing.** Leaving :func:`open_memory_presence` normally (or :meth:`aclose`) removes
  every device; a cancelled (or failed) context leaves them to lapse, as a killed node
  would.
  Afterwards every call raises :class:`StoreUnavailable`.
* **Memory.** A user without devices keeps its ``last_seen`` for ``seen_retention``
  seconds (30 days), then is forgotten (swept once an hour).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from gateway.errors import StoreUnavailable
from gateway.presence.base import DeviceStatus, PresenceState, Status, WatchHandler

__all__ = ["MemoryPresence", "check_device", "check_users", "open_memory_presence"]

log = logging.getLogger("gateway.presence.memory")

SEEN_RETENTION = 30 * 86400.0  # seconds a user's last_seen outlives its last device


def check_users(users: Sequence[str]) -> None:
    """Raise ValueError unless every user id is a non-empty string."""
    if isinstance(users, str):
        raise ValueError("users must be a sequence of user ids, not one string")
    for user in users:
        if not isinstance(user, str) or not user:
            raise ValueError(f"a user id must be a non-empty string, got {user!r}")


def check_device(user: str, device: str, status: str | None = None) -> None:
    """Raise ValueError for an empty user or device, or a status other than online/away."""
    check_users((user,))
    if not isinstance(device, str) or not device:
        raise ValueError(f"a device id must be a non-empty string, got {device!r}")
    if status is not None and status not in ("online", "away"):
        raise ValueError(f"a device status is 'online' or 'away', got {status!r}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _User:
    __slots__ = ("devices", "reported", "seen")

    def __init__(self) -> None:
        self.devices: dict[str, tuple[DeviceStatus, int]] = {}  # device -> (status, expires)
        self.seen = 0  # when the last device left or lapsed
        self.reported: tuple[Status, int] = ("offline", 0)  # the aggregate as last settled


class MemoryPresence:
    """A :class:`gateway.presence.base.Presence` for one process; run :meth:`run`."""

    def __init__(self, ttl: float = 30.0, *, seen_retention: float = SEEN_RETENTION) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        self.seen_retention = seen_retention
        self._users: dict[str, _User] = {}
        self._watched: set[str] = set()
        self._handler: WatchHandler | None = None
        self._closed = False

    # -- Presence ----------------------------------------------------------------------

    async def set_device(self, user: str, device: str, status: DeviceStatus) -> PresenceState:
        check_device(user, device, status)
        self._check_open()
        now = _now_ms()
        u = self._users.setdefault(user, _User())
        u.devices[device] = (status, now + self._ttl_ms)
        return self._settle(user, u, now)

    async def remove_device(self, user: str, device: str) -> PresenceState:
        check_device(user, device)
        self._check_open()
        now = _now_ms()
        u = self._users.get(user)
        if u is None:
            return PresenceState(user, "offline", 0)
        gone = u.devices.pop(device, None)
        if gone is not None:
            u.seen = max(u.seen, min(gone[1], now))
        return self._settle(user, u, now)

    async def get(self, users: Sequence[str]) -> list[PresenceState]:
        check_users(users)
        self._check_open()
        now = _now_ms()
        return [self._state(user, now) for user in users]

    def on_change(self, handler: WatchHandler) -> None:
        self._handler = handler

    async def watch(self, users: Sequence[str]) -> None:
        check_users(users)
        self._check_open()
        now = _now_ms()
        for user in users:
            self._state(user, now)  # settle first: what happened before is not reported
            self._watched.add(user)

    async def unwatch(self, users: Sequence[str]) -> None:
        check_users(users)
        self._watched.difference_update(users)

    async def aclose(self) -> None:
        """Remove every device (nobody is told: the process is going away)."""
        self._closed = True
        now = _now_ms()
        for u in self._users.values():
            for _, expires in u.devices.values():
                u.seen = max(u.seen, min(expires, now))
            u.devices.clear()
        self._watched.clear()

    # -- the background task -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew leases and report lapses of watched users every ``ttl / 3`` seconds."""
        task_status.started()
        period = self.ttl / 3
        next_sweep = trio.current_time() + 3600.0
        while not self._closed:
            await trio.sleep(period)
            now = _now_ms()
            self._renew(now)  # first: a late tick must not drop this process's live devices
            self._check_lapses(now)
            if trio.current_time() >= next_sweep:
                next_sweep = trio.current_time() + 3600.0
                self._sweep(now)

    def _check_lapses(self, now: int) -> None:
        for user in list(self._watched):
            u = self._users.get(user)
            if u is not None and u.reported[0] != "offline":
                self._settle(user, u, now)

    def _renew(self, now: int) -> None:
        expires = now + self._ttl_ms
        for u in self._users.values():
            for device, (status, _) in list(u.devices.items()):
                u.devices[device] = (status, expires)  # a lapse nobody saw yet is undone

    def _sweep(self, now: int) -> None:
        horizon = now - int(self.seen_retention * 1000)
        for user, u in list(self._users.items()):
            if not u.devices and u.seen < horizon and user not in self._watched:
                del self._users[user]

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("presence is closed")

    def _state(self, user: str, now: int) -> PresenceState:
        u = self._users.get(user)
        if u is None:
            return PresenceState(user, "offline", 0)
        return self._settle(user, u, now)

    def _settle(self, user: str, u: _User, now: int) -> PresenceState:
        """Purge lapsed devices, compute the aggregate, report it if it changed."""
        status: Status = "offline"
        for device, (st, expires) in list(u.devices.items()):
            if expires <= now:
                del u.devices[device]
                u.seen = max(u.seen, expires)
            elif st == "online":
                status = "online"
            elif status == "offline":
                status = "away"
        shown = u.seen if status == "offline" else now
        key = (status, u.seen if status == "offline" else 0)
        if key != u.reported:
            u.reported = key
            if user in self._watched and self._handler is not None and not self._closed:
                try:
                    self._handler(PresenceState(user, status, shown))
                except Exception:
                    log.exception("the presence change handler failed")
        return PresenceState(user, status, shown)


@asynccontextmanager
async def open_memory_presence(
    *, ttl: float = 30.0, seen_retention: float = SEEN_RETENTION
) -> AsyncIterator[MemoryPresence]:
    """Run a :class:`MemoryPresence`; a normal exit removes its devices, any other exit
    (cancelled, or an exception) leaves them to lapse."""
    presence = MemoryPresence(ttl, seen_retention=seen_retention)
    async with trio.open_nursery() as nursery:
        await nursery.start(presence.run)
        try:
            yield presence
        except BaseException:
            presence._closed = True  # cancelled or failed: the devices are left to lapse
            raise
        else:
            await presence.aclose()
        finally:
            nursery.cancel_scope.cancel()
