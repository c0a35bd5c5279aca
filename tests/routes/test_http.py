"""The REST server survives what kills a bare hypercorn trio server (hypercorn #225)."""

from __future__ import annotations

import contextlib

import httpx
import trio

from gateway.app import Gateway

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bKdPyn3u98cTfZJSh4TNeQ==\r\n\r\n"
)


async def _poke(port: int, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    data = b""
    try:
        await stream.send_all(payload)
        with trio.move_on_after(1.0):
            data = await stream.receive_some(4096)
    except trio.BrokenResourceError:
        pass  # the server may reset a connection that sent garbage
    await stream.aclose()
    return data


async def test_stray_byte_after_upgrade_on_rest_port(gateway: Gateway) -> None:
    with trio.fail_after(20):
        for payload in (
            UPGRADE + b"x",
            UPGRADE.replace(b"\r\n", b"\n") + b"x\n",
            b"\x16\x03\x01" * 50,
        ):
            await _poke(gateway.http_port, payload)
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            for _ in range(3):
                r = await http.get("/healthz")
                assert r.status_code == 200
        # the WebSocket data plane is untouched too
        assert gateway.node.connection_count == 0 or gateway.node.draining is False


async def test_oversized_request_head_and_body(gateway: Gateway) -> None:
    with trio.fail_after(20):
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        reply = await _poke(gateway.http_port, head)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4")
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            r = await http.post("/healthz", content=b"x" * 200_000)
            assert r.status_code in (405, 413)
            assert (await http.get("/healthz")).status_code == 200


async def test_wrapper_prevents_the_crash_and_supervisor_contains_others(gateway: Gateway) -> None:
    """No restart was needed for the stray-byte case; a crash inside hypercorn is restarted."""
    with trio.fail_after(20):
        await _poke(gateway.http_port, UPGRADE + b"x")
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            assert (await http.get("/healthz")).status_code == 200
        assert gateway.rest_restarts == []


async def test_hypercorn_crash_is_restarted_on_the_same_port() -> None:
    from gateway.routes.http import serve_rest

    calls = 0

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        nonlocal calls
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()  # type: ignore[operator]
                kind = "startup" if msg["type"] == "lifespan.startup" else "shutdown"
                await send({"type": f"lifespan.{kind}.complete"})  # type: ignore[operator]
                if kind == "shutdown":
                    return
        calls += 1
        if calls == 1:
            # Escape hypercorn's per-request error handling, as #225 does.
            raise BaseExceptionGroup("boom", [trio.Cancelled._create(), RuntimeError("x")])
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    restarts: list[int] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve_rest(
                    app, "127.0.0.1", 0, restarts=restarts, task_status=task_status
                )
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                with contextlib.suppress(httpx.HTTPError):
                    await http.get("/first")
                while True:
                    try:
                        r = await http.get("/second")
                        break
                    except httpx.HTTPError:
                        await trio.sleep(0.05)
                assert r.text == "ok"
            nursery.cancel_scope.cancel()
    assert calls >= 2
