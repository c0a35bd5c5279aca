"""Codec tests: every decode failure becomes a ProtocolViolation with a stable code."""

from __future__ import annotations

import msgspec
import pytest

from gateway.errors import ErrorCode, ProtocolViolation
from gateway.model import Position
from gateway.protocol import JSON, MSGPACK, negotiate
from gateway.protocol import frames as f


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", ErrorCode.BAD_FRAME),
        (b"", ErrorCode.BAD_FRAME),
        (b'{"type":"auth"', ErrorCode.BAD_FRAME),
        (b'{"type":"nope"}', ErrorCode.UNKNOWN_TYPE),
        (b'{"token":"x"}', ErrorCode.UNKNOWN_TYPE),
        (b'{"type":"auth"}', ErrorCode.INVALID_FIELD),
        (b'{"type":"auth","token":""}', ErrorCode.INVALID_FIELD),
        (b'{"type":"auth","token":7}', ErrorCode.INVALID_FIELD),
        (b'{"type":"subscribe","channel":"has space"}', ErrorCode.INVALID_FIELD),
        (b'{"type":"subscribe","channel":"trailing\\n"}', ErrorCode.INVALID_FIELD),
        (b'{"type":"subscribe","channel":"' + b"a" * 129 + b'"}', ErrorCode.INVALID_FIELD),
        (b'{"type":"publish","channel":"c","cmid":"","body":"x"}', ErrorCode.INVALID_FIELD),
        (b'{"type":"publish","channel":"c","cmid":"1","body":""}', ErrorCode.INVALID_FIELD),
        (b'{"type":"ping","nonce":-1}', ErrorCode.INVALID_FIELD),
        (b"[1,2,3]", ErrorCode.INVALID_FIELD),
        (b'{"type":"auth","token":"\xff\xfe"}', ErrorCode.BAD_ENCODING),
        (b'{"type":"auth","token":"\xed\xa0\x80"}', ErrorCode.BAD_ENCODING),
    ],
)
def test_json_decode_errors(raw: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolViolation) as info:
        JSON.decode_client(raw)
    assert info.value.code == code
    assert info.value.message


def test_msgpack_invalid_utf8_and_garbage() -> None:
    bad_utf8 = b"\x82\xa4type\xa4auth\xa5token\xa2\xff\xfe"
    with pytest.raises(ProtocolViolation) as info:
        MSGPACK.decode_client(bad_utf8)
    assert info.value.code == ErrorCode.BAD_ENCODING
    with pytest.raises(ProtocolViolation) as info:
        MSGPACK.decode_client(b"\xc1")
    assert info.value.code == ErrorCode.BAD_FRAME
    with pytest.raises(ProtocolViolation) as info:
        MSGPACK.decode_client("text frame on a binary codec")
    assert info.value.code in (ErrorCode.BAD_FRAME, ErrorCode.INVALID_FIELD)


def test_deep_nesting_is_refused_not_crashing() -> None:
    raw = b'{"type":"ping","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    try:
        frame = JSON.decode_client(raw)
    except ProtocolViolation:
        return
    assert isinstance(frame, f.Ping)


@pytest.mark.parametrize("codec", [JSON, MSGPACK])
def test_round_trip_every_client_frame(codec: object) -> None:
    frames: list[f.ClientFrame] = [
        f.Auth(token="t"),
        f.Resume(token="t", session="s", positions={"general": Position("e", 4)}),
        f.Subscribe(channel="general", since=Position("e", 3)),
        f.Subscribe(channel="general"),
        f.Unsubscribe(channel="general"),
        f.Publish(channel="general", cmid="c1", body="héllo ✓", thread="e-1"),
        f.Typing(channel="general"),
        f.Ping(nonce=5),
    ]
    for frame in frames:
        assert codec.decode_client(codec.encode(frame)) == frame  # type: ignore[attr-defined]


@pytest.mark.parametrize("codec", [JSON, MSGPACK])
def test_round_trip_server_frames(codec: object) -> None:
    frame = f.MessageEvent(
        channel="c", offset=3, epoch="e", id="e-3", sender="alice", cmid="x", body="b", ts=1
    )
    assert codec.decode_server(codec.encode(frame)) == frame  # type: ignore[attr-defined]
    err = f.Error(code="forbidden", message="no", ref="x", retryable=False)
    assert codec.decode_server(codec.encode(err)) == err  # type: ignore[attr-defined]


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    frame = JSON.decode_client(b'{"type":"ping","nonce":1,"future_field":{"a":1}}')
    assert frame == f.Ping(nonce=1)


def test_json_wire_shape_is_documented_shape() -> None:
    data = msgspec.json.decode(
        JSON.encode(f.Ack(cmid="c", channel="g", offset=1, epoch="e", id="e-1"))
    )
    assert data == {
        "type": "ack",
        "cmid": "c",
        "channel": "g",
        "offset": 1,
        "epoch": "e",
        "id": "e-1",
    }


def test_negotiate() -> None:
    assert negotiate([]) is JSON
    assert negotiate(["gateway.v1.msgpack"]) is MSGPACK
    assert negotiate(["other", "gateway.v1.json"]) is JSON
    assert negotiate(["other"]) is None
