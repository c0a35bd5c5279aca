"""Helpers shared by the bench orchestrators and the load generator.

CPU pinning, file-descriptor limits, free ports, JWTs, percentiles and the machine facts that
go into every result file. Nothing here opens a connection to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SERVER_CORE = 0
LOADGEN_CORE = 1

PACKAGES = (
    "chat-gateway",
    "trio",
    "wsproto",
    "msgspec",
    "websockets",
    "uvloop",
    "python-socketio",
    "python-engineio",
    "uvicorn",
    "psutil",
    "PyJWT",
)


def pin(core: int) -> None:
    """Pin the calling process (and the threads it starts later) to one core, if it exists."""
    available = os.sched_getaffinity(0)
    if core in range(os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})
    elif available:
        os.sched_setaffinity(0, available)


def raise_nofile(wanted: int = 65536) -> int:
    """Raise the soft RLIMIT_NOFILE as far as the hard limit allows; return the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (small race, fine for a bench)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float, alive: Any = None) -> bool:
    """Poll until 127.0.0.1:port accepts a TCP connection, ``alive()`` is false, or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


def system_busy_seconds() -> tuple[float, float, float]:
    """Machine-wide CPU seconds, all cores (/proc/stat): busy in processes (user, nice,
    system, irq), softirq (loopback packet processing lands there), and steal."""
    import psutil

    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0)
    return busy, getattr(t, "softirq", 0.0), getattr(t, "steal", 0.0)


def wait_quiet(limit_pct: float = 15.0, max_wait: float = 90.0) -> float:
    """Wait (at most ``max_wait`` s) until the whole machine is under ``limit_pct`` % busy
    over one second, so a measurement does not start on top of someone else's work.
    Returns the seconds waited."""
    import psutil

    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        if psutil.cpu_percent(interval=1.0) < limit_pct:
            break
    return round(time.monotonic() - start, 1)


def other_benches() -> list[str]:
    """Command lines of bench processes that are not this process or its descendants.

    Two benches at once share the two cores and spoil each other's numbers."""
    import psutil

    me = psutil.Process()
    mine = {me.pid, *(c.pid for c in me.children(recursive=True))}
    with contextlib.suppress(psutil.Error):
        mine.update(p.pid for p in me.parents())
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if proc.info["pid"] not in mine and "-m bench." in cmd:
            found.append(f"{proc.info['pid']}: {cmd[:120]}")
    return found


def refuse_if_busy(allow: bool) -> None:
    """Exit if another bench is running (unless ``allow``): both would pin to cores 0/1."""
    found = other_benches()
    if found and not allow:
        sys.exit(
            "another bench is running on this machine; wait for it (or pass "
            "--allow-concurrent):\n  " + "\n  ".join(found)
        )


def make_token(secret: str, sub: str, ttl: float = 3600.0) -> str:
    """An HS256 JWT with the claims the gateway asks for: ``sub`` and ``exp``."""
    import jwt

    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl)}, secret, algorithm="HS256")


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def machine_facts() -> dict[str, Any]:
    """Cores, CPU model, memory, kernel, Python and package versions, git commit."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem_kb = int(first.split()[1])
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "packages": versions,
        "git_commit": commit,
        "server_core": SERVER_CORE,
        "loadgen_core": LOADGEN_CORE,
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def machine_line(facts: dict[str, Any]) -> str:
    """One markdown line describing the machine, for tables and the README."""
    pk = facts["packages"]
    return (
        f"{facts['cores']} cores ({facts['cpu_model']}), {facts['mem_total_gib']} GiB, "
        f"Linux {facts['kernel']}, {facts['implementation']} {facts['python']}; "
        f"websockets {pk['websockets']}, uvloop {pk['uvloop']}, "
        f"python-socketio {pk['python-socketio']}, uvicorn {pk['uvicorn']}, "
        f"trio {pk['trio']}, wsproto {pk['wsproto']}; gateway commit {facts['git_commit']}; "
        f"server on core {facts['server_core']}, load generator on core {facts['loadgen_core']}"
    )


def python() -> str:
    """The interpreter running the bench (the project's venv when started as documented)."""
    return sys.executable
