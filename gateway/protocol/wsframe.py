"""Build server-to-client WebSocket frames once, to be written to many sockets.

Server frames are never masked (RFC 6455 5.1) and we never negotiate extensions, so the
bytes of one frame are identical for every recipient using the same codec: fan-out builds
them once per message and writes the same ``bytes`` object to each socket.
"""

from __future__ import annotations

import struct

__all__ = ["OP_BINARY", "OP_TEXT", "build_frame"]

OP_TEXT = 0x1
OP_BINARY = 0x2
_FIN = 0x80
_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")


def build_frame(payload: bytes, binary: bool) -> bytes:
    """Return one complete unmasked, unfragmented data frame carrying ``payload``."""
    b0 = _FIN | (OP_BINARY if binary else OP_TEXT)
    n = len(payload)
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return _H16.pack(b0, 126, n) + payload
    return _H64.pack(b0, 127, n) + payload
