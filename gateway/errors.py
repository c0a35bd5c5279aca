"""The one error tree of the gateway, and the client-facing codes.

Client-facing errors carry a stable string ``code`` (sent in ``error`` and ``nack``
frames and in REST error bodies) and a ``retryable`` flag. WebSocket close codes live
in two reserved ranges whose meaning a client can act on without knowing each code:

* ``4000-4099``: do **not** reconnect automatically; something about the client or its
  credentials must change first (bad token, protocol violation, forbidden).
* ``4100-4199``: reconnect (with jittered backoff) and **resume** from the last
  positions; nothing acknowledged was lost (draining node, slow consumer shed, idle,
  rate limit, internal fault).

Standard codes used: 1000 normal, 1002 protocol error, 1007 invalid payload data
(bad UTF-8), 1008 policy violation (too many fragments), 1009 message too big,
1011 unexpected server error (may resume).
"""

from __future__ import annotations

import enum

__all__ = [
    "AuthError",
    "BackpressureError",
    "CloseCode",
    "ErrorCode",
    "GatewayError",
    "ProtocolViolation",
    "StoreUnavailable",
    "may_resume",
]


class ErrorCode(enum.StrEnum):
    """Stable error codes carried by ``error``/``nack`` frames and REST error bodies."""

    BAD_FRAME = "bad_frame"  # not decodable JSON / MessagePack
    BAD_ENCODING = "bad_encoding"  # invalid UTF-8
    UNKNOWN_TYPE = "unknown_type"  # frame "type" is not one we know
    INVALID_FIELD = "invalid_field"  # missing / mistyped / out-of-limit field
    TOO_LARGE = "too_large"  # message over the size limit
    NOT_AUTHENTICATED = "not_authenticated"  # frame needs a prior successful auth
    ALREADY_AUTHENTICATED = "already_authenticated"
    AUTH_FAILED = "auth_failed"  # token invalid, expired, forged ...
    FORBIDDEN = "forbidden"  # authenticated, but not allowed on that channel
    NOT_SUBSCRIBED = "not_subscribed"  # publish/typing on a channel not subscribed
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RATE_LIMITED = "rate_limited"  # retry later
    UNAVAILABLE = "unavailable"  # a dependency is down; retry, nothing was stored
    EPOCH_CHANGED = "epoch_changed"  # resume position is from a lost log
    INTERNAL = "internal"  # a bug; retry may help
    NOT_FOUND = "not_found"  # REST: no such endpoint, or no such (visible) record
    ALREADY_EXISTS = "already_exists"  # REST: a unique key is taken (user id, email, name ...)
    STALE_VERSION = "stale_version"  # REST: expected_version is not the stored version
    CONFLICT = "conflict"  # REST: the record's state forbids it now (an archived channel)
    LIMIT_EXCEEDED = "limit_exceeded"  # REST: a count limit (participants of a DM)


RETRYABLE: frozenset[ErrorCode] = frozenset(
    {ErrorCode.RATE_LIMITED, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL}
)


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway sends. See the module docstring for ranges."""

    NORMAL = 1000
    PROTOCOL_ERROR = 1002
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    # 4000-4099: do not reconnect automatically.
    AUTH_FAILED = 4001
    AUTH_TIMEOUT = 4002
    FORBIDDEN = 4003
    TOO_MANY_ERRORS = 4004
    UNSUPPORTED_PROTOCOL = 4005
    # 4100-4199: reconnect and resume.
    DRAINING = 4100
    SLOW_CONSUMER = 4101
    RATE_LIMITED = 4102
    IDLE_TIMEOUT = 4103
    ACTOR_FAILED = 4104
    SESSION_EXPIRED = 4105
    AUTH_UNAVAILABLE = 4106


def may_resume(code: int) -> bool:
    """True if a client closed with ``code`` should reconnect and resume."""
    return code in (CloseCode.INTERNAL_ERROR, 1001, 1006) or 4100 <= code <= 4199


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE


class ProtocolViolation(GatewayError):
    """A client frame could not be accepted (decode error, bad field, unknown type)."""

    code = ErrorCode.BAD_FRAME


class AuthError(GatewayError):
    """A token was refused. The message says why, without echoing secrets."""

    code = ErrorCode.AUTH_FAILED


class StoreUnavailable(GatewayError):
    """The bus or the store could not accept a write; nothing was stored. Retryable."""

    code = ErrorCode.UNAVAILABLE


class BackpressureError(GatewayError):
    """A bounded queue is full; the caller decides whether to shed or to retry."""

    code = ErrorCode.RATE_LIMITED
