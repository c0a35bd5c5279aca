"""Routing over one Redis server or a Redis Cluster, reconnects with backoff, scripts,
and sharded pub/sub.

* **Topology.** The first command asks ``CLUSTER SLOTS``; a server without cluster
  support is used as one node. In a cluster each command goes to the master of its key's
  slot (``key=`` names the key; every key of one channel shares a ``{hash tag}``), a
  ``MOVED`` reply updates the slot map and retries, an ``ASK`` reply is followed once.
* **Failures.** A node that cannot be reached is not retried before a jittered,
  exponentially growing backoff (50 ms to ``max_backoff``) has passed; meanwhile its
  commands fail at once with :class:`RedisUnavailable`, so callers answer their clients
  with a retryable error instead of hanging.
* **Scripts** run with ``EVALSHA`` and fall back to ``EVAL`` on ``NOSCRIPT``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio
from redis.crc import key_slot

from gateway.redis.connection import Arg, Connection, RedisError, RedisUnavailable, encode, redirect

__all__ = [
    "RedisClient",
    "RedisError",
    "RedisUnavailable",
    "Script",
    "Subscription",
    "open_redis",
    "parse_url",
]

Address = tuple[str, int]
SLOTS = 16384


def parse_url(url: str) -> Address:
    """``redis://host:port`` (the only form accepted; no auth, TLS or database numbers)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port or IPv6 literal: say which URL
        raise ValueError(f"redis URL {url!r}: {exc}") from None
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"expected redis://host:port, got {url!r}")
    if parts.username or parts.password or parts.path not in ("", "/"):
        raise ValueError(f"redis URL {url!r}: credentials and database numbers are not supported")
    if parts.query or parts.fragment:  # ?db=2, ?password=...: refused, not ignored
        raise ValueError(f"redis URL {url!r}: query parameters are not supported")
    return parts.hostname, port or 6379


class Script:
    """A Lua script, run by its SHA1 once the server knows it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


@dataclass(slots=True)
class RedisStatistics:
    commands: int = 0
    connects: int = 0
    connect_failures: int = 0
    redirects: int = 0


class RedisClient:
    """Commands to one Redis server or cluster; connections live in ``nursery``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        seed: Address,
        *,
        timeout: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        self._nursery = nursery
        self.seed = seed
        self.timeout = timeout
        self._max_backoff = max_backoff
        self._conns: dict[Address, Connection] = {}
        self._opening: dict[Address, trio.Event] = {}
        self._down_until: dict[Address, float] = {}
        self._backoff: dict[Address, float] = {}
        self._down_reason: dict[Address, str] = {}
        self.cluster: bool | None = None  # unknown until the first command
        self._slots: list[Address] = []
        self._topology_lock = trio.Lock()
        self.stats = RedisStatistics()
        self.closed = False

    # -- commands ----------------------------------------------------------------------

    async def execute(self, *args: Arg, key: str | bytes | None = None) -> Any:
        """Run one command on the node of ``key``; an error reply is raised."""
        reply = (await self.pipeline((args,), key=key))[0]
        if isinstance(reply, RedisError):
            raise reply
        return reply

    async def pipeline(
        self, commands: Sequence[Sequence[Arg]], *, key: str | bytes | None = None
    ) -> list[Any]:
        """Run commands whose keys share ``key``'s slot, in one round trip.

        Replies come back in order; error replies are returned as :class:`RedisError`.
        """
        self.stats.commands += len(commands)
        addr = await self.address_of(key)
        for _ in range(4):
            conn = await self.connection(addr)
            replies = await conn.pipeline(commands)
            moved = redirect(replies)
            if moved is None:
                return replies
            kind, slot, addr = moved  # retry there (also when no key= was given)
            self.stats.redirects += 1
            if kind == "ASK":  # one-off: ASKING applies to the next command only
                asked = [i for i, r in enumerate(replies) if redirect([r])]
                conn = await self.connection(addr)
                again = await conn.pipeline([c for i in asked for c in (("ASKING",), commands[i])])
                for i, reply in zip(asked, again[1::2], strict=True):
                    replies[i] = reply
                return replies
            self._slots[slot] = addr
            self._nursery.start_soon(self._refresh_slots, addr)  # it knows the slot is its own
        raise RedisUnavailable("Redis Cluster kept redirecting; the slot map is changing")

    async def run_script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run ``script`` on the node of ``keys[0]`` (all keys must share one slot)."""
        head: list[Arg] = [script.sha, len(keys), *keys, *args]
        try:
            return await self.execute("EVALSHA", *head, key=keys[0])
        except RedisError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.source, *head[1:], key=keys[0])

    # -- topology ----------------------------------------------------------------------

    async def address_of(self, key: str | bytes | None) -> Address:
        """The master serving ``key`` (the seed node for a single server)."""
        if self.cluster is None:
            await self._discover()
        if not self.cluster or key is None:
            return self.seed
        k = key.encode() if isinstance(key, str) else key
        return self._slots[key_slot(k)]

    def masters(self) -> list[Address]:
        """The cluster's masters as last seen (empty for a single server)."""
        return sorted(set(self._slots)) if self.cluster else []

    async def _discover(self) -> None:
        async with self._topology_lock:
            if self.cluster is None:
                await self._load_slots(self.seed, first=True)

    async def _refresh_slots(self, *first: Address) -> None:
        async with self._topology_lock:
            for addr in [*first, self.seed, *sorted(set(self._slots))]:
                try:
                    await self._load_slots(addr, first=False)
                    return
                except (RedisUnavailable, RedisError):
                    continue

    async def _load_slots(self, addr: Address, *, first: bool) -> None:
        conn = await self.connection(addr)
        reply = (await conn.pipeline([("CLUSTER", "SLOTS")]))[0]
        if isinstance(reply, RedisError):
            if first and "cluster support disabled" in str(reply):
                self.cluster = False
                return
            raise reply
        slots: list[Address] = [self.seed] * SLOTS
        for entry in reply:
            start, end, master = entry[0], entry[1], entry[2]
            host = master[0].decode() or addr[0]
            for s in range(start, end + 1):
                slots[s] = (host, int(master[1]))
        self._slots = slots
        self.cluster = True

    # -- connections -------------------------------------------------------------------

    async def connection(self, addr: Address) -> Connection:
        """The open connection to ``addr``, opened if needed (within the backoff rules)."""
        while True:
            if self.closed:
                raise RedisUnavailable("the Redis client is closed")
            conn = self._conns.get(addr)
            if conn is not None and not conn.closed:
                return conn
            opening = self._opening.get(addr)
            if opening is None:
                break
            await opening.wait()
        self.check_backoff(addr)
        event = self._opening[addr] = trio.Event()
        try:
            conn = await Connection.open(self._nursery, addr, timeout=self.timeout)
        except RedisUnavailable as exc:
            self.note_failure(addr, str(exc))
            raise
        finally:
            del self._opening[addr]
            event.set()
        self.note_success(addr)
        self._conns[addr] = conn
        return conn

    def check_backoff(self, addr: Address) -> None:
        """Raise at once while ``addr`` is in its reconnect backoff."""
        if trio.current_time() < self._down_until.get(addr, 0.0):
            raise RedisUnavailable(self._down_reason.get(addr, "Redis is unavailable"))

    def note_failure(self, addr: Address, reason: str) -> None:
        self.stats.connect_failures += 1
        delay = min(self._max_backoff, max(0.05, self._backoff.get(addr, 0.0) * 2))
        self._backoff[addr] = delay
        self._down_until[addr] = trio.current_time() + delay * random.uniform(0.5, 1.0)
        self._down_reason[addr] = reason

    def note_success(self, addr: Address) -> None:
        self.stats.connects += 1
        self._backoff.pop(addr, None)
        self._down_until.pop(addr, None)

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a background task in the client's nursery (it ends with the client)."""
        self._nursery.start_soon(fn, *args)

    async def aclose(self) -> None:
        self.closed = True
        for conn in self._conns.values():
            conn.close("the Redis client is closed")


class Subscription:
    """Sharded pub/sub (``SSUBSCRIBE``) on the nodes that own each shard channel.

    ``on_message(channel, data)`` is called for every message, and
    ``on_subscribed(channel)`` every time a subscription is confirmed: the first time and
    again after each reconnect, so the owner can read what it missed meanwhile
    (pub/sub itself is not durable). Connections are re-made with backoff forever.
    """

    def __init__(
        self,
        client: RedisClient,
        on_message: Callable[[str, bytes], None],
        on_subscribed: Callable[[str], None],
    ) -> None:
        self._client = client
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._wanted: set[str] = set()
        self._nodes: dict[Address, _SubNode] = {}

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._wanted)

    async def subscribe(self, channel: str) -> None:
        """Subscribe (idempotent); returns at once, confirmation comes by callback."""
        self._wanted.add(channel)
        try:
            addr = await self._client.address_of(channel)
        except (RedisUnavailable, RedisError):
            addr = self._client.seed  # unknown topology: the node task re-routes
        self._node(addr).want(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        for node in self._nodes.values():
            node.drop(channel)

    def _node(self, addr: Address) -> _SubNode:
        node = self._nodes.get(addr)
        if node is None:
            node = self._nodes[addr] = _SubNode(self, addr)
            self._client.start_soon(node.run)
        return node


class _SubNode:
    """One push-mode connection to one node, re-made with backoff while wanted."""

    def __init__(self, sub: Subscription, addr: Address) -> None:
        self.sub = sub
        self.addr = addr
        self.channels: set[str] = set()
        self.conn: Connection | None = None
        self.wake = trio.Event()
        # Commands go out in the order asked (an unsubscribe then a subscribe of the same
        # channel must reach the server in that order): one queue, one flushing task.
        self._queue: list[tuple[str, str]] = []
        self._flushing = False
        self._unsubscribing: dict[str, int] = {}  # our SUNSUBSCRIBEs not yet answered

    def want(self, channel: str) -> None:
        if channel in self.channels:
            return  # subscribed or on its way: no second SSUBSCRIBE, no second callback
        self.channels.add(channel)
        self._enqueue(("SSUBSCRIBE", channel))
        self.wake.set()

    def drop(self, channel: str) -> None:
        if channel in self.channels:
            self.channels.discard(channel)
            if self._enqueue(("SUNSUBSCRIBE", channel)):
                self._unsubscribing[channel] = self._unsubscribing.get(channel, 0) + 1

    def _enqueue(self, command: tuple[str, str]) -> bool:
        """Queue ``command`` for the live connection; False if there is none (the run
        loop subscribes everything wanted when it connects)."""
        conn = self.conn
        if conn is None or conn.closed:
            return False
        self._queue.append(command)
        if not self._flushing:
            self._flushing = True
            self.sub._client.start_soon(self._flush, conn)
        return True

    async def _flush(self, conn: Connection) -> None:
        try:
            while self._queue and self.conn is conn:
                batch, self._queue = self._queue, []
                await self._send(conn, *batch)
        finally:
            self._flushing = False

    async def _send(self, conn: Connection, *commands: tuple[str, str]) -> None:
        with contextlib.suppress(RedisUnavailable):  # the run loop subscribes again
            await conn.send(b"".join(encode(c) for c in commands))

    def _push(self, reply: Any) -> None:
        moved = redirect([reply])  # MOVED: an SSUBSCRIBE reached a former owner
        if moved is not None and moved[0] == "MOVED":
            _, slot, addr = moved
            if self.sub._client._slots:  # else the topology is still unknown
                self.sub._client._slots[slot] = addr
            for ch in [c for c in self.channels if key_slot(c.encode()) == slot]:
                self._hand_over(ch, addr)
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, channel = reply[0], reply[1].decode()
        if kind == b"sunsubscribe" and self._unsubscribing.get(channel):
            self._unsubscribing[channel] -= 1  # the answer to our own SUNSUBSCRIBE
            if not self._unsubscribing[channel]:
                del self._unsubscribing[channel]
            return
        if channel not in self.channels:
            return  # unsubscribed, or handed to another node, meanwhile
        if kind == b"smessage":
            self.sub._on_message(channel, reply[2])
        elif kind == b"ssubscribe":
            self.sub._on_subscribed(channel)
        elif kind == b"sunsubscribe" and self.sub._client.cluster:  # unasked: slot moved
            self.sub._client.start_soon(self._moved, channel)

    async def _moved(self, channel: str) -> None:
        """Subscribe ``channel`` where its slot lives now (a stale map gets a MOVED)."""
        await self.sub._client._refresh_slots()
        if channel in self.channels:
            self._hand_over(channel, await self.sub._client.address_of(channel))

    def _hand_over(self, channel: str, addr: Address) -> None:
        self.channels.discard(channel)
        self.sub._node(addr).want(channel)  # this node again, if the map says so

    async def run(self) -> None:
        client = self.sub._client
        while not client.closed:
            if not self.channels:
                self.wake = trio.Event()
                await self.wake.wait()
                continue
            try:
                client.check_backoff(self.addr)
                conn = await Connection.open(
                    client._nursery, self.addr, timeout=client.timeout, on_push=self._push
                )
            except RedisUnavailable as exc:
                client.note_failure(self.addr, str(exc))
                await trio.sleep(max(0.0, client._down_until[self.addr] - trio.current_time()))
                continue
            client.note_success(self.addr)
            self.conn = conn
            self._queue.clear()
            self._unsubscribing.clear()
            if client.cluster:
                await self._reroute()
            if self.channels:
                await self._send(conn, *[("SSUBSCRIBE", ch) for ch in sorted(self.channels)])
            await conn.ended.wait()
            self.conn = None

    async def _reroute(self) -> None:
        """After a reconnect in a cluster, hand channels whose slot moved to their node."""
        client = self.sub._client
        await client._refresh_slots()
        for ch in list(self.channels):
            addr = await client.address_of(ch)
            if addr != self.addr:
                self._hand_over(ch, addr)


@asynccontextmanager
async def open_redis(
    url: str, *, timeout: float = 5.0, max_backoff: float = 2.0
) -> AsyncIterator[RedisClient]:
    """A :class:`RedisClient` for ``redis://host:port``; closed (with its tasks) on exit."""
    seed = parse_url(url)
    async with trio.open_nursery() as nursery:
        client = RedisClient(nursery, seed, timeout=timeout, max_backoff=max_backoff)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
