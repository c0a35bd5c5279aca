"""Per-connection protocol state machine (sans-IO).

The connection actor feeds it decoded frames and the clock; it answers with one
:data:`Action` saying what to do. It owns the rules that need no I/O: the auth phase,
which frames are allowed when, the configurable limits, the subscription set, the rate
limit and the error budget. Being synchronous, it is tested without sockets.
"""

from __future__ import annotations

import dataclasses
import enum

from gateway.config import Limits
from gateway.errors import CloseCode, ErrorCode, ProtocolViolation
from gateway.model import Position
from gateway.protocol import frames as f

__all__ = [
    "Action",
    "Authenticate",
    "Close",
    "DoChange",
    "DoPresenceSet",
    "DoPresenceWatch",
    "DoPublish",
    "DoReceipt",
    "DoSubscribe",
    "DoTyping",
    "DoUnsubscribe",
    "Phase",
    "Reply",
    "Session",
    "TokenBucket",
]


ERROR_WINDOW = 60.0  # seconds over which the error budget (Limits.error_strikes) counts


class Phase(enum.Enum):
    AWAIT_AUTH = "await_auth"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSED = "closed"


@dataclasses.dataclass(slots=True, frozen=True)
class Reply:
    frame: f.ServerFrame


@dataclasses.dataclass(slots=True, frozen=True)
class Close:
    code: int
    reason: str


@dataclasses.dataclass(slots=True, frozen=True)
class Authenticate:
    token: str
    resume: dict[str, Position] | None  # positions to resubscribe, for a resume


@dataclasses.dataclass(slots=True, frozen=True)
class DoSubscribe:
    channel: str
    since: Position | None


@dataclasses.dataclass(slots=True, frozen=True)
class DoUnsubscribe:
    channel: str


@dataclasses.dataclass(slots=True, frozen=True)
class DoPublish:
    frame: f.Publish


@dataclasses.dataclass(slots=True, frozen=True)
class DoChange:
    """Edit, delete or react: a change to a message, acked like a publish."""

    frame: f.Edit | f.Delete | f.React


@dataclasses.dataclass(slots=True, frozen=True)
class DoReceipt:
    """Read or delivered up to an offset (no reply)."""

    frame: f.Read | f.Delivered


@dataclasses.dataclass(slots=True, frozen=True)
class DoTyping:
    channel: str


@dataclasses.dataclass(slots=True, frozen=True)
class DoPresenceWatch:
    users: tuple[str, ...]  # de-duplicated, in the client's order


@dataclasses.dataclass(slots=True, frozen=True)
class DoPresenceSet:
    status: str


Action = (
    Reply
    | Close
    | Authenticate
    | DoSubscribe
    | DoUnsubscribe
    | DoPublish
    | DoChange
    | DoReceipt
    | DoTyping
    | DoPresenceWatch
    | DoPresenceSet
    | None
)


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` stored."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, n: float = 1.0) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


def error(
    code: ErrorCode,
    message: str,
    *,
    ref: str | None = None,
    channel: str | None = None,
    retryable: bool = False,
) -> Reply:
    return Reply(
        f.Error(code=code.value, message=message, ref=ref, channel=channel, retryable=retryable)
    )


class Session:
    """Protocol state of one connection."""

    __slots__ = (
        "bucket",
        "errors",
        "errors_since",
        "id",
        "limits",
        "phase",
        "rate_strikes",
        "subscriptions",
        "user",
    )

    def __init__(self, session_id: str, limits: Limits, now: float) -> None:
        self.id = session_id
        self.limits = limits
        self.phase = Phase.AWAIT_AUTH
        self.user: str | None = None
        self.subscriptions: set[str] = set()
        self.errors = 0
        self.errors_since = now
        self.rate_strikes = 0
        self.bucket = TokenBucket(limits.rate_per_second, limits.rate_burst, now)

    # ---------------------------------------------------------------- inputs

    def admit(self, now: float, frame: f.ClientFrame | None = None) -> Action:
        """Call once per received data message (rate limit). ``frame`` is the decoded
        frame, if it decoded: a refused publish is answered with its ``cmid`` as ``ref``.

        Rate strikes count consecutive refusals (any admitted frame resets them); the
        error budget counts errors per ERROR_WINDOW seconds."""
        if now - self.errors_since > ERROR_WINDOW:
            self.errors = 0
            self.errors_since = now
        if self.bucket.take(now):
            self.rate_strikes = 0
            return None
        self.rate_strikes += 1
        if self.rate_strikes > self.limits.rate_strikes:
            self.phase = Phase.CLOSED
            return Close(CloseCode.RATE_LIMITED, "rate limit exceeded repeatedly")
        ref = channel = None
        if isinstance(frame, f.Publish):
            ref, channel = frame.cmid, frame.channel
        return error(
            ErrorCode.RATE_LIMITED,
            f"more than {self.limits.rate_per_second:g} frames/s; frame dropped",
            ref=ref,
            channel=channel,
            retryable=True,
        )

    def decode_failed(self, exc: ProtocolViolation) -> Action:
        """A frame could not be decoded. Answer with an error; close past the budget."""
        return self._strike(error(exc.code, exc.message))

    def receive(self, frame: f.ClientFrame) -> Action:
        """Decide what one decoded client frame means."""
        if isinstance(frame, f.Ping):
            return Reply(f.Pong(nonce=frame.nonce))
        if self.phase is Phase.AWAIT_AUTH:
            if isinstance(frame, f.Auth):
                self.phase = Phase.AUTHENTICATING
                return Authenticate(frame.token, None)
            if isinstance(frame, f.Resume):
                if len(frame.positions) > self.limits.max_subscriptions:
                    return self._strike(
                        error(ErrorCode.TOO_MANY_SUBSCRIPTIONS, "too many positions in resume")
                    )
                self.phase = Phase.AUTHENTICATING
                return Authenticate(frame.token, dict(frame.positions))
            return self._strike(error(ErrorCode.NOT_AUTHENTICATED, "send 'auth' or 'resume' first"))
        if self.phase is Phase.AUTHENTICATING:
            return self._strike(error(ErrorCode.NOT_AUTHENTICATED, "authentication is in progress"))
        if self.phase is Phase.CLOSED:
            return None
        # READY
        if isinstance(frame, f.Publish):
            return self._publish(frame)
        if isinstance(frame, f.Edit | f.Delete | f.React):
            return self._change(frame)
        if isinstance(frame, f.Read | f.Delivered | f.Typing):
            if frame.channel not in self.subscriptions:
                return self._strike(
                    error(
                        ErrorCode.NOT_SUBSCRIBED,
                        "subscribe to the channel first",
                        channel=frame.channel,
                    )
                )
            if isinstance(frame, f.Typing):
                return DoTyping(frame.channel)
            return DoReceipt(frame)
        if isinstance(frame, f.Subscribe):
            if frame.channel in self.subscriptions:
                # Idempotent: resubscribing replays from `since` again.
                return DoSubscribe(frame.channel, frame.since)
            if len(self.subscriptions) >= self.limits.max_subscriptions:
                return self._strike(
                    error(
                        ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                        f"at most {self.limits.max_subscriptions} subscriptions",
                        channel=frame.channel,
                    )
                )
            return DoSubscribe(frame.channel, frame.since)
        if isinstance(frame, f.Unsubscribe):
            if frame.channel not in self.subscriptions:
                return Reply(f.Unsubscribed(channel=frame.channel))
            return DoUnsubscribe(frame.channel)
        if isinstance(frame, f.PresenceWatch):
            users = tuple(dict.fromkeys(frame.users))
            if len(users) > self.limits.max_presence_watch:
                return self._strike(
                    error(
                        ErrorCode.INVALID_FIELD,
                        f"presence_watch: at most {self.limits.max_presence_watch} users",
                    )
                )
            return DoPresenceWatch(users)
        if isinstance(frame, f.PresenceSet):
            return DoPresenceSet(frame.status)
        if isinstance(frame, f.Auth | f.Resume):
            return self._strike(
                error(ErrorCode.ALREADY_AUTHENTICATED, "this connection is authenticated")
            )
        return self._strike(error(ErrorCode.UNKNOWN_TYPE, "unexpected frame"))

    def _publish(self, frame: f.Publish) -> Action:
        return self._check_send(frame.channel, frame.cmid, frame.body) or DoPublish(frame)

    def _change(self, frame: f.Edit | f.Delete | f.React) -> Action:
        refused = self._check_send(frame.channel, frame.cmid, getattr(frame, "body", ""))
        return refused or DoChange(frame)

    def _check_send(self, channel: str, cmid: str, body: str) -> Action:
        """The checks every frame that appends to a log passes: subscribed, sizes."""
        if channel not in self.subscriptions:
            return self._strike(
                error(
                    ErrorCode.NOT_SUBSCRIBED,
                    "subscribe to the channel before publishing",
                    ref=cmid,
                    channel=channel,
                )
            )
        if len(body.encode()) > self.limits.max_body_bytes:
            return self._strike(
                error(
                    ErrorCode.TOO_LARGE,
                    f"body over {self.limits.max_body_bytes} bytes",
                    ref=cmid,
                    channel=channel,
                )
            )
        if len(cmid) > self.limits.max_cmid_len:
            return self._strike(
                error(
                    ErrorCode.INVALID_FIELD,
                    f"cmid over {self.limits.max_cmid_len} characters",
                    ref=cmid,
                    channel=channel,
                )
            )
        return None

    def _strike(self, reply: Reply) -> Action:
        self.errors += 1
        if self.errors > self.limits.error_strikes:
            self.phase = Phase.CLOSED
            return Close(CloseCode.TOO_MANY_ERRORS, "too many invalid frames")
        return reply

    # ---------------------------------------------------------------- outcomes

    def auth_succeeded(self, user: str) -> f.Ready:
        self.phase = Phase.READY
        self.user = user
        return f.Ready(user=user, session=self.id)

    def auth_failed(self, reason: str) -> Close:
        self.phase = Phase.CLOSED
        return Close(CloseCode.AUTH_FAILED, reason[:120])

    def subscribed(self, channel: str) -> None:
        self.subscriptions.add(channel)

    def unsubscribed(self, channel: str) -> None:
        self.subscriptions.discard(channel)
