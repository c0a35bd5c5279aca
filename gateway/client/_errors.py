"""Exceptions the client SDK raises on purpose (one small tree under :class:`ClientError`)."""

from __future__ import annotations

from gateway.errors import may_resume

__all__ = ["ClientError", "ConnectionClosed", "PublishError", "SubscribeError"]


class ClientError(Exception):
    """Base of every exception the SDK raises on purpose."""


class ConnectionClosed(ClientError):
    """The connection ended and the SDK will not reconnect.

    Raised by :func:`~gateway.client.open_client` when the first connection fails, and by
    every pending or later call once the client has stopped for good (a close code in
    4000-4099, ``reconnect=False``, or the ``async with`` block ended).

    ``code`` is the WebSocket close code (1006 when the TCP connection dropped or could not
    be opened), ``reason`` the close reason, and ``may_resume`` whether that code allows a
    reconnect-and-resume (see :func:`gateway.errors.may_resume`).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        self.may_resume = may_resume(code)
        text = f"connection closed with code {code}"
        super().__init__(f"{text}: {reason}" if reason else text)


class PublishError(ClientError):
    """The server refused a publish, edit, delete or react (an ``error`` frame whose
    ``ref`` is the ``cmid``).

    ``retryable`` is the server's word on whether sending the same frame again later can
    succeed (``rate_limited``, ``unavailable``, ``internal``); reusing the same ``cmid`` for
    the retry keeps it idempotent.
    """

    def __init__(
        self,
        code: str,
        message: str,
        retryable: bool = False,
        *,
        channel: str | None = None,
        cmid: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.retryable = retryable
        self.channel = channel
        self.cmid = cmid
        super().__init__(f"{code}: {message}")


class SubscribeError(ClientError):
    """The server refused a subscription (for example ``forbidden``), or it was abandoned
    because :meth:`~gateway.client.Client.unsubscribe` was called while it was pending."""

    def __init__(self, code: str, message: str, *, channel: str) -> None:
        self.code = code
        self.message = message
        self.channel = channel
        super().__init__(f"{channel}: {code}: {message}")
