"""Shared fixtures: a real gateway node on loopback ports, tokens, a raw protocol client."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway, open_gateway
from gateway.auth import mint_dev_token
from gateway.config import Limits, Settings

SECRET = "test-secret-0123456789abcdef0123456789"


def token(user: str, **kw: Any) -> str:
    return mint_dev_token(SECRET, user, **kw)


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    limits = kw.pop("limits", Limits())
    base = Settings(
        ws_port=0,
        http_port=0,
        data_dir=str(tmp_path),
        jwt_secret=SECRET,
        drain_timeout=3.0,
        limits=limits,
    )
    return dataclasses.replace(base, **kw)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async with open_gateway(settings) as gw:
        yield gw
