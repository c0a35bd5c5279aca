"""Prometheus metrics of one gateway node (one registry per node, so tests can run many).

Hot-path rule: counters are bumped once per fan-out (``inc(n)``), never once per recipient.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.bus.base import BusStatistics

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("gateway_connections", "Open WebSocket connections", registry=r)
        self.channels = Gauge("gateway_channel_actors", "Running channel actors", registry=r)
        self.frames_in = Counter(
            "gateway_frames_in", "WebSocket data messages received", registry=r
        )
        self.frames_out = Counter(
            "gateway_frames_out", "WebSocket data messages sent or queued", registry=r
        )
        self.published = Counter("gateway_messages_published", "Messages appended", registry=r)
        self.duplicates = Counter(
            "gateway_publish_duplicates", "Publishes deduplicated by cmid", registry=r
        )
        self.fanout_latency = Histogram(
            "gateway_fanout_latency_seconds",
            "Time from a message's commit to its frames written or queued to every local "
            "subscriber",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "gateway_event_loop_lag_seconds",
            "How late the node's once-a-second ticker woke up: time the event loop spent on "
            "other work it could not interrupt (one observation per second)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.drops = Counter("gateway_drops", "Frames or connections shed", ["reason"], registry=r)
        self.errors = Counter("gateway_errors", "Error frames sent, by code", ["code"], registry=r)
        self.closes = Counter(
            "gateway_closes",
            "Connections closed by the server, by close code",
            ["code"],
            registry=r,
        )
        self.actor_failures = Counter(
            "gateway_actor_failures",
            "Channel actors that crashed and were contained",
            registry=r,
        )
        self.auth_failures = Counter("gateway_auth_failures", "Refused tokens", registry=r)
        self.bus_tails = Gauge(
            "gateway_bus_tails", "Channel logs this node is reading (open tails)", registry=r
        )
        self.bus_backlog = Gauge(
            "gateway_bus_persist_backlog",
            "Accepted messages not yet written to the message store (Redis bus)",
            registry=r,
        )

        self.bus_persist_failures = Counter(
            "gateway_bus_persist_failures",
            "Write-behind calls the message store failed (retried with backoff)",
            registry=r,
        )
        self.bus_persist_refused = Counter(
            "gateway_bus_persist_refused",
            "Write-behind refusals of a channel by the message store (another epoch)",
            registry=r,
        )
        self.bus_late_duplicates = Counter(
            "gateway_bus_late_duplicates",
            "Records the write-behind left out: their client message id was stored before",
            registry=r,
        )
        self._bus_seen = BusStatistics()

    def observe_bus(self, stats: BusStatistics) -> None:
        """Refresh the bus gauges and counters from its statistics (at scrape time)."""
        self.bus_tails.set(stats.tails_open)
        self.bus_backlog.set(stats.persist_backlog)
        seen = self._bus_seen
        self.bus_persist_failures.inc(max(0, stats.persist_failures - seen.persist_failures))
        self.bus_persist_refused.inc(max(0, stats.persist_refused - seen.persist_refused))
        self.bus_late_duplicates.inc(max(0, stats.late_duplicates - seen.late_duplicates))
        self._bus_seen = stats

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data
