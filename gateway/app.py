"""Composition root: the only place that reads settings and picks concrete adapters.

``open_gateway(settings)`` starts a whole node (store, bus, WebSocket data plane, REST
control plane, ticker) in one nursery and yields a :class:`Gateway` handle once it
accepts connections. Leaving the context drains gracefully.

Stores: SQLite files in ``data_dir`` (``store="sqlite"``), or DynamoDB tables under
``dynamodb_prefix`` (``store="dynamodb"``) on one :class:`gateway.aws.Aws` bridge shared
with the S3 blob store. Application code never creates infrastructure: before opening
anything on AWS the node checks every table (and the bucket) and refuses to start with
:class:`InfrastructureMissing` naming all that is missing; deployment and test fixtures
create them with :func:`gateway.store.tables.create_tables` / ``create_bucket``.
:func:`check_infrastructure` runs the same checks (and a few more) for ``gateway check``.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import hmac
import logging
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

import trio

from gateway.actors.files import FileService
from gateway.actors.node import Node
from gateway.actors.reads import NotingStore
from gateway.auth import TokenVerifier, load_or_create_dev_secret
from gateway.aws import Aws, AwsError, AwsUnavailable, open_aws
from gateway.bus.base import Bus
from gateway.bus.memory import open_memory_bus
from gateway.bus.redis import open_redis_bus
from gateway.config import Settings
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.presence.base import Presence
from gateway.presence.memory import open_memory_presence
from gateway.presence.redis import open_redis_presence
from gateway.redis import RedisError, RedisUnavailable, open_redis
from gateway.routes.http import serve_rest
from gateway.routes.rest import create_rest_app
from gateway.store.base import MessageStore
from gateway.store.blobs_local import open_local_blob_store
from gateway.store.blobs_s3 import open_s3_blob_store
from gateway.store.domain import DomainStore
from gateway.store.domain_dynamodb import open_dynamodb_domain_store
from gateway.store.domain_sqlite import open_sqlite_domain_store
from gateway.store.dynamodb import open_dynamo_store
from gateway.store.files import BlobStore, FileStore, ServedBlobs
from gateway.store.files_dynamodb import open_dynamodb_file_store
from gateway.store.files_sqlite import open_sqlite_file_store
from gateway.store.message_state import MessageStateStore
from gateway.store.message_state_dynamodb import open_dynamodb_message_state
from gateway.store.message_state_sqlite import open_sqlite_message_state
from gateway.store.read_state import ReadStateStore
from gateway.store.read_state_dynamodb import open_dynamodb_read_state
from gateway.store.read_state_sqlite import open_sqlite_read_state
from gateway.store.sqlite import open_sqlite_store
from gateway.store.tables import TABLES, check_bucket, check_tables

__all__ = [
    "Check",
    "Gateway",
    "InfrastructureMissing",
    "Stores",
    "check_infrastructure",
    "open_files",
    "open_gateway",
    "open_node_aws",
    "open_stores",
    "require_infrastructure",
    "serve",
    "uses_aws",
]

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
            persist_interval=settings.persist_interval,
        ) as rbus,
        open_redis_presence(
            redis, prefix=settings.redis_prefix, ttl=settings.presence_ttl
        ) as rpresence,
    ):
        yield rbus, rpresence


# -- infrastructure: checked, never created -------------------------------------------------


class InfrastructureMissing(StoreUnavailable):
    """Tables or the bucket the settings name are missing or not as defined in
    :mod:`gateway.store.tables`. ``problems`` has one entry per thing wrong, each naming
    it (``"gateway-messages: missing"``, ``"bucket chat-files: missing"``)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(
            "infrastructure missing or not as defined (deployment creates it, see "
            "docs/operations.md, Running on AWS): " + "; ".join(self.problems)
        )


@dataclasses.dataclass(frozen=True)
class Check:
    """One resource checked by :func:`check_infrastructure`: ``problems`` is empty if it
    is usable."""

    resource: str
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        return f"{self.resource}: ok" if self.ok else f"{self.resource}: {'; '.join(self.problems)}"


def uses_aws(settings: Settings) -> bool:
    """Whether ``settings`` put anything on AWS (DynamoDB tables or the S3 bucket)."""
    return settings.store == "dynamodb" or bool(settings.s3_bucket)


@asynccontextmanager
async def open_node_aws(settings: Settings) -> AsyncIterator[Aws | None]:
    """The node's one AWS bridge (``aws_region``, ``aws_endpoint_url``; credentials from
    botocore's chain), or None when :func:`uses_aws` is false."""
    if not uses_aws(settings):
        yield None
        return
    async with open_aws(settings.aws_endpoint_url or None, settings.aws_region) as aws:
        yield aws


@asynccontextmanager
async def _aws_for(settings: Settings, aws: Aws | None) -> AsyncIterator[Aws]:
    """``aws`` if given, else a bridge of its own for as long as the context lasts."""
    if aws is not None:
        yield aws
        return
    async with open_aws(settings.aws_endpoint_url or None, settings.aws_region) as own:
        yield own


def _unchecked(resource: str, why: AwsUnavailable) -> Check:
    return Check(resource, (f"not checked: AWS unavailable ({why.aws_code})",))


async def _table_checks(
    aws: Aws, settings: Settings, *, ttl: bool, report_unavailable: bool
) -> list[Check]:
    """One :class:`Check` per table of :data:`gateway.store.tables.TABLES`. If AWS is
    unavailable: raises, or (``report_unavailable``) says so and stops asking."""
    checks: list[Check] = []
    down: AwsUnavailable | None = None
    for spec in TABLES:
        name = spec.name(settings.dynamodb_prefix)
        if down is not None:
            checks.append(_unchecked(name, down))
            continue
        try:
            problems = await check_tables(aws, settings.dynamodb_prefix, (spec,))
            if ttl and not problems and spec.ttl is not None:
                got = await aws.dynamodb("describe_time_to_live", TableName=name)
                described = got.get("TimeToLiveDescription", {})
                status = described.get("TimeToLiveStatus")
                attribute = described.get("AttributeName")
                if status not in ("ENABLED", "ENABLING") or attribute != spec.ttl:
                    problems.append(f"{name}: TTL on {spec.ttl!r} not enabled ({status})")
        except AwsUnavailable as exc:
            if not report_unavailable:
                raise
            down = exc
            checks.append(Check(name, (exc.message,)))
            continue
        except AwsError as exc:  # e.g. AccessDeniedException, no credentials
            problems = [f"{name}: {exc.message}"]
        checks.append(Check(name, tuple(p.removeprefix(f"{name}: ") for p in problems)))
    return checks


async def _bucket_check(aws: Aws, bucket: str, *, report_unavailable: bool) -> Check:
    resource = f"bucket {bucket}"
    try:
        problems = await check_bucket(aws, bucket)
    except AwsUnavailable as exc:
        if not report_unavailable:
            raise
        return Check(resource, (exc.message,))
    except AwsError as exc:
        problems = [f"{resource}: {exc.message}"]
    return Check(resource, tuple(p.removeprefix(f"{resource}: ") for p in problems))


async def _aws_checks(
    settings: Settings, aws: Aws, *, tables: bool, bucket: bool, report: bool
) -> list[Check]:
    """The tables (``store="dynamodb"``) and the bucket (``s3_bucket``). ``report``: for
    ``gateway check`` (TTL checked too; AWS unavailable is a problem, not an error)."""
    checks: list[Check] = []
    if tables and settings.store == "dynamodb":
        checks += await _table_checks(aws, settings, ttl=report, report_unavailable=report)
    if bucket and settings.s3_bucket:
        checks.append(await _bucket_check(aws, settings.s3_bucket, report_unavailable=report))
    return checks


async def require_infrastructure(
    settings: Settings, aws: Aws, *, tables: bool = True, bucket: bool = True
) -> None:
    """Check the DynamoDB tables (``store="dynamodb"``) and the S3 bucket (``s3_bucket``)
    the node needs: raise :class:`InfrastructureMissing` naming everything missing or
    different, or :class:`gateway.aws.AwsUnavailable` if AWS cannot be asked. Creates
    nothing."""
    checks = await _aws_checks(settings, aws, tables=tables, bucket=bucket, report=False)
    problems = [c.line() for c in checks if not c.ok]
    if problems:
        raise InfrastructureMissing(problems)


def _check_data_dir(path: str) -> Check:
    """Whether the node can create and write files in ``path`` (or create ``path``
    below its nearest existing parent). Writes and removes one temporary file."""
    resource = f"data dir {os.path.abspath(path)}"
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return Check(resource, (f"{existing} is not a directory",))
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".gateway-check-"):
            pass
    except OSError as exc:
        return Check(resource, (f"not writable: {exc.strerror or exc}",))
    return Check(resource)


async def _redis_check(settings: Settings) -> Check:
    resource = f"redis {settings.redis_url}"
    problem = ""
    try:
        with trio.move_on_after(settings.redis_timeout + 1) as scope:
            async with open_redis(settings.redis_url, timeout=settings.redis_timeout) as redis:
                await redis.execute("PING")
        if scope.cancelled_caught:
            problem = f"no answer within {settings.redis_timeout + 1} s"
    except* (RedisUnavailable, RedisError, OSError) as group:
        problem = "; ".join(str(e) or type(e).__name__ for e in _leaves(group))
    return Check(resource, (f"unreachable: {problem}",) if problem else ())


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


async def check_infrastructure(settings: Settings) -> list[Check]:
    """Everything the node needs, one :class:`Check` per resource, in order: the data
    dir (SQLite stores, local files, the dev secret), every DynamoDB table with its key
    schema, indexes and TTL (``store="dynamodb"``), the S3 bucket (``s3_bucket``), Redis
    (``redis_url``, one PING). Creates nothing: a missing data dir is fine if it can be
    created."""
    checks = [await trio.to_thread.run_sync(_check_data_dir, settings.data_dir)]
    if uses_aws(settings):
        async with open_node_aws(settings) as aws:
            assert aws is not None
            checks += await _aws_checks(settings, aws, tables=True, bucket=True, report=True)
    if settings.redis_url:
        checks.append(await _redis_check(settings))
    return checks


# -- stores --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stores:
    messages: NotingStore  # channel logs (reporting durable writes to the read service)
    domain: DomainStore  # users, workspaces, channels, memberships
    states: MessageStateStore  # edits, deletes, reactions, thread summaries
    reads: ReadStateStore  # read cursors, unread counts, receipts, notifications


@asynccontextmanager
async def open_stores(settings: Settings, aws: Aws | None = None) -> AsyncIterator[Stores]:
    """The stores ``settings.store`` names: SQLite files in ``settings.data_dir`` (created
    if need be: ``messages.sqlite3``, ``domain.sqlite3``, ``message-state.sqlite3``,
    ``read-state.sqlite3``), or the DynamoDB tables under ``settings.dynamodb_prefix`` on
    ``aws`` (a bridge of their own if None), after :func:`require_infrastructure`."""
    if settings.store == "dynamodb":
        async with _aws_for(settings, aws) as shared:
            await require_infrastructure(settings, shared)
            async with _open_dynamodb_stores(settings, shared) as stores:
                yield stores
        return
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


@asynccontextmanager
async def _open_dynamodb_stores(settings: Settings, aws: Aws) -> AsyncIterator[Stores]:
    prefix, key = settings.dynamodb_prefix, cursor_key(settings)
    async with (
        open_dynamo_store(aws, prefix) as store,
        open_dynamodb_domain_store(aws, prefix, key) as domain,
        open_dynamodb_message_state(aws, prefix) as states,
        open_dynamodb_read_state(aws, prefix, key) as reads,
    ):
        yield Stores(NotingStore(store), domain, states, reads)


def blob_key(settings: Settings) -> bytes:
    """The key local blob URLs are signed with, derived from :func:`cursor_key` (the same
    on every node that shares it)."""
    return hmac.new(cursor_key(settings), b"gateway blob urls v1", hashlib.sha256).digest()


@asynccontextmanager
async def open_file_records(settings: Settings, aws: Aws | None = None) -> AsyncIterator[FileStore]:
    """File records: ``<data_dir>/files.sqlite3``, or ``<dynamodb_prefix>-files`` on
    ``aws`` (a bridge of their own if None) with ``store="dynamodb"``."""
    if settings.store == "dynamodb":
        async with (
            _aws_for(settings, aws) as shared,
            open_dynamodb_file_store(shared, settings.dynamodb_prefix) as dynamo,
        ):
            yield dynamo
        return
    path = os.path.join(settings.data_dir, "files.sqlite3")
    dur, every = settings.sqlite_durability, settings.sqlite_fsync_interval
    async with open_sqlite_file_store(path, durability=dur, fsync_interval=every) as records:
        yield records


@asynccontextmanager
async def open_blobs(
    settings: Settings, aws: Aws | None = None
) -> AsyncIterator[tuple[BlobStore, ServedBlobs | None]]:
    """Blobs in S3 when ``s3_bucket`` is set (on ``aws``, a bridge of their own if None;
    :class:`InfrastructureMissing` if the bucket is missing), else in ``<data_dir>/files``
    (served by the REST app: the second item)."""
    if not settings.s3_bucket:
        local = open_local_blob_store(os.path.join(settings.data_dir, "files"), blob_key(settings))
        yield local, local
        return
    async with _aws_for(settings, aws) as shared:
        await require_infrastructure(settings, shared, tables=False)
        async with open_s3_blob_store(shared, settings.s3_bucket) as s3:
            yield s3, None


@asynccontextmanager
async def open_files(settings: Settings, aws: Aws | None = None) -> AsyncIterator[FileService]:
    """The file service: records, blobs and the limits of ``settings`` (on ``aws`` when
    they live on AWS)."""
    async with (
        open_blobs(settings, aws) as (blobs, served),
        open_file_records(settings, aws) as records,
    ):
        yield FileService(
            records,
            blobs,
            served=served,
            max_bytes=settings.max_file_bytes,
            url_ttl=settings.file_url_ttl,
        )


@asynccontextmanager
async def open_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """Run one gateway node: SQLite + in-process bus by default, DynamoDB stores and
    Redis Streams if set.

    With Redis, every node must see the same message store (one SQLite file on one
    host, or DynamoDB), since any node may write a channel behind. On AWS, raises
    :class:`InfrastructureMissing` before anything is opened if tables or the bucket are
    missing.
    """
    os.makedirs(settings.data_dir, exist_ok=True)
    verifier = _verifier(settings)
    async with (
        open_node_aws(settings) as aws,
        open_stores(settings, aws) as stores,
        open_files(settings, aws) as files,
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
            # Start-up's objects (modules, the AWS SDK's service models) leave the cyclic
            # collector's view: a full collection over them took ~100 ms here, a stall
            # of every connection's fan-out (bench/README.md, "Write-behind to DynamoDB").
            gc.collect()
            gc.freeze()
            async for signum in signals:
                log.info("signal received; draining", extra={"signal": signum})
                break
            left = await gateway.drain()
            log.info("drained", extra={"connections_left": left})
