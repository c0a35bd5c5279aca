"""The domain records, their limits, ids and errors (pure: no store)."""

from __future__ import annotations

import re

import msgspec
import pytest

from gateway.domain import errors
from gateway.domain.errors import (
    AlreadyExists,
    BadCursor,
    Conflict,
    DomainError,
    Forbidden,
    InvalidField,
    LimitExceeded,
    NotFound,
    StaleVersion,
)
from gateway.domain.model import (
    MAX_DM_PARTICIPANTS,
    Channel,
    ChannelKind,
    Conversation,
    Member,
    Role,
    User,
    Workspace,
    check_channel_name,
    check_email,
    check_participants,
    dm_channel_id,
    dm_channel_name,
    new_channel_id,
    new_workspace_id,
    normalize_email,
    revalidated,
    validated,
)
from gateway.errors import ErrorCode, GatewayError
from gateway.protocol.frames import CHANNEL_PATTERN


def user(**kw: object) -> User:
    fields: dict[str, object] = {
        "id": "u1",
        "email": "ann@example.com",
        "display_name": "Ann",
        "created_ms": 1,
        **kw,
    }
    return validated(User, **fields)


# -- records -----------------------------------------------------------------------------


def test_records_are_frozen() -> None:
    u = user()
    with pytest.raises(AttributeError):
        u.email = "x@example.com"  # type: ignore[misc]
    assert u.version == 1 and u.status_text == "" and u.avatar_url is None


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"id": "tab\t"}, "id"),
        ({"email": "Ann@example.com"}, "email"),  # stored lower-cased only
        ({"email": "ann@example"}, "email"),
        ({"email": "ann@example.com\n"}, "email"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "n" * 81}, "display_name"),
        ({"status_text": "s" * 141}, "status_text"),
        ({"avatar_url": "ftp://x"}, "avatar_url"),
        ({"created_ms": -1}, "created_ms"),
        ({"version": 0}, "version"),
    ],
)
def test_user_limits(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidField) as info:
        user(**kw)
    assert info.value.field == field


def test_limits_hold_when_decoding_json_too() -> None:
    raw = msgspec.json.encode(msgspec.structs.asdict(user()) | {"display_name": "n" * 81})
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=User)
    assert msgspec.json.decode(msgspec.json.encode(user()), type=User) == user()


def test_revalidated_checks_a_replaced_record() -> None:
    u = user()
    assert revalidated(msgspec.structs.replace(u, status_text="ok")).status_text == "ok"
    with pytest.raises(InvalidField):
        revalidated(msgspec.structs.replace(u, display_name=""))


def test_other_records() -> None:
    ws = validated(Workspace, id="acme", name="Acme", owner="u1", created_ms=0)
    assert ws.version == 1
    for bad in ("", "-x", "a b", "x" * 65, "a.b"):
        with pytest.raises(InvalidField):
            validated(Workspace, id=bad, name="Acme", owner="u1", created_ms=0)
    m = validated(Member, workspace="acme", user="u1", role="admin", joined_ms=5)
    assert m.role is Role.ADMIN
    with pytest.raises(InvalidField) as info:
        validated(Member, workspace="acme", user="u1", role="root", joined_ms=5)
    assert info.value.field == "role"
    c = validated(
        Channel, id="ch.1", workspace="acme", name="general", kind="public", created_by="u1",
        created_ms=0,
    )  # fmt: skip
    assert (c.topic, c.archived, c.position, c.kind) == ("", False, 0, ChannelKind.PUBLIC)
    with pytest.raises(InvalidField) as info:
        validated(
            Channel, id="bad id", workspace="acme", name="general", kind="public",
            created_by="u1", created_ms=0,
        )  # fmt: skip
    assert info.value.field == "id"


def test_conversation_participant_bounds() -> None:
    def conv(n: int) -> Conversation:
        people = tuple(f"u{i}" for i in range(n))
        return validated(
            Conversation, id="dm.x", workspace="acme", participants=people, created_by="u0",
            created_ms=0,
        )  # fmt: skip

    assert len(conv(2).participants) == 2
    assert len(conv(MAX_DM_PARTICIPANTS).participants) == MAX_DM_PARTICIPANTS
    for n in (1, MAX_DM_PARTICIPANTS + 1):
        with pytest.raises(InvalidField):
            conv(n)


# -- helpers -----------------------------------------------------------------------------


def test_emails_are_normalized_and_checked() -> None:
    assert normalize_email("  Ann.Lee+x@Example.COM ") == "ann.lee+x@example.com"
    assert check_email(" Ann@Sub.Example.org") == "ann@sub.example.org"
    for bad in ("", "ann", "ann@", "@example.com", "a b@example.com", "ann@-x.com", "ann@x"):
        with pytest.raises(InvalidField) as info:
            check_email(bad)
        assert info.value.field == "email"


def test_channel_names() -> None:
    assert check_channel_name("dev-ops_2") == "dev-ops_2"
    assert check_channel_name("x" * 80) == "x" * 80
    for bad in ("", "Dev", "a b", "_x", "x" * 81, "dm-abc", "ok\n", "ünï"):
        with pytest.raises(InvalidField):
            check_channel_name(bad)


def test_participants() -> None:
    assert check_participants("bob", ["carol", "bob", "alice", "carol"]) == (
        "alice",
        "bob",
        "carol",
    )
    with pytest.raises(InvalidField):
        check_participants("bob", [])
    with pytest.raises(InvalidField):
        check_participants("bob", ["bob"])
    with pytest.raises(InvalidField):
        check_participants("bob", [""])
    with pytest.raises(InvalidField):
        check_participants("bob", "carol")  # a string, not a list of ids
    others = [f"u{i}" for i in range(MAX_DM_PARTICIPANTS - 1)]
    assert len(check_participants("bob", others)) == MAX_DM_PARTICIPANTS
    with pytest.raises(LimitExceeded) as info:
        check_participants("bob", [*others, "one-more"])
    assert info.value.domain_code == "limit_exceeded"


def test_dm_ids_are_deterministic_per_workspace_and_set() -> None:
    a = dm_channel_id("acme", ["bob", "alice"])
    assert a == dm_channel_id("acme", ["alice", "bob", "alice"])
    assert a != dm_channel_id("other", ["alice", "bob"])
    assert a != dm_channel_id("acme", ["alice", "bob", "carol"])
    assert dm_channel_id("acme", ["a", "bc"]) != dm_channel_id("acme", ["ab", "c"])
    assert re.fullmatch(r"dm\.[0-9a-f]{32}", a) and re.match(CHANNEL_PATTERN, a)
    name = dm_channel_name(a)
    assert name.startswith("dm-") and len(name) == 35


def test_new_ids() -> None:
    assert new_channel_id() != new_channel_id()
    assert re.match(CHANNEL_PATTERN, new_channel_id())
    assert re.fullmatch(r"w[0-9a-f]{16}", new_workspace_id())


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "domain_code", "code"),
    [
        (NotFound("x"), "not_found", ErrorCode.NOT_FOUND),
        (Forbidden("x"), "forbidden", ErrorCode.FORBIDDEN),
        (InvalidField("x", field="f"), "invalid_field", ErrorCode.INVALID_FIELD),
        (BadCursor(), "invalid_field", ErrorCode.INVALID_FIELD),
        (AlreadyExists("x"), "already_exists", ErrorCode.ALREADY_EXISTS),
        (StaleVersion("x", current=3), "stale_version", ErrorCode.STALE_VERSION),
        (Conflict("x"), "conflict", ErrorCode.CONFLICT),
        (LimitExceeded("x"), "limit_exceeded", ErrorCode.LIMIT_EXCEEDED),
    ],
)
def test_errors_carry_their_error_code_and_its_string(
    exc: DomainError, domain_code: str, code: ErrorCode
) -> None:
    assert isinstance(exc, GatewayError)
    assert exc.domain_code == domain_code and domain_code in errors.DOMAIN_CODES
    assert exc.code is code and exc.domain_code == code.value
    assert not exc.retryable


def test_bad_cursor_details() -> None:
    exc = BadCursor()
    assert (exc.field, exc.reason, exc.message) == ("cursor", errors.BAD_CURSOR, "bad cursor")
    assert StaleVersion("x", current=7).current == 7
