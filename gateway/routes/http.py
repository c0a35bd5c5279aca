"""Serve the REST app on hypercorn (trio worker), contained.

hypercorn issue #225: a WebSocket upgrade followed by a stray byte can end the whole
hypercorn server. Three layers keep the node alive: :func:`guard_hypercorn_225` fixes the
double response at its root; :func:`no_websockets` keeps WebSocket scopes away from the
REST app; and ``serve_rest`` runs hypercorn under a supervisor loop on a listening socket
we own, so if hypercorn's serve ever exits with an error anyway, it is logged and
restarted on the same socket. The node itself never dies of it.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

__all__ = ["guard_hypercorn_225", "no_websockets", "serve_rest"]

log = logging.getLogger("gateway.http")


def no_websockets(app: Any) -> Any:
    """ASGI wrapper: WebSocket scopes never reach the REST app.

    The connection is refused by returning without sending anything: hypercorn then
    answers the upgrade itself, so no second response can race with the 400 hypercorn
    sends for a stray byte (the h11 ``LocalProtocolError`` of hypercorn #225)."""

    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # hypercorn answers 403
            return
        await app(scope, receive, send)

    return wrapper


def guard_hypercorn_225() -> None:
    """Make hypercorn's WebSocket stream answer an upgrade at most once.

    In hypercorn 0.18 ``WSStream`` answers a body byte that arrives before the handshake
    completes with ``_send_error_response(400)`` even when a response (the app's rejection,
    or the 500 it sends when the app returns) is already under way; h11 then raises
    ``LocalProtocolError`` outside any handler and the whole server exits. The guard keeps
    the first response and drops the later ones. Idempotent; covered by tests/routes.
    """
    from hypercorn.protocol import ws_stream

    stream_cls: Any = ws_stream.WSStream
    if getattr(stream_cls, "_gateway_guarded", False):
        return
    original = stream_cls._send_error_response
    handshake = ws_stream.ASGIWebsocketState.HANDSHAKE

    async def send_error_response_once(self: Any, status_code: int) -> None:
        if getattr(self, "_gateway_responded", False) or self.state != handshake:
            self.closed = True
            return
        self._gateway_responded = True
        await original(self, status_code)

    stream_cls._send_error_response = send_error_response_once
    stream_cls._gateway_guarded = True


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


async def serve_rest(
    app: Any,
    host: str,
    port: int,
    *,
    restarts: list[int] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; reports the bound port. ``restarts`` counts
    contained hypercorn failures (for tests and metrics)."""
    guard_hypercorn_225()
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    started = False
    try:
        while True:
            config = Config()
            config.bind = [f"fd://{os.dup(sock.fileno())}"]
            config.accesslog = None
            config.errorlog = log
            config.keep_alive_timeout = 30
            config.graceful_timeout = 1.0
            config.h11_max_incomplete_size = 16 * 1024
            config.websocket_max_message_size = 1024
            try:
                if not started:
                    started = True
                    task_status.started(bound)
                await serve(no_websockets(app), config, mode="asgi")
                return
            except BaseException:
                if trio.current_effective_deadline() == float("-inf"):
                    raise  # we are being cancelled: shutting down, not a crash
                log.exception("hypercorn exited with an error; restarting it")
                if restarts is not None:
                    restarts.append(1)
                await trio.sleep(0.05)
    finally:
        sock.close()
