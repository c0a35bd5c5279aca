from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from tests.client.fake_gateway import FakeGateway


@pytest.fixture
async def fake(nursery: trio.Nursery) -> AsyncIterator[FakeGateway]:
    gw = FakeGateway()
    await gw.start(nursery)
    yield gw
