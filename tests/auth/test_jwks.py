"""RS256 through a real JWKS endpoint: caching, rotation, refetch rate limit, outages."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import trio

from gateway.auth import TokenVerifier
from gateway.errors import AuthError, ErrorCode
from tests.auth._support import (
    CLIENT_ID,
    ISSUER,
    NOW,
    SECRET,
    FakeClock,
    JwksServer,
    RsaKey,
    claims,
    closed_port_url,
    hmac_token,
    hs256,
    jwks,
)

Keys = tuple[RsaKey, RsaKey, RsaKey]


def verifier(server_or_url: JwksServer | str, clock: FakeClock, **kw: Any) -> TokenVerifier:
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url
    kw.setdefault("jwks_min_refresh_interval", 10.0)
    kw.setdefault("jwks_cache_seconds", 300.0)
    return TokenVerifier(jwks_url=url, clock=clock, **kw)


def cognito_access_claims(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "iss": ISSUER,
        "client_id": CLIENT_ID,
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
        "username": "alice",
        "auth_time": int(NOW),
    }
    return claims(**{**base, **kw})


async def refused(v: TokenVerifier, token: str, why: str) -> AuthError:
    with trio.fail_after(10), pytest.raises(AuthError) as info:
        await v.verify(token)
    assert why in info.value.message, info.value.message
    assert token not in info.value.message
    return info.value


async def test_cognito_rs256_token_verifies(jwks_server: JwksServer, rsa_keys: Keys) -> None:
    current, _, _ = rsa_keys
    jwks_server.document = jwks(current)
    v = verifier(jwks_server, FakeClock(), issuer=ISSUER, audience=CLIENT_ID)
    id_token = current.sign(
        claims(sub="7c9e", iss=ISSUER, aud=CLIENT_ID, **{"cognito:username": "Alice"})
    )
    with trio.fail_after(10):
        identity = await v.verify(current.sign(cognito_access_claims()))
        named = await v.verify(id_token)
    assert identity.user == "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    assert identity.claims["token_use"] == "access"
    assert named.user == "7c9e" and named.display_name == "Alice"
    stats = v.statistics()
    assert (stats.verified, stats.jwks_fetches, stats.jwks_errors, stats.jwks_keys) == (2, 1, 0, 1)
    await refused(v, current.sign(cognito_access_claims(exp=int(NOW) - 60)), "token expired")
    await refused(v, current.sign(cognito_access_claims(iss="https://evil")), "wrong issuer")
    await v.aclose()


async def test_keys_are_cached(jwks_server: JwksServer, rsa_keys: Keys) -> None:
    current, _, _ = rsa_keys
    jwks_server.document = jwks(current)
    clock = FakeClock()
    v = verifier(jwks_server, clock, jwks_cache_seconds=300)
    token = current.sign(claims())
    with trio.fail_after(10):
        for _ in range(5):
            await v.verify(token)
        assert jwks_server.requests == 1
        clock.now += 299  # still fresh
        await v.verify(token)
        assert jwks_server.requests == 1
        clock.now += 1  # cache expired: the next verify refetches once
        await v.verify(token)
        await v.verify(token)
    assert jwks_server.requests == 2
    assert v.statistics().jwks_fetches == 2
    await v.aclose()


async def test_concurrent_first_verifies_share_one_fetch(
    jwks_server: JwksServer, rsa_keys: Keys
) -> None:
    current, _, _ = rsa_keys
    jwks_server.document = jwks(current)
    v = verifier(jwks_server, FakeClock(), jwks_min_refresh_interval=0)
    token = current.sign(claims())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(v.verify, token)
    assert jwks_server.requests == 1
    assert v.statistics().verified == 20
    await v.aclose()


async def test_rotation_refetches_for_a_new_kid(jwks_server: JwksServer, rsa_keys: Keys) -> None:
    old, new, _ = rsa_keys
    jwks_server.document = jwks(old)
    clock = FakeClock()
    v = verifier(jwks_server, clock, jwks_min_refresh_interval=10)
    with trio.fail_after(10):
        await v.verify(old.sign(claims()))
        assert jwks_server.requests == 1
        jwks_server.document = jwks(new)  # the pool rotated its key
        # Within the refresh interval the new kid cannot trigger a fetch yet.
        clock.now += 5
        await refused(v, new.sign(claims()), "unknown key id")
        assert jwks_server.requests == 1
        clock.now += 5
        identity = await v.verify(new.sign(claims(sub="bob")))
        assert identity.user == "bob"
        assert jwks_server.requests == 2
        await v.verify(new.sign(claims()))
        assert jwks_server.requests == 2
        # The old key left the JWKS: its tokens are now unknown (and rate limited).
        await refused(v, old.sign(claims()), "unknown key id")
    assert jwks_server.requests == 2
    await v.aclose()


async def test_unknown_kids_are_rate_limited(jwks_server: JwksServer, rsa_keys: Keys) -> None:
    current, _, attacker = rsa_keys
    jwks_server.document = jwks(current)
    clock = FakeClock()
    v = verifier(jwks_server, clock, jwks_min_refresh_interval=10)

    def forged() -> str:
        return attacker.sign(claims(sub="admin"), kid=uuid.uuid4().hex)

    with trio.fail_after(10):
        await v.verify(current.sign(claims()))
        for _ in range(50):
            await refused(v, forged(), "unknown key id")
        assert jwks_server.requests == 1  # all within the interval of the first fetch
        clock.now += 10
        async with trio.open_nursery() as nursery:  # a concurrent burst: one fetch
            for _ in range(50):
                nursery.start_soon(refused, v, forged(), "unknown key id")
        assert jwks_server.requests == 2
        for _ in range(50):
            clock.now += 0.1
            await refused(v, forged(), "unknown key id")
        assert jwks_server.requests == 2
        clock.now += 10
        await refused(v, forged(), "unknown key id")
        assert jwks_server.requests == 3
        await v.verify(current.sign(claims()))  # the real key never stopped working
    assert v.statistics().refused == 151
    await v.aclose()


async def test_jwks_down_is_a_clear_retryable_error(rsa_keys: Keys) -> None:
    v = verifier(closed_port_url(), FakeClock())
    err = await refused(v, rsa_keys[0].sign(claims()), "signing keys unavailable")
    assert err.code is ErrorCode.UNAVAILABLE and err.retryable
    stats = v.statistics()
    assert (stats.jwks_fetches, stats.jwks_errors, stats.refused) == (1, 1, 1)
    await v.aclose()


@pytest.mark.parametrize(
    "breakage",
    ["status-500", "not-json", "no-keys", "empty-keys", "unusable-keys", "too-large"],
)
async def test_broken_jwks_documents_are_unavailable(
    jwks_server: JwksServer, rsa_keys: Keys, breakage: str
) -> None:
    current, _, _ = rsa_keys
    jwks_server.document = jwks(current)
    if breakage == "status-500":
        jwks_server.status = 500
    elif breakage == "not-json":
        jwks_server.body = b"<html>oops</html>"
    elif breakage == "no-keys":
        jwks_server.document = {"kid": current.kid}
    elif breakage == "empty-keys":
        jwks_server.document = {"keys": []}
    elif breakage == "unusable-keys":
        jwks_server.document = {
            "keys": [
                current.jwk(use="enc"),
                current.jwk(alg="RS512"),
                current.jwk(kty="EC"),
                current.jwk(kid=None),
                current.jwk(n="!!"),
                RsaKey(current.kid, bits=1024).jwk(),
                "not-a-jwk",
            ]
        }
    else:
        jwks_server.body = b'{"keys": [' + b'{"kty": "RSA"},' * 20000 + b"{}]}"
    v = verifier(jwks_server, FakeClock())
    err = await refused(v, current.sign(claims()), "signing keys unavailable")
    assert err.code is ErrorCode.UNAVAILABLE
    assert v.statistics().jwks_errors == 1
    await v.aclose()


async def test_cached_keys_keep_serving_while_jwks_is_down(
    jwks_server: JwksServer, rsa_keys: Keys
) -> None:
    current, new, _ = rsa_keys
    jwks_server.document = jwks(current)
    clock = FakeClock()
    v = verifier(jwks_server, clock, jwks_cache_seconds=60, jwks_min_refresh_interval=10)
    token = current.sign(claims())
    with trio.fail_after(10):
        await v.verify(token)
        jwks_server.status = 503
        clock.now += 61  # cache expired; the refetch fails; the cached key still verifies
        await v.verify(token)
        assert jwks_server.requests == 2
        stats = v.statistics()
        assert (stats.jwks_fetches, stats.jwks_errors, stats.jwks_keys) == (2, 1, 1)
        clock.now += 10
        err = await refused(v, new.sign(claims()), "unavailable")  # may be the rotated key
        assert err.retryable
        jwks_server.status = 200
        jwks_server.document = jwks(current, new)
        clock.now += 10
        await v.verify(new.sign(claims()))  # recovered
    assert jwks_server.requests == 4
    await v.aclose()


async def test_hanging_jwks_times_out(jwks_server: JwksServer, rsa_keys: Keys) -> None:
    current, _, _ = rsa_keys
    jwks_server.hang = True
    v = verifier(jwks_server, FakeClock(), jwks_fetch_timeout=0.2)
    with trio.fail_after(5):
        err = await refused(v, current.sign(claims()), "unavailable")
    assert err.code is ErrorCode.UNAVAILABLE and jwks_server.requests == 1
    await v.aclose()


async def test_rs256_signature_and_kid_rules(jwks_server: JwksServer, rsa_keys: Keys) -> None:
    current, _, attacker = rsa_keys
    jwks_server.document = jwks(current)
    v = verifier(jwks_server, FakeClock())
    await refused(v, attacker.sign(claims(), kid=current.kid), "bad signature")
    await refused(v, current.sign(claims(), kid=None), "no key id")
    for alg in ("RS384", "RS512", "PS256"):
        await refused(v, current.sign(claims(), alg=alg), f"unsupported algorithm '{alg}'")
    await refused(v, hs256(claims()), "unsupported algorithm 'HS256'")  # no secret configured
    assert jwks_server.requests == 1
    await v.aclose()


async def test_aclose_stops_fetching(jwks_server: JwksServer, rsa_keys: Keys) -> None:
    current, new, _ = rsa_keys
    jwks_server.document = jwks(current, new)
    clock = FakeClock()
    v = verifier(jwks_server, clock, jwks_cache_seconds=1)
    with trio.fail_after(10):
        await v.verify(current.sign(claims()))
        await v.aclose()
        await v.aclose()
        clock.now += 100
        await v.verify(current.sign(claims()))  # stale cached key still serves
    assert jwks_server.requests == 1


async def test_both_sources_dispatch_by_header_alg(jwks_server: JwksServer, rsa_keys: Keys) -> None:
    current, _, _ = rsa_keys
    jwks_server.document = jwks(current)
    v = TokenVerifier(hs256_secret=SECRET, jwks_url=jwks_server.url, clock=FakeClock())
    with trio.fail_after(10):
        assert (await v.verify(hs256(claims(sub="dev")))).user == "dev"
        assert jwks_server.requests == 0  # HS256 never touches the JWKS
        assert (await v.verify(current.sign(claims(sub="cognito")))).user == "cognito"
    await refused(v, current.sign(claims(), alg="RS512"), "unsupported algorithm")
    assert jwks_server.requests == 1
    await v.aclose()


async def test_hs256_signed_with_the_public_key_is_refused(
    jwks_server: JwksServer, rsa_keys: Keys
) -> None:
    """Algorithm confusion: an HS256 token whose HMAC key is the RSA public key material."""
    current, _, _ = rsa_keys
    jwks_server.document = jwks(current)
    header = {"alg": "HS256", "kid": current.kid, "typ": "JWT"}
    public_key_material = [
        current.public_pem(),
        json.dumps(current.jwk()).encode(),
        json.dumps(jwks(current)).encode(),
    ]
    jwks_only = verifier(jwks_server, FakeClock())
    both = TokenVerifier(hs256_secret=SECRET, jwks_url=jwks_server.url, clock=FakeClock())
    with trio.fail_after(10):
        for material in public_key_material:
            forged = hmac_token(header, claims(sub="admin"), material)
            await refused(jwks_only, forged, "unsupported algorithm 'HS256'")
            await refused(both, forged, "bad signature")
    assert jwks_server.requests == 0  # refused before any key lookup
    await jwks_only.aclose()
    await both.aclose()
