"""Errors of the chat domain (users, workspaces, channels, direct conversations).

Every exception here is a :class:`gateway.errors.GatewayError`. Each carries two codes:

``domain_code``
    The precise, stable string a client should see (``"already_exists"``,
    ``"stale_version"`` ...), one of the ``*`` constants below. Some of them are not yet
    members of :class:`gateway.errors.ErrorCode`; they are meant to be merged into it.
``code``
    The nearest existing :class:`~gateway.errors.ErrorCode`, so that code which only knows
    the gateway's error tree (``exc.code.value``) keeps working until the merge.

``reason`` is an optional machine-readable detail (``"bad_cursor"``, ``"email"``,
``"archived"`` ...), ``field`` names the offending input field for ``invalid_field``.
"""

from __future__ import annotations

from typing import ClassVar

from gateway.errors import ErrorCode, GatewayError

__all__ = [
    "ALREADY_EXISTS",
    "BAD_CURSOR",
    "CONFLICT",
    "DOMAIN_CODES",
    "FORBIDDEN",
    "INVALID_FIELD",
    "LIMIT_EXCEEDED",
    "NOT_FOUND",
    "STALE_VERSION",
    "AlreadyExists",
    "BadCursor",
    "Conflict",
    "DomainError",
    "Forbidden",
    "InvalidField",
    "LimitExceeded",
    "NotFound",
    "StaleVersion",
]

# Codes already in gateway.errors.ErrorCode:
NOT_FOUND = "not_found"  # no such user / workspace / channel / member
FORBIDDEN = "forbidden"  # the actor's role or membership does not allow it
INVALID_FIELD = "invalid_field"  # a field is malformed or over a length limit
# New codes, to be merged into ErrorCode:
ALREADY_EXISTS = "already_exists"  # unique key taken: user id, email, channel name ...
STALE_VERSION = "stale_version"  # the expected version is not the stored one
CONFLICT = "conflict"  # the state forbids it now (e.g. joining an archived channel)
LIMIT_EXCEEDED = "limit_exceeded"  # a count limit (e.g. participants of a DM)
# A reason (not a code): a paging cursor was tampered with, or is from another listing.
BAD_CURSOR = "bad_cursor"

DOMAIN_CODES: frozenset[str] = frozenset(
    {NOT_FOUND, FORBIDDEN, INVALID_FIELD, ALREADY_EXISTS, STALE_VERSION, CONFLICT, LIMIT_EXCEEDED}
)


class DomainError(GatewayError):
    """Base of the domain's refusals. Never retryable: the same call fails the same way."""

    domain_code: ClassVar[str] = INVALID_FIELD
    code = ErrorCode.INVALID_FIELD

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class NotFound(DomainError):
    """``reason`` says what is missing: ``"user"``, ``"workspace"``, ``"channel"``,
    ``"member"`` (the user is not a member of the workspace)."""

    domain_code = NOT_FOUND
    code = ErrorCode.NOT_FOUND


class Forbidden(DomainError):
    domain_code = FORBIDDEN
    code = ErrorCode.FORBIDDEN


class InvalidField(DomainError):
    domain_code = INVALID_FIELD
    code = ErrorCode.INVALID_FIELD

    def __init__(self, message: str, *, field: str | None = None, reason: str | None = None):
        super().__init__(message, reason=reason)
        self.field = field


class BadCursor(InvalidField):
    """A paging cursor that this store did not sign for this listing."""

    def __init__(self, message: str = "bad cursor") -> None:
        super().__init__(message, field="cursor", reason=BAD_CURSOR)


class AlreadyExists(DomainError):
    """``reason`` names the unique key: ``"user"``, ``"email"``, ``"workspace"``,
    ``"channel_name"``."""

    domain_code = ALREADY_EXISTS


class StaleVersion(DomainError):
    """``current`` is the stored version (re-read, re-apply, retry)."""

    domain_code = STALE_VERSION

    def __init__(self, message: str, *, current: int) -> None:
        super().__init__(message, reason="version")
        self.current = current


class Conflict(DomainError):
    domain_code = CONFLICT


class LimitExceeded(DomainError):
    domain_code = LIMIT_EXCEEDED
