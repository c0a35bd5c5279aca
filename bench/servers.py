"""Start, watch and stop the servers under test, each pinned to the server core.

Every server listens on 127.0.0.1 only, on a port picked here, and is started fresh for
every measurement so one run's leftovers never bias the next.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.common import ROOT, SERVER_CORE, free_port, pin, raise_nofile, wait_for_port

LABELS = {
    "gateway": "gateway (trio + wsproto)",
    "websockets": "websockets.broadcast (uvloop)",
    "socketio": "python-socketio (uvicorn + uvloop)",
}
SERVERS = tuple(LABELS)
BASELINE = "websockets"


class ServerStartError(RuntimeError):
    """The server did not come up; the message carries the tail of its log."""


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    workdir: Path
    loadgen_env: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _processes(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def cpu_times(self) -> tuple[float, float]:
        """User and system CPU seconds of the server process and any children it started."""
        user = system = 0.0
        with contextlib.suppress(psutil.Error):
            for p in self._processes():
                t = p.cpu_times()
                user += t.user
                system += t.system
        return user, system

    def cpu_seconds(self) -> float:
        return sum(self.cpu_times())

    def memory(self) -> dict[str, int]:
        """RSS and USS (bytes) of the server process tree."""
        rss = uss = 0
        with contextlib.suppress(psutil.Error):
            for p in self._processes():
                info = p.memory_full_info()
                rss += info.rss
                uss += info.uss
        return {"rss": rss, "uss": uss}

    def log_tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGINT, then SIGTERM, then SIGKILL; each step bounded in time. Removes the
        server's temporary directory (data and log) afterwards."""
        for sig, wait in ((signal.SIGINT, 8), (signal.SIGTERM, 4), (signal.SIGKILL, 4)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _command(name: str, port: int, data_dir: Path) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    extra: dict[str, str] = {}
    if name == "websockets":
        return [sys.executable, "-m", "bench.peers.ws_broadcast", "--port", str(port)], env
    if name == "socketio":
        return [sys.executable, "-m", "bench.peers.sio_room", "--port", str(port)], env
    if name == "gateway":
        secret = secrets.token_hex(32)
        extra = {
            "GATEWAY_WS_PORT": str(port),
            "GATEWAY_HTTP_PORT": str(free_port()),
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_JWT_SECRET": secret,
            "GATEWAY_LOG_LEVEL": "WARNING",
            # the publisher sends up to a few hundred frames/s; the default limit is 50/s
            "GATEWAY_RATE_PER_SECOND": "2000",
            "GATEWAY_RATE_BURST": "2000",
            "GATEWAY_MAX_CONNECTIONS": "60000",
        }
        env.update(extra)
        script = Path(sys.executable).with_name("gateway")
        return [str(script), "serve"], env
    raise ValueError(f"unknown server {name!r}")


def start_server(name: str, ready_timeout: float = 30.0) -> Server:
    """Start ``name`` pinned to the server core; return once its port accepts connections."""
    raise_nofile()  # inherited by the child
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    port = free_port()
    argv, env = _command(name, port, workdir / "data")
    (workdir / "data").mkdir()
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: pin(SERVER_CORE),  # noqa: PLW1509 - no threads started yet
        )
    loadgen_env = {"BENCH_JWT_SECRET": env.get("GATEWAY_JWT_SECRET", "")}
    server = Server(name, port, proc, log_path, workdir, loadgen_env)
    if not wait_for_port(port, ready_timeout, server.alive):
        tail = server.log_tail()
        last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "(empty log)")
        server.stop()
        raise ServerStartError(
            f"{name} did not accept connections on 127.0.0.1:{port} within {ready_timeout:g}s "
            f"(exit code {proc.poll()}): {last.strip()}\nlog tail:\n{tail}"
        )
    return server
