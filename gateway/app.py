"""Composition root: the only place that reads settings and picks concrete adapters.

``open_gateway(settings)`` starts a whole node (store, bus, WebSocket data plane, REST
control plane, ticker) in one nursery and yields a :class:`Gateway` handle once it
accepts connections. Leaving the context drains gracefully.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio

from gateway.actors.files import FileService
from gateway.actors.node import Node
from gateway.actors.reads import NotingStore
from gateway.auth import TokenVerifier, load_or_create_dev_secret
from gateway.aws import open_aws
from gateway.bus.base import Bus
from gateway.bus.memory import open_memory_bus
from gateway.bus.redis import open_redis_bus
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.presence.base import Presence
from gateway.presence.memory import open_memory_presence
from gateway.presence.redis import open_redis_presence
from gateway.redis import open_redis
from gateway.routes.http import serve_rest
from gateway.routes.rest import create_rest_app
from gateway.store.base import MessageStore
from gateway.store.blobs_local import open_local_blob_store
from gateway.store.blobs_s3 import open_s3_blob_store
from gateway.store.domain import DomainStore
from gateway.store.domain_sqlite import open_sqlite_domain_store
from gateway.store.files import BlobStore, FileStore, ServedBlobs
from gateway.store.files_sqlite import open_sqlite_file_store
from gateway.store.message_state import MessageStateStore
from gateway.store.message_state_sqlite import open_sqlite_message_state
from gateway.store.read_state import ReadStateStore
from gateway.store.read_state_sqlite import open_sqlite_read_state
from gateway.store.sqlite import open_sqlite_store

__all__ = ["Gateway", "Stores", "open_files", "open_gateway", "open_stores", "serve"]

log = logging.getLogger("gateway.app")


class Gateway:
    """Handle on a running node."""

    def __init__(
        self,
        node: Node,
        settings: Settings,
        ws_port: int,
        http_port: int,
        rest_restarts: list[int],
    ) -> None:
        self.node = node
        self.settings = settings
        self.ws_port = ws_port
        self.http_port = http_port
        host = settings.host if ":" not in settings.host else f"[{settings.host}]"
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        self.ws_url = f"ws://{host}:{ws_port}/ws"
        self.http_url = f"http://{host}:{http_port}"
        self.rest_restarts = rest_restarts  # contained hypercorn failures
        self._drained = False

    async def drain(self) -> int:
        """Graceful shutdown of the data plane; see :meth:`Node.drain`."""
        if self._drained:
            return 0
        self._drained = True
        return await self.node.drain(self.settings.drain_timeout)


def _hs256_secret(settings: Settings) -> str:
    if settings.jwt_secret or settings.jwks_url:
        return settings.jwt_secret
    return load_or_create_dev_secret(settings.data_dir)


def cursor_key(settings: Settings) -> bytes:
    """The key listing cursors are signed with: ``GATEWAY_CURSOR_KEY``, else derived
    from the HS256 secret (the configured one, else the node's dev secret)."""
    if settings.cursor_key:
        return settings.cursor_key.encode()
    base = _hs256_secret(settings) or load_or_create_dev_secret(settings.data_dir)
    return hmac.new(base.encode(), b"gateway listing cursors v1", hashlib.sha256).digest()


def _verifier(settings: Settings) -> TokenVerifier:
    secret = _hs256_secret(settings)
    return TokenVerifier(
        hs256_secret=secret,
        jwks_url=settings.jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        jwks_cache_seconds=settings.jwks_cache_seconds,
        leeway=settings.jwt_leeway,
    )


@asynccontextmanager
async def open_backends(
    settings: Settings, store: MessageStore
) -> AsyncIterator[tuple[Bus, Presence]]:
    """The in-process bus and presence, or both on Redis when ``redis_url`` is set."""
    if not settings.redis_url:
        async with (
            open_memory_bus(store, hot_window=settings.hot_window) as bus,
            open_memory_presence(ttl=settings.presence_ttl) as presence,
        ):
            yield bus, presence
        return
    async with (
        open_redis(settings.redis_url, timeout=settings.redis_timeout) as redis,
        open_redis_bus(
            redis,
            store,
            prefix=settings.redis_prefix,
            hot_window=settings.hot_window,
            events_maxlen=settings.redis_events_maxlen,
            idempotency_window=settings.idempotency_window,
        ) as rbus,
        open_redis_presence(
            redis, prefix=settings.redis_prefix, ttl=settings.presence_ttl
        ) as rpresence,
    ):
        yield rbus, rpresence


@dataclasses.dataclass(frozen=True)
class Stores:
    messages: NotingStore  # channel logs (reporting durable writes to the read service)
    domain: DomainStore  # users, workspaces, channels, memberships
    states: MessageStateStore  # edits, deletes, reactions, thread summaries
    reads: ReadStateStore  # read cursors, unread counts, receipts, notifications


@asynccontextmanager
async def open_stores(settings: Settings) -> AsyncIterator[Stores]:
    """The stores in ``settings.data_dir`` (created if need be): ``messages.sqlite3``,
    ``domain.sqlite3`` and ``message-state.sqlite3``."""
    os.makedirs(settings.data_dir, exist_ok=True)

    def at(name: str) -> str:
        return os.path.join(settings.data_dir, name)

    dur, every = settings.sqlite_durability, settings.sqlite_fsync_interval
    async with (
        open_sqlite_store(at("messages.sqlite3"), durability=dur, fsync_interval=every) as store,
        open_sqlite_domain_store(
            at("domain.sqlite3"), cursor_key(settings), durability=dur, fsync_interval=every
        ) as domain,
        open_sqlite_message_state(
            at("message-state.sqlite3"), durability=dur, fsync_interval=every
        ) as states,
        open_sqlite_read_state(
            at("read-state.sqlite3"), cursor_key(settings), durability=dur, fsync_interval=every
        ) as reads,
    ):
        yield Stores(NotingStore(store), domain, states, reads)


def blob_key(settings: Settings) -> bytes:
    """The key local blob URLs are signed with, derived from :func:`cursor_key` (the same
    on every node that shares it)."""
    return hmac.new(cursor_key(settings), b"gateway blob urls v1", hashlib.sha256).digest()


@asynccontextmanager
async def open_file_records(settings: Settings) -> AsyncIterator[FileStore]:
    """File records: ``<data_dir>/files.sqlite3`` (DynamoDB once store selection lands)."""
    path = os.path.join(settings.data_dir, "files.sqlite3")
    dur, every = settings.sqlite_durability, settings.sqlite_fsync_interval
    async with open_sqlite_file_store(path, durability=dur, fsync_interval=every) as records:
        yield records


@asynccontextmanager
async def open_blobs(settings: Settings) -> AsyncIterator[tuple[BlobStore, ServedBlobs | None]]:
    """Blobs in S3 when ``s3_bucket`` is set, else in ``<data_dir>/files`` (served by the
    REST app: the second item)."""
    if not settings.s3_bucket:
        local = open_local_blob_store(os.path.join(settings.data_dir, "files"), blob_key(settings))
        yield local, local
        return
    async with (
        open_aws(settings.aws_endpoint_url or None, settings.aws_region) as aws,
        open_s3_blob_store(aws, settings.s3_bucket) as s3,
    ):
        yield s3, None


@asynccontextmanager
async def open_files(settings: Settings) -> AsyncIterator[FileService]:
    """The file service: records, blobs and the limits of ``settings``."""
    async with open_blobs(settings) as (blobs, served), open_file_records(settings) as records:
        yield FileService(
            records,
            blobs,
            served=served,
            max_bytes=settings.max_file_bytes,
            url_ttl=settings.file_url_ttl,
        )


@asynccontextmanager
async def open_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """Run one gateway node: SQLite + in-process bus by default, Redis Streams if set.

    With Redis, every node must see the same message store (one SQLite file on one
    host here; DynamoDB in production), since any node may write a channel behind.
    """
    os.makedirs(settings.data_dir, exist_ok=True)
    verifier = _verifier(settings)
    async with (
        open_stores(settings) as stores,
        open_files(settings) as files,
        open_backends(settings, stores.messages) as (bus, presence),
        trio.open_nursery() as nursery,
    ):
        metrics = Metrics()
        node = Node(
            settings,
            nursery,
            bus,
            verifier,
            metrics,
            presence=presence,
            domain=stores.domain,
            states=stores.states,
            read_state=stores.reads,
            files=files,
        )
        stores.messages.on_written = node.reads.after_write
        ws_port: int = await nursery.start(node.serve_websocket, settings.host, settings.ws_port)
        restarts: list[int] = []
        app = create_rest_app(node)
        http_port: int = await nursery.start(
            partial(serve_rest, app, settings.host, settings.http_port, restarts=restarts)
        )
        gateway = Gateway(node, settings, ws_port, http_port, restarts)
        nursery.start_soon(node.run_ticker)
        log.info(
            "gateway ready",
            extra={"ws": gateway.ws_url, "http": gateway.http_url, "node": node.node_id},
        )
        try:
            yield gateway
        finally:
            with trio.CancelScope(shield=True):
                left = await gateway.drain()
                if left:
                    log.warning("drain timed out", extra={"connections_left": left})
            nursery.cancel_scope.cancel()
    await verifier.aclose()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then drain within ``settings.drain_timeout``."""
    data_dir = os.path.abspath(settings.data_dir)  # noqa: ASYNC240 - string work only
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_gateway(settings) as gateway:
            print(
                f"gateway: WebSocket {gateway.ws_url}  REST {gateway.http_url}  data {data_dir}",
                flush=True,
            )
            async for signum in signals:
                log.info("signal received; draining", extra={"signal": signum})
                break
            left = await gateway.drain()
            log.info("drained", extra={"connections_left": left})
