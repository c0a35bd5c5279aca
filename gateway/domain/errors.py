"""Errors of the chat domain (users, workspaces, channels, direct conversations).

Every exception here is a :class:`gateway.errors.GatewayError` whose ``code`` is the
stable :class:`~gateway.errors.ErrorCode` a client sees (in REST error bodies):
``not_found``, ``forbidden``, ``invalid_field``, ``already_exists``, ``stale_version``,
``conflict``, ``limit_exceeded``. ``domain_code`` is ``code``'s string value (kept for
callers that compare strings).

``reason`` is an optional machine-readable detail (``"bad_cursor"``, ``"email"``,
``"archived"`` ...), ``field`` names the offending input field for ``invalid_field``.
"""

from __future__ import annotations

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

# The codes a domain error carries (the values of their ErrorCode members).
NOT_FOUND = ErrorCode.NOT_FOUND.value  # no such user / workspace / channel / member
FORBIDDEN = ErrorCode.FORBIDDEN.value  # the actor's role or membership does not allow it
INVALID_FIELD = ErrorCode.INVALID_FIELD.value  # a field is malformed or over a length limit
ALREADY_EXISTS = ErrorCode.ALREADY_EXISTS.value  # unique key taken: user id, email, name ...
STALE_VERSION = ErrorCode.STALE_VERSION.value  # the expected version is not the stored one
CONFLICT = ErrorCode.CONFLICT.value  # the state forbids it now (joining an archived channel)
LIMIT_EXCEEDED = ErrorCode.LIMIT_EXCEEDED.value  # a count limit (e.g. participants of a DM)
# A reason (not a code): a paging cursor was tampered with, or is from another listing.
BAD_CURSOR = "bad_cursor"

DOMAIN_CODES: frozenset[str] = frozenset(
    {NOT_FOUND, FORBIDDEN, INVALID_FIELD, ALREADY_EXISTS, STALE_VERSION, CONFLICT, LIMIT_EXCEEDED}
)


class DomainError(GatewayError):
    """Base of the domain's refusals. Never retryable: the same call fails the same way."""

    code = ErrorCode.INVALID_FIELD

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def domain_code(self) -> str:
        """``code`` as a plain string (one of :data:`DOMAIN_CODES`)."""
        return self.code.value


class NotFound(DomainError):
    """``reason`` says what is missing: ``"user"``, ``"workspace"``, ``"channel"``,
    ``"member"`` (the user is not a member of the workspace)."""

    code = ErrorCode.NOT_FOUND


class Forbidden(DomainError):
    code = ErrorCode.FORBIDDEN


class InvalidField(DomainError):
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

    code = ErrorCode.ALREADY_EXISTS


class StaleVersion(DomainError):
    """``current`` is the stored version (re-read, re-apply, retry)."""

    code = ErrorCode.STALE_VERSION

    def __init__(self, message: str, *, current: int) -> None:
        super().__init__(message, reason="version")
        self.current = current


class Conflict(DomainError):
    code = ErrorCode.CONFLICT


class LimitExceeded(DomainError):
    code = ErrorCode.LIMIT_EXCEEDED
