"""Mentions parsed from message bodies."""

from __future__ import annotations

import pytest

from gateway.domain.mentions import MAX_MENTIONS, parse_mentions


@pytest.mark.parametrize(
    ("body", "users", "everyone"),
    [
        ("hello", (), False),
        ("@alice hi", ("alice",), False),
        ("thanks @bob.", ("bob",), False),
        ("@bob @alice @bob", ("bob", "alice"), False),
        ("mail a@example.com", (), False),
        ("@channel lunch", (), True),
        ("@here and @everyone", (), True),
        ("@@bob", (), False),
        ("(@carol)", ("carol",), False),
        ("@j.doe-2_x!", ("j.doe-2_x",), False),
    ],
)
def test_parse_mentions(body: str, users: tuple[str, ...], everyone: bool) -> None:
    assert parse_mentions(body) == (users, everyone)


def test_mentions_are_capped() -> None:
    body = " ".join(f"@u{i}" for i in range(MAX_MENTIONS + 10))
    users, _ = parse_mentions(body)
    assert users == tuple(f"u{i}" for i in range(MAX_MENTIONS))
