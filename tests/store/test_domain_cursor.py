"""Signed paging cursors (``gateway.store._cursor``), without a store."""

from __future__ import annotations

import base64

import pytest

from gateway.domain.errors import BadCursor
from gateway.store._cursor import MAX_CURSOR_LENGTH, CursorCodec

KEY = b"k" * 32


def test_round_trip() -> None:
    codec = CursorCodec(KEY)
    for key in [("alice",), (3, "general"), ("\x00é",)]:
        cursor = codec.encode("scope", key)
        assert cursor.isascii() and len(cursor) < MAX_CURSOR_LENGTH
        assert codec.decode("scope", cursor, len(key)) == key


def test_refusals() -> None:
    codec = CursorCodec(KEY)
    cursor = codec.encode("members\x00acme", ("bob",))
    with pytest.raises(BadCursor):
        codec.decode("members\x00other", cursor, 1)  # another scope
    with pytest.raises(BadCursor):
        codec.decode("members\x00acme", cursor, 2)  # another arity
    with pytest.raises(BadCursor):
        CursorCodec(b"x" * 32).decode("members\x00acme", cursor, 1)  # another key
    with pytest.raises(BadCursor):
        codec.decode("members\x00acme", cursor + "x" * MAX_CURSOR_LENGTH, 1)
    payload, _, tag = cursor.partition(".")
    bad_spellings = [
        f"{payload[:4]}!{payload[4:]}.{tag}",
        f"{payload}.{tag}!",
        f"{payload}.+/{tag}",
        f"{payload}.{tag}.{tag}",
        f"{payload}==.{tag}",
    ]
    for bad in bad_spellings:
        with pytest.raises(BadCursor):
            codec.decode("members\x00acme", bad, 1)  # only the base64url alphabet
    forged_payload = codec.encode("members\x00acme", ("zed",)).partition(".")[0]
    with pytest.raises(BadCursor):
        codec.decode("members\x00acme", forged_payload + "." + cursor.partition(".")[2], 1)


def test_each_cursor_has_one_spelling() -> None:
    codec = CursorCodec(KEY)
    cursor = codec.encode("s", ("a",))
    variants = set()
    for i in range(len(cursor)):
        for c in "AQgw-_":
            variant = cursor[:i] + c + cursor[i + 1 :]
            try:
                codec.decode("s", variant, 1)
            except BadCursor:
                continue
            variants.add(variant)
    assert variants == {cursor}


def test_signed_garbage_is_refused() -> None:
    codec = CursorCodec(KEY)
    payload = base64.urlsafe_b64encode(b"{not json").rstrip(b"=").decode()
    tag = base64.urlsafe_b64encode(codec._tag(b"{not json")).rstrip(b"=").decode()
    with pytest.raises(BadCursor):
        codec.decode("s", f"{payload}.{tag}", 1)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        CursorCodec(b"short")
