from __future__ import annotations

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, TextMessage

from gateway.protocol import build_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
@pytest.mark.parametrize("binary", [False, True])
def test_frames_parse_as_one_complete_message(size: int, binary: bool) -> None:
    payload = b"a" * size
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(build_frame(payload, binary))
    events = list(client.events())
    assert len(events) == 1
    ev = events[0]
    if binary:
        assert isinstance(ev, BytesMessage)
        data = bytes(ev.data)
    else:
        assert isinstance(ev, TextMessage)
        data = ev.data.encode()
    assert ev.message_finished
    assert data == payload
