"""A rate-limited cache of RS256 signing keys fetched from a JWKS URL (AWS Cognito shape)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import trio
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from gateway.errors import AuthError, ErrorCode

__all__ = ["JwksCache", "parse_jwks"]

log = logging.getLogger("gateway.auth")

MAX_JWKS_BYTES = 256 * 1024
MAX_JWKS_KEYS = 100
MIN_RSA_BITS = 2048


class JwksFetchError(Exception):
    """The JWKS could not be fetched or had no usable key (message is for logs)."""


_FETCH_ERRORS = (JwksFetchError, httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError)


def parse_jwks(body: bytes) -> dict[str, PyJWK]:
    """Parse a JWKS document into ``{kid: key}`` keeping only usable RS256 signing keys.

    A key is kept when it has a non-empty string ``kid``, ``kty == "RSA"``, no ``d``
    (private part), ``use`` absent or ``"sig"``, ``alg`` absent or ``"RS256"``, and at
    least 2048 bits. Raises :class:`JwksFetchError` if the document is not a JWKS or no
    key is usable (an empty set is treated as a broken endpoint, not as revocation).
    """
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise JwksFetchError("JWKS is not valid JSON") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise JwksFetchError("JWKS has no 'keys' list")
    usable: dict[str, PyJWK] = {}
    for jwk in keys[:MAX_JWKS_KEYS]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or jwk.get("kty") != "RSA" or "d" in jwk:
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
            continue
        try:
            key = PyJWK(jwk, algorithm="RS256")
        except PyJWTError:
            continue
        if not isinstance(key.key, RSAPublicKey) or key.key.key_size < MIN_RSA_BITS:
            continue
        usable[kid] = key
    if not usable:
        raise JwksFetchError("JWKS has no usable RS256 signing key")
    return usable


class JwksCache:
    """Keys from one JWKS URL, fetched lazily, cached, and refreshed on demand.

    Guarantees:

    * A cached key is served without I/O for ``cache_seconds`` after a successful fetch.
    * An unknown ``kid`` (key rotation) or an expired cache triggers a refetch, but fetch
      *attempts* are at least ``min_refresh_interval`` apart whatever the tokens say, and
      concurrent callers share one in-flight fetch: forged tokens cannot hammer the URL.
    * A failed fetch never drops cached keys: a known ``kid`` keeps verifying (stale)
      while the endpoint is down; an unknown one is refused as unavailable (retryable).
    """

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        min_refresh_interval: float,
        fetch_timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self._url = url
        self._cache_seconds = cache_seconds
        self._min_interval = min_refresh_interval
        self._timeout = fetch_timeout
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt
        self._last_ok = False
        self._lock = trio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self.fetches = 0
        self.errors = 0

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._min_interval

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self._cache_seconds

    async def get_key(self, kid: str) -> PyJWK:
        """The key for ``kid``, fetching at most as the class guarantees allow.

        Raises :class:`AuthError` ``"unknown key id"`` if the latest JWKS lacks ``kid``, or
        an ``UNAVAILABLE`` (retryable) one if the keys could not be fetched.
        """
        key = self._keys.get(kid)
        if key is not None and self._fresh(self._clock()):
            return key
        attempts = self.fetches
        async with self._lock:
            # Whoever held the lock before us may just have fetched; don't fetch again.
            if attempts == self.fetches and self._may_fetch(self._clock()):
                await self._refresh()
        key = self._keys.get(kid)
        if key is not None:
            return key
        if not self._last_ok:
            raise AuthError(
                "signing keys unavailable (JWKS fetch failed); retry later",
                code=ErrorCode.UNAVAILABLE,
            )
        raise AuthError("unknown key id")

    async def _refresh(self) -> None:
        self.fetches += 1
        self._attempted_at = self._clock()
        try:
            keys = await self._fetch()
        except _FETCH_ERRORS as exc:
            self.errors += 1
            self._last_ok = False
            reason = str(exc) or type(exc).__name__
            log.warning("JWKS fetch from %s failed: %s", self._url, reason)
            return
        self._keys = keys
        self._fetched_at = self._clock()
        self._last_ok = True
        log.info("JWKS fetched from %s: %d signing keys", self._url, len(keys))

    async def _fetch(self) -> dict[str, PyJWK]:
        if self._closed:
            raise JwksFetchError("verifier is closed")
        if self._client is None:
            # trust_env=False: nothing below `app` reads the environment (design rule 7).
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                follow_redirects=False,
                trust_env=False,
                headers={"Accept": "application/json"},
            )
        body = bytearray()
        with trio.move_on_after(self._timeout) as scope:
            async with self._client.stream("GET", self._url) as response:
                if response.status_code != 200:
                    raise JwksFetchError(f"HTTP status {response.status_code}")
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise JwksFetchError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
        if scope.cancelled_caught:
            raise JwksFetchError(f"timed out after {self._timeout} s")
        return parse_jwks(bytes(body))

    async def aclose(self) -> None:
        """Close the HTTP client; later fetches fail (cached keys keep serving)."""
        self._closed = True
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
