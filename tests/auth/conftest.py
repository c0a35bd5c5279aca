"""Fixtures for the auth tests: RSA keys (generated once) and a live JWKS server."""

from __future__ import annotations

import pytest
import trio

from tests.auth._support import JwksServer, RsaKey


@pytest.fixture(scope="session")
def rsa_keys() -> tuple[RsaKey, RsaKey, RsaKey]:
    """Three 2048-bit keys: the pool's current key, the next (rotated) one, an attacker's."""
    return RsaKey("key-2024"), RsaKey("key-2025"), RsaKey("attacker")


@pytest.fixture
async def jwks_server(nursery: trio.Nursery) -> JwksServer:
    server = JwksServer()
    await nursery.start(server.serve)
    return server
