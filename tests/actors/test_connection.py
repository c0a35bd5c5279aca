"""Connection actor over real sockets: the protocol, and every kind of bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jwt
import msgspec
import pytest
import trio
from wsproto.events import AcceptConnection, Ping, RejectConnection, TextMessage

from gateway.app import Gateway, open_gateway
from gateway.config import Limits
from gateway.errors import CloseCode
from gateway.protocol import MSGPACK
from gateway.protocol import frames as f
from tests.conftest import SECRET, make_settings, token
from tests.rawclient import raw_client
from tests.rawsocket import RawSocket


async def test_hello_auth_subscribe_publish_ack(gateway: Gateway) -> None:
    with trio.fail_after(10):
        async with raw_client(gateway.ws_url, token=token("alice")) as c:
            replay, sub = await c.subscribe("general")
            assert replay == [] and sub.offset == 0 and sub.epoch
            await c.send(f.Publish(channel="general", cmid="m1", body="hello"))
            got = {type(x): x for x in (await c.recv(), await c.recv())}
            ack, msg = got[f.Ack], got[f.MessageEvent]
            assert isinstance(ack, f.Ack) and isinstance(msg, f.MessageEvent)
            assert (ack.offset, ack.epoch, ack.duplicate) == (1, sub.epoch, False)
            assert (msg.offset, msg.sender, msg.body, msg.cmid) == (1, "alice", "hello", "m1")
            assert msg.id == ack.id


async def test_msgpack_codec_end_to_end(gateway: Gateway) -> None:
    with trio.fail_after(10):
        async with raw_client(gateway.ws_url, codec=MSGPACK, token=token("bob")) as c:
            await c.subscribe("mp")
            await c.send(f.Publish(channel="mp", cmid="x", body="bin ✓"))
            msg = await c.expect(f.MessageEvent, skip=(f.Ack,))
            assert msg.body == "bin ✓"


async def test_duplicate_cmid_creates_one_message(gateway: Gateway) -> None:
    with trio.fail_after(10):
        async with raw_client(gateway.ws_url, token=token("alice")) as c:
            await c.subscribe("dup")
            for _ in range(3):
                await c.send(f.Publish(channel="dup", cmid="same", body="once"))
            acks: list[f.Ack] = []
            msgs: list[f.MessageEvent] = []
            while len(acks) < 3:
                fr = await c.recv()
                if isinstance(fr, f.Ack):
                    acks.append(fr)
                else:
                    assert isinstance(fr, f.MessageEvent), fr
                    msgs.append(fr)
            assert [a.offset for a in acks] == [1, 1, 1]
            assert [a.duplicate for a in acks] == [False, True, True]
            # Exactly one message event: a fresh publish lands at offset 2.
            await c.send(f.Publish(channel="dup", cmid="next", body="two"))
            while True:
                fr = await c.recv()
                if isinstance(fr, f.MessageEvent):
                    msgs.append(fr)
                if isinstance(fr, f.MessageEvent) and fr.cmid == "next":
                    break
            assert [m.offset for m in msgs] == [1, 2]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("not json", "bad_frame"),
        ('{"type":"teleport"}', "unknown_type"),
        ('{"type":"subscribe"}', "invalid_field"),
        ('{"type":"subscribe","channel":"bad channel!"}', "invalid_field"),
        ('{"type":"publish","channel":"g","cmid":"1","body":"x"}', "not_subscribed"),
    ],
)
async def test_bad_frames_get_error_codes_and_connection_survives(
    gateway: Gateway, payload: str, code: str
) -> None:
    with trio.fail_after(10):
        async with raw_client(gateway.ws_url, token=token("alice")) as c:
            await c.ws.send_message(payload)
            err = await c.expect(f.Error)
            assert err.code == code and err.message
            await c.send(f.Ping(nonce=1))
            assert await c.expect(f.Pong) == f.Pong(nonce=1)


async def test_invalid_utf8_in_binary_json_frame(gateway: Gateway) -> None:
    with trio.fail_after(10):
        async with raw_client(gateway.ws_url, token=token("alice")) as c:
            await c.ws.send_message(b'{"type":"subscribe","channel":"\xff"}')
            assert (await c.expect(f.Error)).code == "bad_encoding"


async def test_invalid_utf8_text_frame_closes_1007(gateway: Gateway) -> None:
    with trio.fail_after(10):
        s = await RawSocket.connect(gateway.ws_port)
        assert isinstance(await s.handshake(), AcceptConnection)
        await s.next_frame()  # hello
        await s.send_raw(
            b"\x81\x82abcd" + bytes(b ^ m for b, m in zip(b"\xff\xfe", b"ab", strict=True))
        )
        close = await s.wait_close()
        assert close.code == 1007


async def test_publish_before_auth_is_refused(gateway: Gateway) -> None:
    with trio.fail_after(10):
        async with raw_client(gateway.ws_url) as c:
            await c.send(f.Publish(channel="g", cmid="1", body="x"))
            assert (await c.expect(f.Error)).code == "not_authenticated"
            await c.send(f.Subscribe(channel="g"))
            assert (await c.expect(f.Error)).code == "not_authenticated"


async def test_forbidden_channel(gateway: Gateway) -> None:
    with trio.fail_after(10):
        tok = token("guest", channels=["public-*"])
        async with raw_client(gateway.ws_url, token=tok) as c:
            await c.send(f.Subscribe(channel="secret"))
            err = await c.expect(f.Error)
            assert (err.code, err.channel) == ("forbidden", "secret")
            _, sub = await c.subscribe("public-lobby")
            assert sub.channel == "public-lobby"


def _forge(claims: dict[str, object], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param(lambda: token("a", ttl=-3600), id="expired"),
        pytest.param(lambda: _forge({"sub": "a", "exp": 2**40}, key="x" * 40), id="forged"),
        pytest.param(
            # "none" takes no key: PyJWT reads "" as None, the only key it accepts there
            lambda: jwt.encode({"sub": "a", "exp": 2**40}, "", algorithm="none"),
            id="alg-none",
        ),
        pytest.param(lambda: "garbage.token.here", id="garbage"),
    ],
)
async def test_bad_tokens_close_4001(gateway: Gateway, bad_token: Callable[[], str]) -> None:
    with trio.fail_after(10):
        async with raw_client(gateway.ws_url) as c:
            await c.send(f.Auth(token=bad_token()))
            code, reason = await c.closed()
            assert code == CloseCode.AUTH_FAILED and reason


async def test_oversized_message_closes_1009(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits=Limits(max_message_bytes=1024))
    with trio.fail_after(10):
        async with open_gateway(settings) as gw, raw_client(gw.ws_url, token=token("a")) as c:
            await c.ws.send_message("x" * 5000)
            code, _ = await c.closed()
            assert code == 1009


async def test_too_many_fragments_closes_1008(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits=Limits(max_fragments=10))
    with trio.fail_after(10):
        async with open_gateway(settings) as gw:
            s = await RawSocket.connect(gw.ws_port)
            await s.handshake()
            await s.next_frame()
            for _ in range(50):
                await s.send_event(TextMessage(data="x", message_finished=False))
            close = await s.wait_close()
            assert close.code == 1008


async def test_flood_is_rate_limited_then_closed(tmp_path: Path) -> None:
    limits = Limits(rate_per_second=5, rate_burst=5, rate_strikes=10)
    with trio.fail_after(10):
        async with open_gateway(make_settings(tmp_path, limits=limits)) as gw:
            async with raw_client(gw.ws_url, token=token("a")) as c:
                for i in range(100):
                    try:
                        await c.send(f.Ping(nonce=i))
                    except Exception:
                        break
                codes = []
                code = 0
                try:
                    while True:
                        fr = await c.recv()
                        if isinstance(fr, f.Error):
                            codes.append(fr.code)
                except Exception:
                    code, _ = await c.closed()
                assert "rate_limited" in codes
                assert code == CloseCode.RATE_LIMITED


async def test_auth_timeout_closes_4002(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth_timeout=0.3)
    with trio.fail_after(10):
        async with open_gateway(settings) as gw, raw_client(gw.ws_url) as c:
            code, _ = await c.closed()
            assert code == CloseCode.AUTH_TIMEOUT


async def test_silent_client_is_closed_for_idleness(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, heartbeat_interval=0.3, idle_timeout=1.0)
    with trio.fail_after(10):
        async with open_gateway(settings) as gw:
            s = await RawSocket.connect(gw.ws_port)
            await s.handshake()
            await s.next_frame()
            await s.send_frame(f.Auth(token=token("a")))
            assert isinstance(await s.next_frame(), f.Ready)
            # Never answer the server's pings, never send anything.
            close = await s.wait_close()
            assert close.code == CloseCode.IDLE_TIMEOUT


async def test_handshake_rejections(gateway: Gateway) -> None:
    port = gateway.ws_port
    with trio.fail_after(10):
        s = await RawSocket.connect(port)
        ev = await s.handshake(target="/nope")
        assert isinstance(ev, RejectConnection) and ev.status_code == 404
        s = await RawSocket.connect(port)
        ev = await s.handshake(subprotocols=["chat.v9"])
        assert isinstance(ev, RejectConnection) and ev.status_code == 400
        s = await RawSocket.connect(port)
        ev = await s.handshake(extra=[(b"origin", b"https://evil.example")])
        assert isinstance(ev, RejectConnection) and ev.status_code == 403
        s = await RawSocket.connect(port)
        ev = await s.handshake(extra=[(b"origin", b"http://localhost:3000")])
        assert isinstance(ev, AcceptConnection)
        # Plain HTTP on the WebSocket port gets a 400, not a crash.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 400")


async def test_stray_byte_after_upgrade_does_not_kill_the_node(gateway: Gateway) -> None:
    port = gateway.ws_port
    with trio.fail_after(10):
        s = await RawSocket.connect(port)
        ev = await s.handshake(trailing=b"x")
        assert isinstance(ev, AcceptConnection)
        await s.aclose()
        garbage = await trio.open_tcp_stream("127.0.0.1", port)
        await garbage.send_all(b"\x00\xff" * 100 + b"\r\n\r\n")
        await garbage.aclose()
        async with raw_client(gateway.ws_url, token=token("a")) as c:
            await c.send(f.Ping(nonce=2))
            assert await c.expect(f.Pong) == f.Pong(nonce=2)


async def test_token_expiry_closes_4105(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_gateway(make_settings(tmp_path, jwt_leeway=0.0)) as gw:
            async with raw_client(gw.ws_url, token=token("a", ttl=1.0)) as c:
                code, _ = await c.closed()
                assert code == CloseCode.SESSION_EXPIRED


async def test_hello_announces_limits(gateway: Gateway) -> None:
    with trio.fail_after(10):
        s = await RawSocket.connect(gateway.ws_port)
        await s.handshake()
        hello = await s.next_frame()
        assert isinstance(hello, f.Hello)
        assert hello.limits.max_body_bytes == Limits().max_body_bytes
        assert hello.v == 1 and hello.session


async def test_hello_always_carries_the_protocol_version(gateway: Gateway) -> None:
    with trio.fail_after(10):
        s = await RawSocket.connect(gateway.ws_port)
        await s.handshake()
        ev = await s.next_event()
        assert isinstance(ev, TextMessage)
        assert msgspec.json.decode(ev.data)["v"] == 1


async def test_rate_limited_publish_is_nacked_with_its_cmid(tmp_path: Path) -> None:
    limits = Limits(rate_per_second=0.001, rate_burst=3, rate_strikes=50)
    with trio.fail_after(10):
        async with open_gateway(make_settings(tmp_path, limits=limits)) as gw:
            async with raw_client(gw.ws_url, token=token("a")) as c:
                await c.subscribe("r")  # auth + subscribe use 2 of the 3 tokens
                await c.send(f.Publish(channel="r", cmid="ok", body="x"))
                await c.send(f.Publish(channel="r", cmid="too-fast", body="y"))
                err = await c.expect(f.Error, skip=(f.Ack, f.MessageEvent))
                assert (err.code, err.ref, err.channel, err.retryable) == (
                    "rate_limited",
                    "too-fast",
                    "r",
                    True,
                )


async def test_jwks_outage_closes_with_a_resumable_code(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs_token = jwt.encode({"sub": "a", "exp": 2**40}, key, algorithm="RS256", headers={"kid": "k1"})
    settings = make_settings(tmp_path, jwt_secret="", jwks_url="http://127.0.0.1:9/jwks.json")
    with trio.fail_after(20):
        async with open_gateway(settings) as gw, raw_client(gw.ws_url) as c:
            await c.send(f.Auth(token=rs_token))
            code, _ = await c.closed()
            assert code == CloseCode.AUTH_UNAVAILABLE


async def test_permessage_deflate_is_never_negotiated(gateway: Gateway) -> None:
    """A compressed-frame bomb cannot happen: compression is refused at the handshake,
    and a frame with the RSV1 (compressed) bit set is a protocol error."""
    with trio.fail_after(10):
        s = await RawSocket.connect(gateway.ws_port)
        ext = (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits")
        ev = await s.handshake(extra=[ext])
        assert isinstance(ev, AcceptConnection) and ev.extensions == []
        await s.next_frame()
        # A masked text frame with RSV1 set (as a compressed frame would have).
        await s.send_raw(b"\xc1\x81" + b"\x00\x00\x00\x00" + b"x")
        close = await s.wait_close()
        assert close.code == 1002


async def test_ping_flood_is_rate_limited_and_closed(tmp_path: Path) -> None:
    """WebSocket control frames count against the same rate limit as data frames."""
    limits = Limits(rate_per_second=5, rate_burst=5, rate_strikes=10)
    with trio.fail_after(10):
        async with open_gateway(make_settings(tmp_path, limits=limits)) as gw:
            s = await RawSocket.connect(gw.ws_port)
            await s.handshake()
            await s.next_frame()
            await s.send_raw(b"".join(s.ws.send(Ping(b"p")) for _ in range(200)))
            close = await s.wait_close()
            assert close.code == CloseCode.RATE_LIMITED
