"""Sans-IO wire protocol: frames, codecs, frame builder, session state machine."""

from gateway.protocol.codec import CODECS, JSON, MSGPACK, Codec, negotiate
from gateway.protocol.session import Session
from gateway.protocol.wsframe import build_frame

__all__ = ["CODECS", "JSON", "MSGPACK", "Codec", "Session", "build_frame", "negotiate"]
