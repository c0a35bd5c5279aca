"""Serve the REST app on hypercorn (trio worker), contained.

hypercorn issue #225: a WebSocket upgrade followed by a stray byte can end the whole
hypercorn server. The REST app has no WebSocket routes, and ``serve_rest`` runs hypercorn
under a supervisor loop on a listening socket we own, so if hypercorn's serve ever exits
with an error it is logged and restarted on the same socket; the node itself never dies.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

__all__ = ["serve_rest"]

log = logging.getLogger("gateway.http")


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
                await serve(app, config, mode="asgi")
                return
            except Exception:
                log.exception("hypercorn exited with an error; restarting it")
                if restarts is not None:
                    restarts.append(1)
                await trio.sleep(0.05)
    finally:
        sock.close()
