"""Value types handed out by the verifier: who a token says the caller is."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["Identity", "VerifierStatistics"]


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """The verified identity behind a token.

    Only :class:`~gateway.auth.TokenVerifier` builds these, and only after the signature
    and every time/issuer/audience rule passed, so holding one means the claims are
    authentic. ``user`` is always the ``sub`` claim (stable and unique per issuer);
    names such as Cognito's ``cognito:username`` are display-only (:attr:`display_name`)
    and must never be used for authorization.
    """

    user: str
    """The ``sub`` claim: non-empty, at most 128 characters."""
    channels: tuple[str, ...]
    """``fnmatch`` glob patterns from the ``channels`` claim; ``("*",)`` when absent."""
    expires_at: float | None
    """The ``exp`` claim in unix seconds; connections should be closed after it."""
    claims: Mapping[str, Any] = dataclasses.field(hash=False, repr=False)
    """Every verified claim, read-only."""

    def can_access(self, channel: str) -> bool:
        """True if ``channel`` matches one of :attr:`channels` (case-sensitive glob).

        An empty ``channels`` claim grants nothing; an absent one grants everything.
        """
        return any(fnmatch.fnmatchcase(channel, pattern) for pattern in self.channels)

    @property
    def admin(self) -> bool:
        """The ``gateway_admin`` claim is ``true``: may revoke access (REST)."""
        return self.claims.get("gateway_admin") is True

    @property
    def display_name(self) -> str:
        """A human-facing name: ``cognito:username``, else ``preferred_username``, else ``user``.

        Display only: two users may share one; authorize by :attr:`user`.
        """
        for claim in ("cognito:username", "preferred_username"):
            value = self.claims.get(claim)
            if isinstance(value, str) and value:
                return value[:128]
        return self.user


class VerifierStatistics(msgspec.Struct, frozen=True):
    """A snapshot of :meth:`TokenVerifier.statistics`; all but ``jwks_keys`` only grow."""

    verified: int = 0
    """Tokens accepted."""
    refused: int = 0
    """Tokens refused for any reason (including JWKS unavailable)."""
    jwks_fetches: int = 0
    """JWKS fetch attempts, successful or not."""
    jwks_errors: int = 0
    """JWKS fetch attempts that failed (network, HTTP status, bad document)."""
    jwks_keys: int = 0
    """Signing keys currently cached."""
