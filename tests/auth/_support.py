"""Helpers for the auth tests: a fake clock, hand-built tokens, RSA keys, a real JWKS server."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import socket
from typing import Any

import h11
import jwt
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SECRET = "auth-test-secret-0123456789abcdef-XYZ"
OTHER_SECRET = "another-secret-0123456789abcdef-XYZ!"
NOW = 1_700_000_000.0
ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TestPool"
CLIENT_ID = "3n4b5urk1ft4fl3mg5e62d9ado"


class FakeClock:
    """A clock the test moves by hand: ``clock()`` returns ``clock.now``."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims at :data:`NOW`; ``name=None`` removes a claim."""
    base: dict[str, Any] = {"sub": "alice", "iat": int(NOW), "exp": int(NOW) + 3600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def hmac_token(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """An HMAC-SHA256 token signed with arbitrary key bytes (PyJWT refuses PEM/JWK keys)."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def raw_token(header: Any, payload: Any, signature: bytes = b"not-a-signature") -> str:
    return f"{b64json(header)}.{b64json(payload)}.{b64(signature)}"


class RsaKey:
    """An RSA signing key with a kid, its public JWK and PEM."""

    def __init__(self, kid: str, bits: int = 2048) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=bits)

    def jwk(self, **overrides: Any) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()

        def enc(n: int) -> str:
            return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))

        jwk: dict[str, Any] = {
            "alg": "RS256",
            "e": enc(numbers.e),
            "kid": self.kid,
            "kty": "RSA",
            "n": enc(numbers.n),
            "use": "sig",
        }
        jwk.update(overrides)
        return {k: v for k, v in jwk.items() if v is not None}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, payload: dict[str, Any], *, kid: str | None = "", alg: str = "RS256") -> str:
        headers: dict[str, Any] = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(payload, self.private, algorithm=alg, headers=headers)


def jwks(*keys: RsaKey) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


class JwksServer:
    """A real HTTP/1.1 server on 127.0.0.1 (trio + h11) serving a mutable JWKS document.

    ``requests`` counts the requests it answered (or swallowed when ``hang`` is set).
    """

    def __init__(self) -> None:
        self.document: Any = {"keys": []}
        self.body: bytes | None = None  # raw body, overrides ``document``
        self.status = 200
        self.hang = False
        self.requests = 0
        self.url = ""

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]
            self.url = f"http://127.0.0.1:{port}/eu-west-1_TestPool/.well-known/jwks.json"
            task_status.started()

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    break
                return
            self.requests += 1
            if self.hang:
                await trio.sleep_forever()
            body = self.body if self.body is not None else json.dumps(self.document).encode()
            headers = [
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
                ("connection", "close"),
            ]
            await stream.send_all(conn.send(h11.Response(status_code=self.status, headers=headers)))
            await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))


def closed_port_url() -> str:
    """A URL on a loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/.well-known/jwks.json"
