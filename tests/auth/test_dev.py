"""Dev tokens, the dev secret file, and TokenVerifier's configuration checks."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import jwt as pyjwt
import pytest

from gateway.auth import TokenVerifier, load_or_create_dev_secret, mint_dev_token
from gateway.config import SettingsError
from tests.auth._support import CLIENT_ID, ISSUER, NOW, SECRET, FakeClock, RsaKey


async def test_mint_dev_token_claims() -> None:
    token = mint_dev_token(
        SECRET,
        "alice",
        ttl=120,
        channels=("room-*",),
        issuer=ISSUER,
        audience=CLIENT_ID,
        now=NOW + 0.7,
    )
    assert pyjwt.get_unverified_header(token)["alg"] == "HS256"
    payload = pyjwt.decode(token, options={"verify_signature": False})
    assert payload == {
        "sub": "alice",
        "iat": int(NOW),
        "exp": int(NOW) + 121,  # rounded up: the token lives at least ttl seconds
        "channels": ["room-*"],
        "iss": ISSUER,
        "aud": CLIENT_ID,
    }
    v = TokenVerifier(hs256_secret=SECRET, issuer=ISSUER, audience=CLIENT_ID, clock=FakeClock())
    identity = await v.verify(token)
    assert identity.channels == ("room-*",)


async def test_mint_dev_token_defaults_to_the_wall_clock() -> None:
    identity = await TokenVerifier(hs256_secret=SECRET).verify(mint_dev_token(SECRET, "bob"))
    assert identity.user == "bob" and identity.channels == ("*",)
    assert "iss" not in identity.claims and "aud" not in identity.claims


def test_mint_dev_token_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        mint_dev_token("short", "alice")
    with pytest.raises(ValueError, match="user"):
        mint_dev_token(SECRET, "")
    with pytest.raises(TypeError, match="not one string"):
        mint_dev_token(SECRET, "alice", channels="room-*")


def test_verifier_configuration_is_checked(rsa_keys: tuple[RsaKey, RsaKey, RsaKey]) -> None:
    with pytest.raises(ValueError, match="hs256_secret or jwks_url"):
        TokenVerifier()
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenVerifier(hs256_secret="secret")
    with pytest.raises(ValueError, match="asymmetric key or a JWK"):
        TokenVerifier(hs256_secret=rsa_keys[0].public_pem().decode())
    with pytest.raises(ValueError, match="http"):
        TokenVerifier(jwks_url="file:///etc/jwks.json")
    with pytest.raises(ValueError, match="http"):
        TokenVerifier(jwks_url="/relative/jwks.json")
    with pytest.raises(ValueError, match="negative"):
        TokenVerifier(hs256_secret=SECRET, leeway=-1)
    with pytest.raises(ValueError, match="timeout"):
        TokenVerifier(jwks_url="https://example.invalid/jwks.json", jwks_fetch_timeout=0)


def test_dev_secret_is_created_private_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    secret = load_or_create_dev_secret(str(data_dir))
    path = data_dir / "dev-secret"
    assert len(secret) >= 43 and path.read_text().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0
    assert load_or_create_dev_secret(str(data_dir)) == secret
    assert os.listdir(data_dir) == ["dev-secret"]  # no temporary files left behind
    assert mint_dev_token(secret, "alice")  # usable as an HS256 key


def test_dev_secret_reads_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "dev-secret").write_text(SECRET + "\n")
    assert load_or_create_dev_secret(str(tmp_path)) == SECRET


def test_dev_secret_refuses_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "dev-secret").write_text("\n")
    with pytest.raises(SettingsError, match="delete it"):
        load_or_create_dev_secret(str(tmp_path))


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    results: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(load_or_create_dev_secret(str(tmp_path)))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 8 and len(set(results)) == 1
    assert os.listdir(tmp_path) == ["dev-secret"]
