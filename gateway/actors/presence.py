"""The node's side of presence: the devices of local connections, and who follows whom.

Every authenticated connection is one device of its user (``online`` until it says
``away`` or leaves). A connection follows users with ``presence_watch``; the hub keeps
one reference-counted interest set for the node, asks the presence adapter to watch the
union, and fans each change out to the local followers. Presence is best effort: when
its backend is down, connections keep working and no presence is reported.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import trio

from gateway.errors import GatewayError
from gateway.presence.base import Presence, PresenceState
from gateway.protocol import build_frame
from gateway.protocol import frames as f
from gateway.protocol.codec import Codec

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence

__all__ = ["Follower", "PresenceHub"]

log = logging.getLogger("gateway.presence")


class Follower(Protocol):
    """What the hub needs of a connection."""

    codec: Codec

    @property
    def device(self) -> str: ...

    def send_frame(self, data: bytes) -> None: ...

    def send(self, frame: f.ServerFrame) -> None: ...


def _event(state: PresenceState) -> f.PresenceEvent:
    return f.PresenceEvent(user=state.user, status=state.status, last_seen=state.last_seen)


class PresenceHub:
    def __init__(self, presence: Presence) -> None:
        self.presence = presence
        presence.on_change(self._changed)
        self._followers: dict[str, set[Follower]] = {}
        self._following: dict[Follower, tuple[str, ...]] = {}
        self._devices: dict[Follower, str] = {}  # follower -> user, while online/away
        self._lock = trio.Lock()  # watch/unwatch of the shared set, in call order
        self._changes: dict[str, int] = {}  # per followed user: changes reported so far
        self.failures = 0

    async def online(self, conn: Follower, user: str) -> None:
        """``conn`` authenticated as ``user``: one more online device."""
        self._devices[conn] = user
        await self._call(self.presence.set_device(user, conn.device, "online"))

    async def set_status(self, conn: Follower, status: str) -> None:
        user = self._devices.get(conn)
        if user is not None and status in ("online", "away"):
            await self._call(
                self.presence.set_device(
                    user, conn.device, "online" if status == "online" else "away"
                )
            )

    async def follow(self, conn: Follower, users: Sequence[str]) -> None:
        """Replace what ``conn`` follows; send it the current state of each user."""
        old = self._following.get(conn, ())
        new = tuple(users)
        added: list[str] = []
        removed: list[str] = []
        for user in old:
            if user not in new:
                followers = self._followers.get(user)
                if followers is not None:
                    followers.discard(conn)
                    if not followers:
                        del self._followers[user]
                        self._changes.pop(user, None)
                        removed.append(user)
        for user in new:
            followers = self._followers.setdefault(user, set())
            if not followers:
                added.append(user)
            followers.add(conn)
        if new:
            self._following[conn] = new
        else:
            self._following.pop(conn, None)
        async with self._lock:
            if removed:
                await self._call(self.presence.unwatch(removed))
            if added:
                await self._call(self.presence.watch(added))
        if new:
            seen = {user: self._changes.get(user, 0) for user in new}
            try:
                states = await self.presence.get(new)
            except GatewayError as exc:
                self._failed(exc)
                return
            for state in states:
                # A change reported while get() ran is newer than what get() read.
                if self._changes.get(state.user, 0) == seen[state.user]:
                    conn.send(_event(state))

    async def gone(self, conn: Follower) -> None:
        """``conn`` closed: stop its follows, remove its device."""
        await self.follow(conn, ())
        user = self._devices.pop(conn, None)
        if user is not None:
            await self._call(self.presence.remove_device(user, conn.device))

    def _changed(self, state: PresenceState) -> None:
        followers = self._followers.get(state.user)
        if followers:
            self._changes[state.user] = self._changes.get(state.user, 0) + 1
            event = _event(state)
            frames: dict[Codec, bytes] = {}  # encoded once per codec, not per follower
            for conn in list(followers):
                data = frames.get(conn.codec)
                if data is None:
                    data = frames[conn.codec] = build_frame(
                        conn.codec.encode(event), conn.codec.binary
                    )
                conn.send_frame(data)

    async def _call(self, op: Awaitable[object]) -> None:
        try:
            await op
        except GatewayError as exc:
            self._failed(exc)

    def _failed(self, exc: GatewayError) -> None:
        self.failures += 1
        log.warning("presence unavailable", extra={"error": exc.message})
