"""Token verification: who a WebSocket or REST caller is, and which channels they may use.

:class:`TokenVerifier` checks HS256 tokens against a shared secret and RS256 tokens
against a JWKS URL (AWS Cognito shape) and returns an :class:`Identity`, or raises
:class:`~gateway.errors.AuthError` saying why. :func:`mint_dev_token` and
:func:`load_or_create_dev_secret` serve the no-configuration laptop setup.
"""

from __future__ import annotations

from gateway.auth._identity import Identity, VerifierStatistics
from gateway.auth.jwt import TokenVerifier, load_or_create_dev_secret, mint_dev_token

__all__ = [
    "Identity",
    "TokenVerifier",
    "VerifierStatistics",
    "load_or_create_dev_secret",
    "mint_dev_token",
]
