"""Shared parts of the chat-domain REST routes: auth, JSON bodies, paging, errors.

Every domain route is wrapped by :func:`endpoint`, which turns the refusals raised while
handling it into the app's JSON error shape ``{"error": {"code", "message", ...}}``:

* :class:`HttpError` (auth 401, body 400/415, query 400, visibility 404): its status;
* ``NotFound`` 404, ``Forbidden`` 403, ``InvalidField``/``BadCursor`` 400 (with
  ``field``), ``AlreadyExists`` 409, ``StaleVersion`` 409 (with ``current``, the stored
  version), ``Conflict`` 409, ``LimitExceeded`` 422; ``reason`` when the error has one;
* ``StoreUnavailable`` 503 (``unavailable``, retryable: nothing was stored).

Only :class:`gateway.store.domain.DomainStore` methods are called (``node.domain``, read
on every request so that the store can be swapped for a wrapper).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
from quart import Response, request

from gateway.actors.access import channel_access
from gateway.domain.errors import DomainError, InvalidField, StaleVersion
from gateway.domain.model import Role
from gateway.errors import ErrorCode, GatewayError
from gateway.protocol.frames import CHANNEL_PATTERN
from gateway.store.domain import MAX_PAGE, DomainStore

if TYPE_CHECKING:
    from gateway.actors.node import Node
    from gateway.auth import Identity

__all__ = [
    "DEFAULT_PAGE",
    "HttpError",
    "Version",
    "authenticate",
    "decode_body",
    "endpoint",
    "json_response",
    "no_content",
    "no_workspace",
    "page_args",
    "readable_channel",
    "require_role",
    "store",
]

DEFAULT_PAGE = 50

Version = Annotated[int, msgspec.Meta(ge=1, le=2**53)]
"""An ``expected_version`` (records start at version 1)."""

_json = msgspec.json.Encoder()
_AT = re.compile(r"at `\$\.(\w+)")
_NAMED = re.compile(r"(?:unknown|missing required) field `([^`]*)`")

STATUS: dict[ErrorCode, int] = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.INVALID_FIELD: 400,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.STALE_VERSION: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.LIMIT_EXCEEDED: 422,
}


class HttpError(Exception):
    """A refusal decided by the route itself (auth, body, query, visibility)."""

    def __init__(self, status: int, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def response(self) -> Response:
        return _error(self.status, self.code, self.message, self.extra)


def _error(status: int, code: ErrorCode, message: str, extra: dict[str, Any]) -> Response:
    body = _json.encode({"error": {"code": code.value, "message": message, **extra}})
    return Response(body, status=status, content_type="application/json")


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(_json.encode(payload), status=status, content_type="application/json")


def no_content() -> Response:
    return Response(b"", status=204)


def domain_error(exc: DomainError) -> Response:
    extra: dict[str, Any] = {}
    if exc.reason is not None:
        extra["reason"] = exc.reason
    if isinstance(exc, InvalidField) and exc.field is not None:
        extra["field"] = exc.field
    if isinstance(exc, StaleVersion):
        extra["current"] = exc.current
    return _error(STATUS.get(exc.code, 400), exc.code, exc.message, extra)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Response]])


def endpoint(fn: Handler) -> Handler:
    """Map :class:`HttpError`, domain refusals and store failures to JSON errors.

    Quart's own HTTP errors (413 for a body over ``MAX_CONTENT_LENGTH``) pass through to
    the app's error handlers.
    """

    @functools.wraps(fn)
    async def wrapper(**kwargs: Any) -> Response:
        try:
            return await fn(**kwargs)
        except HttpError as exc:
            return exc.response()
        except DomainError as exc:
            return domain_error(exc)
        except GatewayError as exc:  # StoreUnavailable (retryable) and the like
            status = 503 if exc.retryable else 500
            return _error(status, exc.code, exc.message, {})

    return wrapper  # type: ignore[return-value]


def store(node: Node) -> DomainStore:
    return node.domain


async def authenticate(node: Node) -> Identity:
    """The verified identity of ``Authorization: Bearer <token>``; 401 (503 if the
    verifier could not reach its JWKS)."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise HttpError(401, ErrorCode.NOT_AUTHENTICATED, "send Authorization: Bearer <token>")
    try:
        return await node.verifier.verify(header[7:].strip())
    except GatewayError as exc:
        raise HttpError(503 if exc.retryable else 401, exc.code, exc.message) from None


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}

S = TypeVar("S", bound=msgspec.Struct)


async def decode_body(cls: type[S]) -> S:
    """The request body as ``cls`` (a Struct with ``forbid_unknown_fields``): 415 unless
    ``Content-Type: application/json``; 400 ``invalid_field`` naming the field for
    malformed JSON, unknown fields, wrong types and values outside the limits."""
    if request.mimetype != "application/json":
        raise HttpError(415, ErrorCode.INVALID_FIELD, "send Content-Type: application/json")
    data = await request.get_data(cache=False)
    decoder = _decoders.get(cls)
    if decoder is None:
        decoder = _decoders[cls] = msgspec.json.Decoder(cls)
    try:
        value: S = decoder.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _AT.search(text) or _NAMED.search(text)
        raise HttpError(
            400, ErrorCode.INVALID_FIELD, text, field=match.group(1) if match else None
        ) from None
    except msgspec.DecodeError as exc:
        raise HttpError(400, ErrorCode.INVALID_FIELD, f"malformed JSON: {exc}") from None
    return value


def page_args() -> tuple[int, str | None]:
    """``limit`` (1..200, default 50) and ``cursor`` from the query string."""
    raw = request.args.get("limit")
    limit = DEFAULT_PAGE
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PAGE:
            raise HttpError(
                400,
                ErrorCode.INVALID_FIELD,
                f"limit must be an integer 1..{MAX_PAGE}",
                field="limit",
            )
    return limit, request.args.get("cursor")


def no_workspace(workspace: str) -> HttpError:
    """The same answer for an unknown workspace and one the caller is not a member of."""
    return HttpError(
        404,
        ErrorCode.NOT_FOUND,
        f"no workspace {workspace!r} that you are a member of",
        reason="workspace",
    )


async def require_role(domain: DomainStore, workspace: str, user: str) -> Role:
    """The caller's role in ``workspace``; 404 (reason ``workspace``) if not a member, so
    that non-members cannot tell which workspaces exist."""
    member = await domain.get_member(workspace, user)
    if member is None:
        raise no_workspace(workspace)
    return member.role


_channel_re = re.compile(CHANNEL_PATTERN)


async def readable_channel(node: Node, channel: str) -> Identity:
    """The caller, if it may read ``channel``: 401 without a valid token, 400 for a
    malformed name, 404 (reason ``channel``) if it may not read it (as if it did not
    exist)."""
    identity = await authenticate(node)
    if not _channel_re.match(channel):
        raise HttpError(400, ErrorCode.INVALID_FIELD, "invalid channel name", field="channel")
    grant = await channel_access(node.domain, identity, channel)
    if not grant.access:
        raise HttpError(404, ErrorCode.NOT_FOUND, "no such channel", reason="channel")
    return identity
