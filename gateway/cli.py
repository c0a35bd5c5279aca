"""The ``gateway`` command: serve, check, token, seed, chat, events."""

from __future__ import annotations

import argparse
import sys
from typing import TypeVar

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import trio

    from gateway.app import serve
    from gateway.config import Settings, SettingsError
    from gateway.errors import StoreUnavailable
    from gateway.logs import configure_logging

    try:
        settings = Settings.from_env(
            host=args.host, ws_port=args.ws_port, http_port=args.http_port, data_dir=args.data_dir
        )
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        trio.run(serve, settings)
    except (OSError, StoreUnavailable, BaseExceptionGroup) as exc:
        # the port is taken, tables or the bucket are missing, AWS does not answer, ...:
        # a message, no traceback
        errors = _startup_errors(exc)
        if not errors:
            raise
        for err in errors:
            print(f"gateway: cannot start: {err}", file=sys.stderr)
        return 1
    return 0


def _startup_errors(exc: BaseException) -> list[Exception]:
    """The errors in ``exc`` if all are OSErrors or :class:`StoreUnavailable` (missing
    infrastructure among them), else an empty list."""
    from gateway.errors import StoreUnavailable

    errors = _only(exc, Exception)
    if all(isinstance(e, OSError | StoreUnavailable) for e in errors):
        return errors
    return []


CHECK_HELP = """\
Check what the node needs, as configured by the GATEWAY_* variables, and print one
line per resource ("<resource>: ok" or what is wrong): the data dir is writable; with
GATEWAY_STORE=dynamodb every table under GATEWAY_DYNAMODB_PREFIX (key schema, indexes,
TTL); the S3 bucket (GATEWAY_S3_BUCKET); Redis answers (GATEWAY_REDIS_URL). Exit status
0 if all is well, 1 otherwise, 2 for an invalid setting. Creates nothing: deployment
creates tables and the bucket (gateway.store.tables.create_tables / create_bucket).
"""


def _check(args: argparse.Namespace) -> int:
    import trio

    from gateway.app import check_infrastructure
    from gateway.config import Settings, SettingsError

    try:
        settings = Settings.from_env(data_dir=args.data_dir)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    where = f" (tables {settings.dynamodb_prefix}-*)" if settings.store == "dynamodb" else ""
    print(f"store: {settings.store}{where}", flush=True)
    checks = trio.run(check_infrastructure, settings)
    for check in checks:
        print(check.line(), flush=True)
    return 0 if all(c.ok for c in checks) else 1


_E = TypeVar("_E", bound=BaseException)


def _only(exc: BaseException, kind: type[_E]) -> list[_E]:
    """The ``kind`` exceptions in ``exc`` (a group or not, nested groups flattened) if that
    is all it holds, else []."""
    if isinstance(exc, BaseExceptionGroup):  # first: an ExceptionGroup is an Exception too
        found = [_only(e, kind) for e in exc.exceptions]
        if all(found):
            return [e for sub in found for e in sub]
        return []
    if isinstance(exc, kind):
        return [exc]
    return []


def _token(args: argparse.Namespace) -> int:
    from gateway.auth import load_or_create_dev_secret, mint_dev_token
    from gateway.config import Settings, SettingsError

    try:
        settings = Settings.from_env(data_dir=args.data_dir)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    secret = settings.jwt_secret or load_or_create_dev_secret(settings.data_dir)
    channels = [c for c in args.channels.split(",") if c] if args.channels else None
    print(
        mint_dev_token(
            secret,
            args.user,
            ttl=args.ttl,
            channels=channels,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            admin=args.admin,
        )
    )
    return 0


SEED_HELP = """\
Load a demo workspace into the data dir: users alice (owner), bob (admin), carol
(member) and dave (guest) in workspace "acme"; channels #general, #random and
#design (private); a DM alice+bob and a group DM alice+bob+carol; a few messages.
Safe to run again: nothing is created twice. It prints the channel ids and how
to connect.

Embedded default (no GATEWAY_REDIS_URL): run it before `gateway serve`, or stop
the node first. It writes the same SQLite files the node uses (safe), but a
running node keeps each channel log it has already used in memory: it does not
show seeded messages in such a channel (a DM opened before seeding) and its next
append there fails once while it reloads. Channels created by the seed are new
to the node, which reads them from the files. With the Redis bus, seeding while
nodes run is fine.
"""


def _seed(args: argparse.Namespace) -> int:
    import trio

    from gateway.app import open_backends, open_stores
    from gateway.config import Settings, SettingsError
    from gateway.errors import GatewayError
    from gateway.logs import configure_logging
    from gateway.seed import SeedConflict, SeedReport, format_report, seed

    try:
        settings = Settings.from_env(data_dir=args.data_dir)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)

    async def run() -> SeedReport:
        async with (
            open_stores(settings) as stores,
            open_backends(settings, stores.messages) as (bus, _),
        ):
            return await seed(stores.domain, bus, stores.states)

    try:
        report = trio.run(run)
    except (SeedConflict, GatewayError, BaseExceptionGroup) as exc:
        errors = _only(exc, Exception)
        if not errors or not all(isinstance(e, SeedConflict | GatewayError) for e in errors):
            raise
        for err in errors:
            print(f"gateway seed: {err}", file=sys.stderr)
        return 1
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    host = f"[{host}]" if ":" in host else host
    print(
        format_report(
            report,
            data_dir=settings.data_dir,
            http_url=f"http://{host}:{settings.http_port}",
            ws_url=f"ws://{host}:{settings.ws_port}/ws",
        )
    )
    return 0


def _events(args: argparse.Namespace) -> int:
    import json
    import os
    import socket

    import trio

    from gateway.config import Settings, SettingsError
    from gateway.integrations import Event, consume_events, ensure_group
    from gateway.redis import RedisError, RedisUnavailable, open_redis

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print("gateway: events need GATEWAY_REDIS_URL (the Redis bus)", file=sys.stderr)
        return 2
    consumer = args.consumer or f"{socket.gethostname()}-{os.getpid()}"

    async def printer(event_id: str, event: Event) -> None:
        print(json.dumps({"event_id": event_id, **event}), flush=True)

    async def run() -> None:
        async with open_redis(settings.redis_url, timeout=settings.redis_timeout + 2) as redis:
            prefix = settings.redis_prefix
            await ensure_group(redis, prefix, args.group, from_start=args.from_start)
            await consume_events(redis, prefix, args.group, consumer, printer)

    try:
        trio.run(run)
    except (RedisUnavailable, RedisError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="Realtime chat gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run a gateway node (embedded default: no services needed)")
    p.add_argument("--host", default=None, help="bind address (env GATEWAY_HOST, 127.0.0.1)")
    p.add_argument("--ws-port", type=int, default=None, help="WebSocket port (8000)")
    p.add_argument("--http-port", type=int, default=None, help="REST port (8001)")
    p.add_argument("--data-dir", default=None, help="where SQLite and the dev secret live")
    p.set_defaults(func=_serve)

    p = sub.add_parser(
        "check",
        help="check the data dir, DynamoDB tables, S3 bucket and Redis; exit 0 if all is well",
        description=CHECK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", default=None, help="the node's data dir (env GATEWAY_DATA_DIR)")
    p.set_defaults(func=_check)

    p = sub.add_parser("token", help="print a development token (HS256, embedded default)")
    p.add_argument("--user", required=True)
    p.add_argument("--channels", default="", help="comma-separated channel globs (default all)")
    p.add_argument("--ttl", type=float, default=86400.0, help="seconds until expiry")
    p.add_argument("--admin", action="store_true", help="add gateway_admin: true (revocations)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_token)

    p = sub.add_parser(
        "seed",
        help="load a demo workspace (users, channels, messages); safe to run again",
        description=SEED_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", default=None, help="the node's data dir (env GATEWAY_DATA_DIR)")
    p.set_defaults(func=_seed)

    from gateway.client import chat

    p = sub.add_parser("chat", help="talk to a running gateway from the terminal")
    chat.configure_parser(p)
    p.set_defaults(func=chat.run)

    p = sub.add_parser(
        "events", help="consume the integration event stream (Redis bus) as JSON lines"
    )
    p.add_argument("--group", required=True, help="consumer group (created if missing)")
    p.add_argument("--consumer", default="", help="consumer name (default host-pid)")
    p.add_argument(
        "--from-start", action="store_true", help="a new group starts at the oldest event"
    )
    p.set_defaults(func=_events)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
