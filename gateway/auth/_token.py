"""Synchronous token checks that need no key: structure before, claims after the signature.

Every failure is an :class:`~gateway.errors.AuthError` whose message says why and never
contains the token, a claim value or a secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import types
from collections.abc import Mapping
from typing import Any

from gateway.auth._identity import Identity
from gateway.errors import AuthError

__all__ = [
    "MAX_CHANNEL_PATTERNS",
    "MAX_PATTERN_LEN",
    "MAX_SUB_LEN",
    "MAX_TOKEN_BYTES",
    "ParsedToken",
    "check_claims",
    "describe_alg",
    "parse_token",
]

MAX_TOKEN_BYTES = 8192
MAX_SUB_LEN = 128
MAX_CHANNEL_PATTERNS = 100
MAX_PATTERN_LEN = 128
MAX_KID_LEN = 256

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# Algorithm names that may be echoed in an error message (all registered JWS names).
_ECHOABLE_ALG = re.compile(r"none|[HRP]S(256|384|512)|ES(256K?|384|512)|EdDSA|Ed25519|Ed448")


class ParsedToken:
    """A structurally valid JWS compact token; nothing in it is verified yet."""

    __slots__ = ("alg", "header", "kid")

    def __init__(self, header: dict[str, Any], alg: str, kid: str | None) -> None:
        self.header = header
        self.alg = alg
        self.kid = kid


def _segment(part: str, what: str) -> bytes:
    if _B64URL.fullmatch(part) is None or len(part) % 4 == 1:
        raise AuthError(f"malformed token: bad base64 in the {what}")
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise AuthError(f"malformed token: bad base64 in the {what}") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != part.encode():  # non-canonical tail bits
        raise AuthError(f"malformed token: bad base64 in the {what}")
    return raw


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise AuthError(f"malformed token: the {what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise AuthError(f"malformed token: the {what} is not a JSON object")
    return value


def describe_alg(alg: object) -> str:
    """``"unsupported algorithm"``, naming it only if it is a registered JWS name."""
    if isinstance(alg, str) and _ECHOABLE_ALG.fullmatch(alg):
        return f"unsupported algorithm {alg!r}"
    return "unsupported algorithm"


def parse_token(token: object) -> ParsedToken:
    """Check size and shape, decode the header, and check that the payload is a JSON object.

    Refuses: non-strings, more than :data:`MAX_TOKEN_BYTES`, non-ASCII, anything but three
    dot-separated base64url segments (so JWE and unsecured tokens too), headers or payloads
    that are not JSON objects, a missing or non-string ``alg``, a non-string ``kid``.
    """
    if not isinstance(token, str):
        raise AuthError("malformed token: not a string")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError(f"malformed token: larger than {MAX_TOKEN_BYTES} bytes")
    if not token:
        raise AuthError("malformed token: empty")
    if not token.isascii():
        raise AuthError("malformed token: not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("malformed token: expected 3 dot-separated segments")
    header = _json_object(_segment(parts[0], "header"), "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise AuthError("malformed token: the header has no 'alg'")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LEN):
        raise AuthError("malformed token: the header 'kid' is not a short non-empty string")
    _json_object(_segment(parts[1], "payload"), "payload")
    _segment(parts[2], "signature")  # may be empty: that is a bad signature, not malformed
    return ParsedToken(header, alg, kid)


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(f"malformed claim {name!r}: not a number")
    return float(value)


def _check_audience(claims: Mapping[str, Any], audience: str) -> None:
    if "aud" in claims:
        aud = claims["aud"]
        if isinstance(aud, str):
            ok = aud == audience
        elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            ok = audience in aud
        else:
            raise AuthError("malformed claim 'aud': not a string or a list of strings")
    else:
        # Cognito access tokens carry the app client id in 'client_id' and have no 'aud'.
        ok = claims.get("client_id") == audience
    if not ok:
        raise AuthError("wrong audience")


def _channels(claims: Mapping[str, Any]) -> tuple[str, ...]:
    if "channels" not in claims:
        return ("*",)
    value = claims["channels"]
    if not isinstance(value, list):
        raise AuthError("invalid 'channels' claim: not a list of strings")
    if len(value) > MAX_CHANNEL_PATTERNS:
        raise AuthError(f"invalid 'channels' claim: more than {MAX_CHANNEL_PATTERNS} patterns")
    for pattern in value:
        if not isinstance(pattern, str):
            raise AuthError("invalid 'channels' claim: not a list of strings")
        if not pattern or len(pattern) > MAX_PATTERN_LEN:
            raise AuthError(
                f"invalid 'channels' claim: a pattern is empty or over {MAX_PATTERN_LEN} chars"
            )
    return tuple(value)


def check_claims(
    claims: dict[str, Any], *, now: float, leeway: float, issuer: str, audience: str
) -> Identity:
    """Apply the claim rules to a payload whose signature was verified; build the Identity.

    ``exp`` is required (``exp <= now - leeway`` is expired); ``nbf`` and ``iat`` are
    optional (``> now + leeway`` is not yet valid); ``iss`` must equal ``issuer`` and
    ``aud`` (or Cognito's ``client_id`` when there is no ``aud``) must match ``audience``
    when those are non-empty; ``sub`` must be a non-empty string of at most 128 chars.
    """
    exp = _numeric(claims, "exp")
    if exp is None:
        raise AuthError("token has no expiry ('exp')")
    nbf = _numeric(claims, "nbf")
    iat = _numeric(claims, "iat")
    if exp <= now - leeway:
        raise AuthError("token expired")
    if nbf is not None and nbf > now + leeway:
        raise AuthError("token not yet valid ('nbf' is in the future)")
    if iat is not None and iat > now + leeway:
        raise AuthError("token not yet valid ('iat' is in the future)")
    if issuer and claims.get("iss") != issuer:
        raise AuthError("wrong issuer")
    if audience:
        _check_audience(claims, audience)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("token has no subject ('sub')")
    if len(sub) > MAX_SUB_LEN:
        raise AuthError(f"invalid subject: longer than {MAX_SUB_LEN} chars")
    return Identity(
        user=sub,
        channels=_channels(claims),
        expires_at=exp,
        claims=types.MappingProxyType(claims),
    )
