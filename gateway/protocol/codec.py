"""Codecs: JSON (text frames, for browsers) and MessagePack (binary frames, for SDKs).

The codec is chosen by WebSocket subprotocol. Each codec holds one reused encoder and
decoder. Every decode failure, including invalid UTF-8 inside strings (msgspec 0.22
raises a plain ``UnicodeDecodeError`` for it, 0.23 a ``DecodeError``), is translated
here into a :class:`ProtocolViolation` with a stable code: nothing else leaks out.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from gateway.errors import ErrorCode, ProtocolViolation
from gateway.protocol.frames import ClientFrame, ClientFrames, ServerFrame, ServerFrames

__all__ = ["CODECS", "JSON", "MSGPACK", "Codec", "negotiate"]


class Codec:
    """Encode server frames and decode client frames for one wire format."""

    __slots__ = ("_cdec", "_enc", "_sdec", "binary", "index", "subprotocol")

    def __init__(self, subprotocol: str, binary: bool, index: int) -> None:
        self.subprotocol = subprotocol
        self.binary = binary
        self.index = index  # slot in per-message encoded-frame caches
        self._enc: Any
        self._cdec: Any
        self._sdec: Any
        if binary:
            self._enc = msgspec.msgpack.Encoder()
            self._cdec = msgspec.msgpack.Decoder(ClientFrames)
            self._sdec = msgspec.msgpack.Decoder(ServerFrames)
        else:
            self._enc = msgspec.json.Encoder()
            self._cdec = msgspec.json.Decoder(ClientFrames)
            self._sdec = msgspec.json.Decoder(ServerFrames)

    def encode(self, frame: ServerFrame | ClientFrame) -> bytes:
        data: bytes = self._enc.encode(frame)
        return data

    def decode_client(self, data: bytes | str) -> ClientFrame:
        """Decode one client frame or raise :class:`ProtocolViolation`."""
        frame: ClientFrame = _decode(self._cdec, data)
        return frame

    def decode_server(self, data: bytes | str) -> ServerFrame:
        """Decode one server frame (used by the SDK) or raise :class:`ProtocolViolation`."""
        frame: ServerFrame = _decode(self._sdec, data)
        return frame

    def __repr__(self) -> str:
        return f"Codec({self.subprotocol!r})"


def _decode(decoder: Any, data: bytes | str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if text.endswith("`$.type`") and "Invalid value" in text:
            raise ProtocolViolation(
                f"unknown frame type: {text}", code=ErrorCode.UNKNOWN_TYPE
            ) from None
        if "Object missing required field `type`" in text and "`$`" not in text[:-3]:
            raise ProtocolViolation(
                "frame has no 'type' field", code=ErrorCode.UNKNOWN_TYPE
            ) from None
        raise ProtocolViolation(text, code=ErrorCode.INVALID_FIELD) from None
    except msgspec.DecodeError as exc:
        if "utf-8" in str(exc).lower():  # msgspec >= 0.23 reports bad UTF-8 this way
            raise ProtocolViolation(
                "frame contains invalid UTF-8", code=ErrorCode.BAD_ENCODING
            ) from None
        raise ProtocolViolation(f"malformed frame: {exc}", code=ErrorCode.BAD_FRAME) from None
    except UnicodeDecodeError:  # msgspec 0.22 raises this for bad UTF-8 inside strings
        raise ProtocolViolation(
            "frame contains invalid UTF-8", code=ErrorCode.BAD_ENCODING
        ) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ProtocolViolation(f"malformed frame: {exc}", code=ErrorCode.BAD_FRAME) from None


JSON: Final = Codec("gateway.v1.json", binary=False, index=0)
MSGPACK: Final = Codec("gateway.v1.msgpack", binary=True, index=1)
CODECS: Final = {JSON.subprotocol: JSON, MSGPACK.subprotocol: MSGPACK}


def negotiate(offered: list[str]) -> Codec | None:
    """Pick the first offered subprotocol we speak. No offer at all means JSON.

    Returns ``None`` if the client offered subprotocols but none of ours.
    """
    if not offered:
        return JSON
    for name in offered:
        codec = CODECS.get(name)
        if codec is not None:
            return codec
    return None
