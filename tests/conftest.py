"""Shared fixtures: a real gateway node on loopback ports, tokens, a raw protocol client."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway, open_gateway
from gateway.auth import mint_dev_token
from gateway.config import Limits, Settings
from tests.services import RedisCluster, RedisServer

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


# -- real Redis servers (tests/services.py) ---------------------------------------------------
# No mocks and no skips: without redis-server/redis-cli these fixtures fail with a message
# saying what is missing (./scripts/test installs it).


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One standalone Redis shared by the whole session: use unique keys and channels."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, brought back up if an earlier test paused or stopped it."""
    if redis_server.paused:
        redis_server.resume()
    if not redis_server.running or not redis_server.ping():
        redis_server.restart()
    return redis_server.url


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private standalone Redis for fault tests (stop, kill, pause, restart it freely)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One 3-master Redis Cluster shared by the session; ``.url`` is a seed node."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# -- moto's server: a real local DynamoDB/S3 API (tests/services.py) --------------------------
# No mocks and no skips: if moto cannot start, these fixtures fail saying why.

from tests.services import MotoServer  # noqa: E402


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server shared by the whole session: use unique table prefixes."""
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"moto server could not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_url(moto_server: MotoServer) -> str:
    """The shared moto server's URL, restarted if an earlier test paused or stopped it (a
    restart comes back empty: create the tables you need in each test)."""
    if moto_server.paused:
        moto_server.resume()
    if not moto_server.running or not moto_server.ping():
        try:
            moto_server.restart()
        except RuntimeError as exc:
            pytest.fail(f"moto server could not restart: {exc}", pytrace=False)
    return moto_server.url
