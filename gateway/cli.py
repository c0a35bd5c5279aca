"""The ``gateway`` command: serve, token, chat."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import trio

    from gateway.app import serve
    from gateway.config import Settings, SettingsError
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
    except (OSError, BaseExceptionGroup) as exc:  # e.g. the port is taken: no traceback
        errors = _os_errors(exc)
        if not errors:
            raise
        for err in errors:
            print(f"gateway: cannot start: {err}", file=sys.stderr)
        return 1
    return 0


def _os_errors(exc: BaseException) -> list[OSError]:
    """The OSErrors in ``exc`` if that is all it holds, else an empty list."""
    if isinstance(exc, OSError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        found = [_os_errors(e) for e in exc.exceptions]
        if all(found):
            return [e for sub in found for e in sub]
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
        )
    )
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

    p = sub.add_parser("token", help="print a development token (HS256, embedded default)")
    p.add_argument("--user", required=True)
    p.add_argument("--channels", default="", help="comma-separated channel globs (default all)")
    p.add_argument("--ttl", type=float, default=86400.0, help="seconds until expiry")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=_token)

    from gateway.client import chat

    p = sub.add_parser("chat", help="talk to a running gateway from the terminal")
    chat.configure_parser(p)
    p.set_defaults(func=chat.run)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
