"""Registry and supervisor of channel actors.

Starts a channel actor on first use (concurrent first uses share one start), reaps it
after ``channel_idle_timeout`` without subscribers, and contains a crash: the failure is
logged and counted, the actor's subscribers are told to resubscribe, the node goes on.
"""

from __future__ import annotations

import logging
import time

import trio

from gateway.actors.channel import ChannelActor
from gateway.bus import Bus
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics

__all__ = ["ChannelRegistry"]

log = logging.getLogger("gateway.registry")


class ChannelRegistry:
    def __init__(
        self,
        nursery: trio.Nursery,
        bus: Bus,
        metrics: Metrics,
        *,
        hot_window: int,
        idle_timeout: float,
    ) -> None:
        self._nursery = nursery
        self._bus = bus
        self._metrics = metrics
        self._hot_window = hot_window
        self._idle_timeout = idle_timeout
        self._actors: dict[str, ChannelActor] = {}
        self._starting: dict[str, trio.Event] = {}

    def get(self, channel: str) -> ChannelActor | None:
        return self._actors.get(channel)

    def __len__(self) -> int:
        return len(self._actors)

    def actors(self) -> list[ChannelActor]:
        return list(self._actors.values())

    async def acquire(self, channel: str) -> ChannelActor:
        """The running actor of ``channel``, started if needed. Raises StoreUnavailable."""
        while True:
            actor = self._actors.get(channel)
            if actor is not None and not actor.stopping:
                return actor
            pending = self._starting.get(channel)
            if pending is not None:
                await pending.wait()
                continue
            event = self._starting[channel] = trio.Event()
            try:
                actor = ChannelActor(channel, self._bus, self._metrics, hot_window=self._hot_window)
                try:
                    started: ChannelActor = await self._nursery.start(self._supervise, actor)
                except Exception as exc:
                    log.exception("channel actor failed to start", extra={"channel": channel})
                    raise StoreUnavailable(f"channel {channel} is unavailable: {exc}") from exc
                self._actors[channel] = started
                self._metrics.channels.set(len(self._actors))
                return started
            finally:
                del self._starting[channel]
                event.set()

    async def _supervise(
        self, actor: ChannelActor, *, task_status: trio.TaskStatus[ChannelActor]
    ) -> None:
        started = False
        try:
            async with trio.open_nursery() as inner:
                await inner.start(actor.run)
                started = True
                task_status.started(actor)
        except Exception:
            if not started:
                raise
            self._metrics.actor_failures.inc()
            log.exception(
                "channel actor crashed; subscribers told to resubscribe",
                extra={"channel": actor.name},
            )
            actor.fail_subscribers()
        finally:
            if self._actors.get(actor.name) is actor:
                del self._actors[actor.name]
            self._metrics.channels.set(len(self._actors))

    def reap_idle(self) -> int:
        """Stop actors that had no subscribers for ``idle_timeout``. Returns how many."""
        now = time.monotonic()
        stopped = 0
        for actor in list(self._actors.values()):
            if (
                not actor.subscriber_count
                and not actor.attaching
                and now - actor.empty_since > self._idle_timeout
            ):
                del self._actors[actor.name]
                actor.stop()
                stopped += 1
        if stopped:
            self._metrics.channels.set(len(self._actors))
        return stopped
