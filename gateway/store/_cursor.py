"""Signed paging cursors, shared by the domain store adapters.

A cursor is ``<payload>.<tag>``, both base64url without padding: the payload is the JSON
array ``[scope, *key]`` (``scope`` names the listing and its key arguments, ``key`` the
sort key of the last item returned: an SQLite row's columns, or a DynamoDB
``LastEvaluatedKey``), the tag is the first 16 bytes of HMAC-SHA256 over a version label
and the payload, under the store's cursor key. :meth:`CursorCodec.decode` refuses
(:class:`~gateway.domain.errors.BadCursor`) anything it did not sign for that scope, so a
client can neither forge a starting point nor replay a cursor on another listing.
Cursors do not expire and are not secret (the payload is readable).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

import msgspec

from gateway.domain.errors import BadCursor

__all__ = ["MAX_CURSOR_LENGTH", "CursorCodec", "CursorKey"]

MAX_CURSOR_LENGTH = 1024
_LABEL = b"gateway.domain-cursor.v1\x00"
_TAG_BYTES = 16
_B64 = re.compile(r"[A-Za-z0-9_-]+")

CursorKey = tuple[str | int, ...]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict: only the canonical unpadded base64url form of some bytes is accepted, so
    that each cursor has exactly one spelling."""
    if not _B64.fullmatch(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


class CursorCodec:
    """Signs and checks cursors with one secret ``key`` (at least 16 bytes)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the cursor key must be at least 16 bytes")
        self._key = key

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _LABEL + payload, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, scope: str, key: CursorKey) -> str:
        payload = msgspec.json.encode([scope, *key])
        return f"{_b64(payload)}.{_b64(self._tag(payload))}"

    def decode(self, scope: str, cursor: str, arity: int) -> CursorKey:
        """The key ``encode(scope, key)`` signed, if ``cursor`` is that; else ``BadCursor``.
        ``arity`` is the number of key parts the listing uses."""
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise BadCursor()
        payload_text, _, tag_text = cursor.partition(".")
        try:
            payload, tag = _unb64(payload_text), _unb64(tag_text)
        except (binascii.Error, ValueError):
            raise BadCursor() from None
        if not hmac.compare_digest(tag, self._tag(payload)):
            raise BadCursor()
        try:
            parts = msgspec.json.decode(payload, type=list[str | int])
        except msgspec.DecodeError:  # signed by us, so only with another codec version
            raise BadCursor() from None
        if len(parts) != arity + 1 or parts[0] != scope:
            raise BadCursor()
        return tuple(parts[1:])
