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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import HOST, ROOT, SERVER_CORE, free_port, pin, raise_nofile, wait_for_port

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


# -- processes of the multi-process benches (crossnode, persist) ----------------------------


def popen(argv: list[str], env: dict[str, str], workdir: Path) -> subprocess.Popen[bytes]:
    """``argv`` pinned to the server core, in its own session, output to workdir/server.log."""
    raise_nofile()  # inherited by the child
    with (workdir / "server.log").open("wb") as log:
        return subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: pin(SERVER_CORE),  # noqa: PLW1509 - no threads started yet
        )


def started(server: Server, ready: Any, what: str, timeout: float = 30.0) -> Server:
    """``server`` once ``ready(timeout)`` says so; else stopped, and ServerStartError."""
    t0 = time.monotonic()
    if not ready(timeout):
        tail = server.log_tail(60)
        code = server.proc.poll()
        server.stop()
        last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "(empty log)")
        state = f"exited with {code}" if code is not None else "still running"
        raise ServerStartError(
            f"{what} not ready after {time.monotonic() - t0:.1f}s ({state}): "
            f"{last.strip()[:300]}\nlog tail:\n{tail}"
        )
    return server


def start_redis() -> Server:
    """A fresh redis-server on a free loopback port: no RDB snapshots, no AOF."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerStartError("redis-server is not on PATH (apt-get install redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    port = free_port()
    argv = [
        binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--daemonize", "no", "--logfile", "", "--maxclients", "10000",
    ]  # fmt: skip
    server = Server(
        "redis", port, popen(argv, dict(os.environ), workdir), workdir / "server.log", workdir
    )

    def ready(timeout: float) -> bool:
        if not wait_for_port(port, timeout, server.alive):
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["redis-cli", "-h", HOST, "-p", str(port), "PING"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if out.stdout.strip() == "PONG":
                return True
            time.sleep(0.1)
        return False

    return started(server, ready, f"redis-server on {port}")


def keep_log(server: Server, dest: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.copyfile(server.log_path, dest)


def log_problems(path: Path) -> list[str]:
    """Lines of a kept server log that look like trouble (warnings, errors, tracebacks)."""
    keys = ("warning", "error", "traceback", "exception", "critical")
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()
        return [
            ln[:300]
            for ln in lines
            if any(k in ln.lower() for k in keys)
            and "DeprecationWarning" not in ln
            and "warnings.warn(" not in ln
        ][:20]
    return []


def redis_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
        for part in out.split():
            if part.startswith("v="):
                return part[2:]
    return "unknown"
