"""Prometheus metrics of one gateway node (one registry per node, so tests can run many).

Hot-path rule: counters are bumped once per fan-out (``inc(n)``), never once per recipient.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

    def observe_bus(self, tails: int, backlog: int) -> None:
        """Refresh the bus gauges (called at scrape time)."""
        self.bus_tails.set(tails)
        self.bus_backlog.set(backlog)

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data
