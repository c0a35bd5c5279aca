"""JWT verification: HS256 with a shared secret, RS256 with keys from a JWKS URL.

The algorithm is decided by which key source is configured, never by the token alone:
``HS256`` is accepted only with a secret, ``RS256`` only with a JWKS URL, nothing else
ever (``none``, other HMAC/RSA sizes, ECDSA, EdDSA, PS*). Structure is checked first,
then the signature, then the claims, so a forged token learns nothing about claim rules.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    PyJWTError,
)

from gateway.auth._identity import Identity, VerifierStatistics
from gateway.auth._jwks import JwksCache
from gateway.auth._token import check_claims, describe_alg, parse_token
from gateway.config import SettingsError
from gateway.errors import AuthError

__all__ = [
    "MIN_SECRET_BYTES",
    "TokenVerifier",
    "load_or_create_dev_secret",
    "mint_dev_token",
]

MIN_SECRET_BYTES = 32
"""RFC 7518 section 3.2: an HS256 key must be at least as long as the hash (32 bytes)."""

DEV_SECRET_FILE = "dev-secret"

# PyJWT checks the signature only; the claim rules live in `_token.check_claims`, which
# takes the clock as an argument (PyJWT reads the wall clock itself).
_SIGNATURE_ONLY: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


def _hs256_key(secret: str, what: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"{what} must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 3.2)")
    try:  # PyJWT refuses PEM / DER / SSH / JWK-shaped HMAC secrets (algorithm confusion).
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(key)
    except InvalidKeyError:
        raise ValueError(f"{what} looks like an asymmetric key or a JWK; refused") from None
    return key


class TokenVerifier:
    """Verifies bearer tokens and turns them into :class:`Identity` values.

    Guarantees:

    * :meth:`verify` either returns an :class:`Identity` whose signature, ``exp``
      (required), ``nbf``/``iat`` (if present), ``iss``/``aud`` (if configured), ``sub``
      and ``channels`` all passed, or raises :class:`~gateway.errors.AuthError` whose
      ``message`` says why and never contains the token or a secret. No other exception
      escapes for any input string.
    * Algorithms: ``HS256`` only if ``hs256_secret`` is set, ``RS256`` only if
      ``jwks_url`` is set; the header's ``alg`` only chooses between configured sources.
      Keys named by the token (``jku``, ``jwk``, ``x5u`` headers) are never used.
    * JWKS keys are cached ``jwks_cache_seconds``; unknown ``kid``\\ s refetch at most once
      per ``jwks_min_refresh_interval``; a fetch failure keeps cached keys serving and
      refuses unknown ones with an ``UNAVAILABLE`` (retryable) :class:`AuthError`.
    * HS256 and RS256 checks run synchronously on the calling task (no threads); only
      a JWKS fetch awaits, bounded by ``jwks_fetch_timeout``.
    * With ``audience`` empty the ``aud`` claim is not checked; with ``issuer`` empty
      ``iss`` is not checked. Configure both in production.

    ``clock`` (unix seconds) is for tests; when given it also times the JWKS cache,
    which otherwise uses :func:`time.monotonic`.
    """

    def __init__(
        self,
        *,
        hs256_secret: str = "",
        jwks_url: str = "",
        issuer: str = "",
        audience: str = "",
        leeway: float = 30.0,
        jwks_cache_seconds: float = 300.0,
        jwks_min_refresh_interval: float = 10.0,
        jwks_fetch_timeout: float = 5.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not hs256_secret and not jwks_url:
            raise ValueError("TokenVerifier needs hs256_secret or jwks_url")
        if leeway < 0 or jwks_cache_seconds < 0 or jwks_min_refresh_interval < 0:
            raise ValueError("leeway and JWKS intervals must not be negative")
        if jwks_fetch_timeout <= 0:
            raise ValueError("jwks_fetch_timeout must be positive")
        self._secret = _hs256_key(hs256_secret, "hs256_secret") if hs256_secret else None
        self._jwks: JwksCache | None = None
        if jwks_url:
            parts = urlsplit(jwks_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("jwks_url must be an absolute http(s) URL")
            self._jwks = JwksCache(
                jwks_url,
                cache_seconds=jwks_cache_seconds,
                min_refresh_interval=jwks_min_refresh_interval,
                fetch_timeout=jwks_fetch_timeout,
                clock=clock or time.monotonic,
            )
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._wall = clock or time.time
        self._verified = 0
        self._refused = 0

    async def verify(self, token: str) -> Identity:
        """Verify ``token``; return who it identifies or raise :class:`AuthError`.

        May await a JWKS fetch (RS256 only); cancellation is safe at any point.
        """
        try:
            identity = await self._verify(token)
        except AuthError:
            self._refused += 1
            raise
        self._verified += 1
        return identity

    async def _verify(self, token: str) -> Identity:
        parsed = parse_token(token)
        key: Any
        if parsed.alg == "HS256" and self._secret is not None:
            key = self._secret
        elif parsed.alg == "RS256" and self._jwks is not None:
            if parsed.kid is None:
                raise AuthError("token has no key id ('kid')")
            key = await self._jwks.get_key(parsed.kid)
        else:
            raise AuthError(describe_alg(parsed.alg))
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[parsed.alg], options=_SIGNATURE_ONLY
            )
        except InvalidSignatureError:
            raise AuthError("bad signature") from None
        except InvalidAlgorithmError:
            raise AuthError(describe_alg(parsed.alg)) from None
        except DecodeError:
            raise AuthError("malformed token") from None
        except PyJWTError:
            raise AuthError("invalid token") from None
        return check_claims(
            claims,
            now=self._wall(),
            leeway=self._leeway,
            issuer=self._issuer,
            audience=self._audience,
        )

    def statistics(self) -> VerifierStatistics:
        """A snapshot of the counters (see :class:`VerifierStatistics`)."""
        jwks = self._jwks
        return VerifierStatistics(
            verified=self._verified,
            refused=self._refused,
            jwks_fetches=jwks.fetches if jwks else 0,
            jwks_errors=jwks.errors if jwks else 0,
            jwks_keys=jwks.key_count if jwks else 0,
        )

    async def aclose(self) -> None:
        """Release the JWKS HTTP client. Idempotent; cached keys keep verifying."""
        if self._jwks is not None:
            await self._jwks.aclose()


def mint_dev_token(
    secret: str,
    user: str,
    *,
    ttl: float = 86400.0,
    channels: Sequence[str] | None = None,
    issuer: str = "",
    audience: str = "",
    now: float | None = None,
    admin: bool = False,
) -> str:
    """An HS256 token for ``user`` that a verifier with the same ``secret`` accepts.

    Claims: ``sub``, ``iat`` = ``now`` (default: the wall clock) rounded down, ``exp`` =
    ``now + ttl`` rounded up (so the token lives at least ``ttl`` seconds; a negative
    ``ttl`` gives an expired one), ``channels`` if given, ``iss``/``aud`` if non-empty,
    ``gateway_admin: true`` with ``admin``.
    For development and tests; production tokens come from the identity provider.
    """
    key = _hs256_key(secret, "secret")
    if not user:
        raise ValueError("user must not be empty")
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "sub": user,
        "iat": math.floor(issued),
        "exp": math.ceil(issued + ttl),
    }
    if channels is not None:
        if isinstance(channels, str):
            raise TypeError("channels must be a sequence of patterns, not one string")
        claims["channels"] = list(channels)
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    if admin:
        claims["gateway_admin"] = True
    return jwt.encode(claims, key, algorithm="HS256")


def load_or_create_dev_secret(data_dir: str) -> str:
    """The HS256 secret kept in ``<data_dir>/dev-secret``, created on first use.

    A new secret is ``secrets.token_urlsafe(32)`` written to a private temporary file
    (mode 0600, directories created with 0700) and linked into place atomically, so
    concurrent first starts agree on one secret and a reader never sees a partial
    file. Blocking file I/O: call it at startup (or via ``trio.to_thread``).
    Raises :class:`~gateway.config.SettingsError` if the file exists but is empty or
    too short to be an HS256 key.
    """
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    path = os.path.join(data_dir, DEV_SECRET_FILE)
    if not os.path.exists(path):
        _create_secret_file(path)
    with open(path, encoding="utf-8") as fh:
        secret = fh.read().strip()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"{path} holds no usable secret (under {MIN_SECRET_BYTES} bytes); "
            "delete it to generate a new one"
        )
    return secret


def _create_secret_file(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # someone else won the race: use theirs
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
