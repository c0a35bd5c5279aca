"""Small helpers of the client SDK: one-shot waiters, backoff, argument checks."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Generic, NoReturn, TypeVar, cast

import trio

from gateway.protocol.frames import CHANNEL_PATTERN

__all__ = [
    "Waiter",
    "backoff_delay",
    "check_body",
    "check_channel",
    "check_cmid",
    "check_id",
    "raise_single",
]

T = TypeVar("T")

_CHANNEL_RE = re.compile(CHANNEL_PATTERN)
MAX_BODY_CHARS = 65536


class Waiter(Generic[T]):
    """A one-shot result slot that one task awaits and another task fills."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def set(self, value: T) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    async def wait(self) -> T:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return cast("T", self._value)


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Full-jitter exponential backoff: uniform in ``[0, min(maximum, initial * 2**attempt))``."""
    return rand() * min(maximum, initial * 2.0 ** min(attempt, 32))


def check_channel(channel: str) -> None:
    if not isinstance(channel, str) or _CHANNEL_RE.fullmatch(channel) is None:
        raise ValueError(f"invalid channel name: {channel!r}")


def check_body(body: str) -> None:
    if not isinstance(body, str) or not 1 <= len(body) <= MAX_BODY_CHARS:
        raise ValueError(f"body must be a str of 1 to {MAX_BODY_CHARS} characters")


def check_id(name: str, value: str, max_length: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= max_length:
        raise ValueError(f"{name} must be a str of 1 to {max_length} characters")


def check_cmid(cmid: str) -> None:
    check_id("cmid", cmid, 64)
    if cmid.startswith("~"):
        raise ValueError("cmid must not start with '~' (reserved for the server)")


def raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the one meaningful exception of a nursery's group, unwrapped.

    The SDK's own tasks do not raise; a group out of ``open_client`` normally holds just
    the user's exception (or the first connection's failure). Prefer the only exception
    that is not :class:`trio.Cancelled`; with several real ones, raise the group.
    """
    real = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
    if len(group.exceptions) == 1:
        exc = group.exceptions[0]
    elif len(real) == 1:
        exc = real[0]
    elif not real:
        exc = group.exceptions[0]
    else:
        raise group
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context
