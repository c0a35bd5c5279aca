"""REST control plane on quart-trio: health, readiness, metrics, history pages.

Thin: parse, authorize, hand to the bus. Errors are JSON ``{"error": {"code", "message"}}``
with the stable codes of :mod:`gateway.errors`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from gateway.actors.access import channel_access
from gateway.errors import ErrorCode, GatewayError
from gateway.protocol.frames import CHANNEL_PATTERN
from gateway.routes.domain_api import register_domain_routes
from gateway.routes.files import register_file_routes
from gateway.routes.history import history_entries
from gateway.routes.messages import register_message_routes
from gateway.routes.reads import register_read_routes

if TYPE_CHECKING:
    from gateway.actors.node import Node

__all__ = ["create_rest_app"]

_json = msgspec.json.Encoder()
_channel_re = re.compile(CHANNEL_PATTERN)
MAX_PAGE = 200
MAX_OFFSET = 2**53  # the largest offset a client may name (as in the protocol's frames)


class Revocation(msgspec.Struct, forbid_unknown_fields=True):
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    channel: Annotated[str, msgspec.Meta(pattern=CHANNEL_PATTERN, max_length=128)]


_revocation = msgspec.json.Decoder(Revocation).decode


def _error(status: int, code: ErrorCode, message: str) -> Response:
    body = _json.encode({"error": {"code": code.value, "message": message}})
    return Response(body, status=status, content_type="application/json")


def _ok(payload: Any, status: int = 200) -> Response:
    return Response(_json.encode(payload), status=status, content_type="application/json")


def create_rest_app(node: Node) -> QuartTrio:
    app = QuartTrio("gateway", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    register_domain_routes(app, node)
    register_file_routes(app, node)
    register_read_routes(app, node)
    register_message_routes(app, node)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _ok({"status": "ok", "node": node.node_id})

    @app.get("/readyz")
    async def readyz() -> Response:
        if node.draining:
            return _ok({"status": "draining", "node": node.node_id}, status=503)
        reason = "the bus did not answer within 2 s"
        with trio.move_on_after(2.0):
            try:
                await node.bus.check()
                reason = ""
            except GatewayError as exc:
                reason = exc.message
        if reason:
            return _ok({"status": "unavailable", "node": node.node_id, "reason": reason}, 503)
        return _ok({"status": "ready", "node": node.node_id, **node.statistics()})

    @app.get("/metrics")
    async def metrics() -> Response:
        node.metrics.observe_bus(node.bus.statistics())
        return Response(
            node.metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.post("/v1/revocations")
    async def revoke() -> Response:
        """Withdraw a user's access to a channel on every node (admin tokens only)."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return _error(401, ErrorCode.NOT_AUTHENTICATED, "send Authorization: Bearer <token>")
        try:
            identity = await node.verifier.verify(header[7:].strip())
        except GatewayError as exc:
            return _error(503 if exc.retryable else 401, exc.code, exc.message)
        if not identity.admin:
            return _error(403, ErrorCode.FORBIDDEN, "needs a token with gateway_admin: true")
        try:
            body = _revocation(await request.get_data(cache=False))
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            return _error(400, ErrorCode.INVALID_FIELD, f"expected {{user, channel}}: {exc}")
        try:
            n = await node.revoke_everywhere(body.user, body.channel)
        except GatewayError as exc:
            return _error(503, exc.code, exc.message)
        return _ok(
            {
                "user": body.user,
                "channel": body.channel,
                "seconds": node.settings.revocation_ttl,
                "connections_here": n,
            },
            status=202,
        )

    @app.get("/v1/channels/<channel>/messages")
    async def history(channel: str) -> Response:
        """A page of a channel's log: ``after=N`` (ascending from N+1), ``before=N`` (the
        page just below N) or ``around=N`` (N in the middle), ``limit`` 1..200 entries;
        ``author=U``: search, U's newest messages (below ``before``), ascending. Messages
        come with their current state; other entries (edits, reactions, ...) only with
        ``events=true``, so a page may hold fewer than ``limit`` messages."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return _error(401, ErrorCode.NOT_AUTHENTICATED, "send Authorization: Bearer <token>")
        try:
            identity = await node.verifier.verify(header[7:].strip())
        except GatewayError as exc:
            return _error(503 if exc.retryable else 401, exc.code, exc.message)
        if not _channel_re.match(channel):
            return _error(400, ErrorCode.INVALID_FIELD, "invalid channel name")
        try:
            grant = await channel_access(node.domain, identity, channel)
            if not grant.access:
                return _error(403, ErrorCode.FORBIDDEN, grant.reason)
            if await node.bus.revoked(identity.user, channel):
                return _error(403, ErrorCode.FORBIDDEN, "access to this channel was revoked")
        except GatewayError as exc:
            return _error(503, exc.code, exc.message)
        args = request.args
        if args.get("events", "false") not in ("true", "false"):
            return _error(400, ErrorCode.INVALID_FIELD, "events is true or false")
        events = args.get("events") == "true"
        try:
            limit = int(args.get("limit", "50"))
            after = int(args["after"]) if "after" in args else None
            before = int(args["before"]) if "before" in args else None
            around = int(args["around"]) if "around" in args else None
        except ValueError:
            return _error(
                400, ErrorCode.INVALID_FIELD, "after, before, around and limit are integers"
            )
        author = args.get("author")
        given = sum(x is not None for x in (after, before, around))
        if not 1 <= limit <= MAX_PAGE or given > 1:
            return _error(
                400,
                ErrorCode.INVALID_FIELD,
                f"limit 1..{MAX_PAGE}; give at most one of after, before, around",
            )
        if author is not None and (after is not None or around is not None):
            return _error(400, ErrorCode.INVALID_FIELD, "author pages go backward: use before")
        if author is not None and not 1 <= len(author) <= 128:
            return _error(400, ErrorCode.INVALID_FIELD, "author is a user id (1..128 chars)")
        if (after is not None and not 0 <= after <= MAX_OFFSET) or any(
            x is not None and not 1 <= x <= MAX_OFFSET for x in (before, around)
        ):
            return _error(
                400,
                ErrorCode.INVALID_FIELD,
                f"after 0..{MAX_OFFSET}, before and around 1..{MAX_OFFSET}",
            )
        try:
            head = await node.bus.head(channel)
            if author is not None:  # search: the author's newest messages below `before`
                found = await node.bus.read_by_sender(
                    channel, author, before or head.offset + 1, limit
                )
                records = list(reversed(found))
            elif around is not None:  # the page with `around` in its middle
                records = list(await node.bus.read(channel, max(0, around - 1 - limit // 2), limit))
            elif after is not None:
                records = list(await node.bus.read(channel, after, limit))
            else:
                before = head.offset + 1 if before is None else before  # default: newest
                start = max(0, before - 1 - limit)
                records = [
                    r for r in await node.bus.read(channel, start, limit) if r.offset < before
                ]
            entries = await history_entries(node.messages.states, channel, records, events=events)
        except GatewayError as exc:
            return _error(503, exc.code, exc.message)
        return _ok(
            {"channel": channel, "epoch": head.epoch, "head": head.offset, "messages": entries}
        )

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        return _error(404, ErrorCode.NOT_FOUND, "no such endpoint")

    @app.errorhandler(405)
    async def bad_method(_: Exception) -> Response:
        return _error(405, ErrorCode.INVALID_FIELD, "method not allowed")

    @app.errorhandler(413)
    async def too_large(_: Exception) -> Response:
        return _error(413, ErrorCode.TOO_LARGE, "request body too large")

    return app
