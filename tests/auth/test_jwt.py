"""HS256 verification, the claim rules, malformed tokens and algorithm refusal."""

from __future__ import annotations

import dataclasses
from typing import Any

import jwt as pyjwt
import pytest

from gateway.auth import Identity, TokenVerifier, VerifierStatistics, mint_dev_token
from gateway.errors import AuthError, ErrorCode
from tests.auth._support import (
    CLIENT_ID,
    ISSUER,
    NOW,
    OTHER_SECRET,
    SECRET,
    FakeClock,
    b64,
    b64json,
    claims,
    hmac_token,
    hs256,
    raw_token,
)

NOT_UTF8 = bytes([0xFF, 0xFE])
HDR = b64json({"alg": "HS256"})


def verifier(**kw: Any) -> TokenVerifier:
    kw.setdefault("hs256_secret", SECRET)
    kw.setdefault("clock", FakeClock())
    return TokenVerifier(**kw)


async def refused(v: TokenVerifier, token: str, why: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        await v.verify(token)
    err = info.value
    assert why in err.message, err.message
    assert err.code is ErrorCode.AUTH_FAILED
    assert SECRET not in err.message
    assert not token or token not in err.message
    return err


async def test_hs256_token_gives_identity() -> None:
    token = mint_dev_token(SECRET, "alice", ttl=600, now=NOW)
    identity = await verifier().verify(token)
    assert identity.user == "alice"
    assert identity.channels == ("*",)
    assert identity.expires_at == NOW + 600
    assert identity.claims["sub"] == "alice"
    assert identity.can_access("general") and identity.can_access("dm:alice:bob")
    assert identity.display_name == "alice"
    with pytest.raises(TypeError):
        identity.claims["sub"] = "mallory"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.user = "mallory"  # type: ignore[misc]
    assert hash(identity) == hash(identity)


async def test_channels_claim_is_a_glob_allow_list() -> None:
    token = mint_dev_token(SECRET, "alice", channels=["room-*", "dm:alice:?"], now=NOW)
    identity = await verifier().verify(token)
    assert identity.channels == ("room-*", "dm:alice:?")
    assert identity.can_access("room-1")
    assert identity.can_access("dm:alice:b")
    assert not identity.can_access("dm:alice:bob")
    assert not identity.can_access("ROOM-1")  # case-sensitive
    assert not identity.can_access("general")
    nothing = await verifier().verify(mint_dev_token(SECRET, "bob", channels=[], now=NOW))
    assert nothing.channels == () and not nothing.can_access("general")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("room-*", "not a list of strings"),
        ({"room": 1}, "not a list of strings"),
        (["ok", 7], "not a list of strings"),
        ([f"c{i}" for i in range(101)], "more than 100 patterns"),
        (["x" * 129], "over 128 chars"),
        ([""], "empty"),
    ],
)
async def test_bad_channels_claim_is_refused(value: Any, why: str) -> None:
    err = await refused(verifier(), hs256(claims(channels=value)), "invalid 'channels' claim")
    assert why in err.message
    ok = [f"c{i}" for i in range(100)]
    assert (await verifier().verify(hs256(claims(channels=ok)))).channels == tuple(ok)
    ok_long = await verifier().verify(hs256(claims(channels=["x" * 128])))
    assert ok_long.channels == ("x" * 128,)


async def test_null_channels_claim_is_refused() -> None:
    token = hmac_token({"alg": "HS256"}, {**claims(), "channels": None}, SECRET.encode())
    await refused(verifier(), token, "invalid 'channels' claim: not a list of strings")


async def test_cognito_username_is_display_only() -> None:
    token = hs256(claims(sub="uuid-1234", **{"cognito:username": "Alice"}))
    identity = await verifier().verify(token)
    assert identity.user == "uuid-1234"
    assert identity.display_name == "Alice"


async def test_exp_is_required_and_leeway_applies() -> None:
    v = verifier(leeway=30)
    await refused(v, hs256(claims(exp=None)), "no expiry")
    await refused(v, hs256(claims(exp="tomorrow")), "'exp': not a number")
    await refused(v, hs256(claims(exp=True)), "'exp': not a number")
    await refused(v, hs256(claims(exp=int(NOW) - 31)), "token expired")
    await refused(v, hs256(claims(exp=int(NOW) - 30)), "token expired")  # exp <= now - leeway
    assert (await v.verify(hs256(claims(exp=int(NOW) - 29)))).expires_at == NOW - 29
    strict = verifier(leeway=0)
    await refused(strict, hs256(claims(exp=int(NOW))), "token expired")
    assert await strict.verify(hs256(claims(exp=int(NOW) + 1)))


async def test_expired_dev_token_with_explicit_now() -> None:
    old = mint_dev_token(SECRET, "alice", ttl=60, now=NOW - 3600)
    await refused(verifier(), old, "token expired")
    assert await verifier(clock=FakeClock(NOW - 3590)).verify(old)


async def test_nbf_and_iat_in_the_future_are_not_yet_valid() -> None:
    v = verifier(leeway=30)
    await refused(v, hs256(claims(nbf=int(NOW) + 31)), "not yet valid ('nbf'")
    assert await v.verify(hs256(claims(nbf=int(NOW) + 30)))
    await refused(v, hs256(claims(iat=int(NOW) + 31)), "not yet valid ('iat'")
    assert await v.verify(hs256(claims(iat=None)))
    await refused(v, hs256(claims(nbf="soon")), "'nbf': not a number")
    await refused(v, hs256(claims(iat=[1])), "'iat': not a number")


async def test_issuer_is_checked_when_configured() -> None:
    v = verifier(issuer=ISSUER)
    assert await v.verify(hs256(claims(iss=ISSUER)))
    await refused(v, hs256(claims(iss="https://evil.example")), "wrong issuer")
    await refused(v, hs256(claims()), "wrong issuer")
    await refused(v, hmac_token({"alg": "HS256"}, claims(iss=[ISSUER]), SECRET.encode()), "issuer")
    assert await verifier().verify(hs256(claims(iss="https://anyone.example")))


async def test_audience_and_cognito_client_id() -> None:
    v = verifier(audience=CLIENT_ID)
    assert await v.verify(hs256(claims(aud=CLIENT_ID)))  # Cognito ID token
    assert await v.verify(hs256(claims(aud=["other", CLIENT_ID])))
    assert await v.verify(hs256(claims(client_id=CLIENT_ID, token_use="access")))
    await refused(v, hs256(claims(aud="other-client")), "wrong audience")
    await refused(v, hs256(claims(client_id="other-client")), "wrong audience")
    await refused(v, hs256(claims()), "wrong audience")
    # 'aud' present decides; a matching client_id does not rescue a wrong aud.
    await refused(v, hs256(claims(aud="other", client_id=CLIENT_ID)), "wrong audience")
    await refused(v, hs256(claims(aud=42)), "malformed claim 'aud'")
    assert await verifier().verify(hs256(claims(aud="whatever")))


@pytest.mark.parametrize(
    ("sub", "why"),
    [(None, "no subject"), ("", "no subject"), (42, "no subject"), ("x" * 129, "longer than 128")],
)
async def test_subject_rules(sub: Any, why: str) -> None:
    await refused(verifier(), hs256(claims(sub=sub)), why)
    assert (await verifier().verify(hs256(claims(sub="x" * 128)))).user == "x" * 128


async def test_bad_signature() -> None:
    v = verifier()
    await refused(v, hs256(claims(), secret=OTHER_SECRET), "bad signature")
    header, _, sig = hs256(claims()).split(".")
    forged = f"{header}.{b64json(claims(sub='admin'))}.{sig}"
    await refused(v, forged, "bad signature")
    await refused(v, f"{header}.{b64json(claims())}.", "bad signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_refused(alg: str) -> None:
    unsigned = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims())}."
    await refused(verifier(), unsigned, "unsupported algorithm")
    await refused(verifier(), raw_token({"alg": alg}, claims()), "unsupported algorithm")


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA", "hs256"])
async def test_algorithms_other_than_the_configured_one_are_refused(alg: str) -> None:
    err = await refused(verifier(), raw_token({"alg": alg, "kid": "k"}, claims()), "unsupported")
    if alg != "hs256":
        assert alg in err.message
    if alg in ("HS384", "HS512"):  # correctly signed with the right secret, still refused
        token = pyjwt.encode(claims(), SECRET + "-padding-for-512-bit-hmac-key", algorithm=alg)
        await refused(verifier(), token, "unsupported algorithm")


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "empty"),
        ("abc", "3 dot-separated segments"),
        ("a.b", "3 dot-separated segments"),
        ("a.b.c.d.e", "3 dot-separated segments"),  # JWE compact form
        ("!!!.e30.c2ln", "bad base64 in the header"),
        (f"{HDR}.e30=.c2ln", "bad base64 in the payload"),
        (f"{HDR}.e30.c2ln*", "bad base64 in the signature"),
        (f"{HDR}.e30.c2l", "bad base64 in the signature"),
        (f"{HDR}.e30.c2lnb", "bad base64 in the signature"),
        (f"{HDR}.e.c2ln", "bad base64 in the payload"),
        ("eyJhbGc.e30.c2ln", "header is not valid JSON"),
        (f"{b64(b'not json')}.e30.c2ln", "header is not valid JSON"),
        (f"{b64(b'[1,2]')}.e30.c2ln", "header is not a JSON object"),
        (f"{b64(b'{}')}.e30.c2ln", "no 'alg'"),
        (f"{b64json({'alg': 256})}.e30.c2ln", "no 'alg'"),
        (f"{b64json({'alg': 'HS256', 'kid': 7})}.e30.c2ln", "'kid'"),
        (f"{b64json({'alg': 'HS256'})}.{b64(b'nope')}.c2ln", "payload is not valid JSON"),
        (f"{b64json({'alg': 'HS256'})}.{b64json('str')}.c2ln", "payload is not a JSON object"),
        (f"{b64json({'alg': 'HS256'})}.{b64(b'[' * 5000)}.c2ln", "payload is not valid JSON"),
        (f"{b64json({'alg': 'HS256'})}.{b64(NOT_UTF8)}.c2ln", "payload is not valid JSON"),
        ("e30.e30.c2ln\u00e9", "not ASCII"),
    ],
)
async def test_malformed_tokens(token: str, why: str) -> None:
    err = await refused(verifier(), token, why)
    assert err.message.startswith("malformed token")


async def test_huge_token_is_refused_without_echoing_it() -> None:
    huge = hs256(claims(pad="x" * 9000))
    assert len(huge) > 8192
    err = await refused(verifier(), huge, "larger than 8192 bytes")
    assert len(err.message) < 100
    at_limit = hs256(claims(pad="x" * 5000))
    assert len(at_limit) <= 8192 and await verifier().verify(at_limit)


async def test_non_string_token_is_refused() -> None:
    for token in (None, b"a.b.c", 42):
        with pytest.raises(AuthError, match="not a string"):
            await verifier().verify(token)  # type: ignore[arg-type]


async def test_statistics_count_outcomes() -> None:
    v = verifier()
    assert v.statistics() == VerifierStatistics()
    await v.verify(hs256(claims()))
    for bad in ("x", hs256(claims(), secret=OTHER_SECRET)):
        with pytest.raises(AuthError):
            await v.verify(bad)
    assert v.statistics() == VerifierStatistics(verified=1, refused=2)
    await v.aclose()
    await v.aclose()


async def test_identity_is_the_documented_dataclass() -> None:
    identity = await verifier().verify(hs256(claims()))
    assert isinstance(identity, Identity)
    assert [f.name for f in dataclasses.fields(Identity)] == [
        "user",
        "channels",
        "expires_at",
        "claims",
    ]
    assert "claims" not in repr(identity)  # claims may be personal data; keep logs lean
