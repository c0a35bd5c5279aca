"""The real `gateway` process: serve on the embedded default, SIGTERM drain, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from gateway.app import Gateway
from gateway.errors import CloseCode
from gateway.model import Position
from gateway.protocol import frames as f
from tests.conftest import SECRET, token
from tests.rawclient import raw_client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start(tmp_path: Path) -> tuple[trio.Process, str, str]:
    ws, http = _free_port(), _free_port()
    env = dict(os.environ)
    env.update(
        GATEWAY_WS_PORT=str(ws),
        GATEWAY_HTTP_PORT=str(http),
        GATEWAY_DATA_DIR=str(tmp_path),
        GATEWAY_JWT_SECRET=SECRET,
        GATEWAY_DRAIN_TIMEOUT="5",
        GATEWAY_LOG_LEVEL="INFO",
    )
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    http_url = f"http://127.0.0.1:{http}"
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"{http_url}/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "gateway serve exited during start-up"
            await trio.sleep(0.05)
    return proc, f"ws://127.0.0.1:{ws}/ws", http_url


async def test_sigterm_drains_with_resume_code_and_keeps_acked_messages(tmp_path: Path) -> None:
    with trio.fail_after(60):
        proc, ws_url, _ = await _start(tmp_path)
        codes: list[int] = []
        try:
            async with (
                raw_client(ws_url, token=token("a")) as a,
                raw_client(ws_url, token=token("b")) as b,
            ):
                _, sub = await a.subscribe("drain")
                await b.subscribe("drain")
                for i in range(20):
                    await a.send(f.Publish(channel="drain", cmid=f"d{i}", body=f"d{i}"))
                    await a.expect(f.Ack, skip=(f.MessageEvent,))
                proc.send_signal(signal.SIGTERM)
                for c in (a, b):
                    code, _ = await c.closed()
                    codes.append(code)
            assert await proc.wait() == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert codes == [CloseCode.DRAINING, CloseCode.DRAINING]
        # Everything acked before the drain is there after a restart.
        proc, ws_url, _ = await _start(tmp_path)
        try:
            async with raw_client(ws_url, token=token("a")) as a:
                replay, again = await a.subscribe("drain", since=Position(sub.epoch, 0))
                assert again.epoch == sub.epoch
                assert [m.body for m in replay] == [f"d{i}" for i in range(20)]
        finally:
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0


async def test_readyz_reports_draining(gateway: Gateway) -> None:
    gw = gateway
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gw.http_url) as http:
            assert (await http.get("/readyz")).status_code == 200
            await gw.drain()
            r = await http.get("/readyz")
            assert r.status_code == 503 and r.json()["status"] == "draining"
