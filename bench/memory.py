"""Idle-memory benchmark: server memory per idle, authenticated, subscribed connection.

    python -m bench.memory                       # 10,000 connections to each server
    python -m bench.memory --connections 2000 --servers websockets

For each server: start it fresh on core 0; open and close a small warm-up batch so one-time
allocations (imports, the channel, caches) are not charged to the connections; read the
server's RSS and USS; open the connections from load-generator processes on core 1 (``idle``
mode of bench/loadgen.py); wait for the numbers to settle; read RSS and USS again. The
difference divided by the number of connections is the user-space cost of one connection
(kernel socket buffers are not in RSS). Writes bench/results/memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    LOADGEN_CORE,
    RESULTS,
    ROOT,
    machine_facts,
    pin,
    raise_nofile,
    refuse_if_busy,
)
from bench.report import memory_markdown
from bench.servers import LABELS, SERVERS, Server, ServerStartError, start_server

TARGET_KB = 16
WARMUP_CONNECTIONS = 200


def spawn_idle(server: Server, count: int, first_index: int) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-m", "bench.loadgen", "idle", "--kind", server.name,
        "--port", str(server.port), "--n", str(count), "--first-index", str(first_index),
        "--hold", "240", "--open-budget", "180",
    ]  # fmt: skip
    env = {**os.environ, **server.loadgen_env, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def collect(
    procs: list[subprocess.Popen[str]], prefix: str, timeout: float
) -> list[dict[str, Any]]:
    """One JSON payload per process from its first stdout line starting with ``prefix``."""
    sel = selectors.DefaultSelector()
    for p in procs:
        assert p.stdout is not None
        sel.register(p.stdout, selectors.EVENT_READ, p)
    found: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(found) < len(procs) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                proc = key.data
                line = proc.stdout.readline()
                if not line:
                    sel.unregister(proc.stdout)
                    found[proc.pid] = {"error": f"exited early (code {proc.poll()})"}
                elif line.startswith(prefix + " "):
                    sel.unregister(proc.stdout)
                    found[proc.pid] = json.loads(line[len(prefix) + 1 :])
    finally:
        sel.close()
    return [found.get(p.pid, {"error": f"no {prefix} line in {timeout:g}s"}) for p in procs]


def release(procs: list[subprocess.Popen[str]]) -> None:
    """Tell the generators to close their connections, then make sure they are gone."""
    for p in procs:
        try:
            assert p.stdin is not None
            p.stdin.write("release\n")
            p.stdin.close()
        except (BrokenPipeError, OSError):
            pass
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def open_batch(server: Server, total: int, procs: int) -> tuple[list[Any], list[dict[str, Any]]]:
    share = [total // procs + (1 if i < total % procs else 0) for i in range(procs)]
    starts = [sum(share[:i]) for i in range(procs)]
    children = [spawn_idle(server, n, first) for n, first in zip(share, starts, strict=True)]
    return children, collect(children, "OPEN", 240)


def measure(name: str, connections: int, procs: int, settle: float) -> dict[str, Any]:
    row: dict[str, Any] = {"server": name, "label": LABELS[name]}
    try:
        server = start_server(name)
    except ServerStartError as exc:
        row["error"] = str(exc)
        return row
    children: list[Any] = []
    try:
        warm, _ = open_batch(server, WARMUP_CONNECTIONS, 1)
        release(warm)
        time.sleep(settle)
        row["before"] = server.memory()
        t0 = time.monotonic()
        children, reports = open_batch(server, connections, procs)
        row["open_s"] = time.monotonic() - t0
        opened = sum(r.get("opened", 0) for r in reports)
        row["connections"] = opened
        row["generators"] = reports
        time.sleep(settle)
        row["after"] = server.memory()
        row["server_alive_after"] = server.alive()
        if opened:
            for kind in ("rss", "uss"):
                delta = row["after"][kind] - row["before"][kind]
                row[f"{kind}_kb_per_conn"] = round(delta / opened / 1024, 2)
        if opened < connections:
            row["error"] = f"opened {opened} of {connections}: {reports}"
    finally:
        release(children)
        server.stop()
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--servers", default=",".join(SERVERS), help=f"comma list of {SERVERS}")
    p.add_argument("--procs", type=int, default=2, help="load-generator processes (core 1)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds before each reading")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--allow-concurrent",
        action="store_true",
        help="run even if another bench is running (numbers will be spoiled)",
    )
    args = p.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    if set(servers) - set(SERVERS) or not 0 < args.connections <= 15_000:
        p.error(f"servers must be among {SERVERS}; connections in 1..15000")
    refuse_if_busy(args.allow_concurrent)
    pin(LOADGEN_CORE)
    raise_nofile()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    rows = []
    for name in servers:
        print(f"[memory] {name}: {args.connections} idle connections ...", flush=True)
        row = measure(name, args.connections, max(1, args.procs), args.settle)
        rows.append(row)
        if "rss_kb_per_conn" in row:
            print(
                f"[memory]   {row['rss_kb_per_conn']:.1f} KB RSS / "
                f"{row['uss_kb_per_conn']:.1f} KB USS per connection "
                f"(opened in {row['open_s']:.1f} s)",
                flush=True,
            )
        if "error" in row:
            print(f"[memory]   error: {row['error']}", flush=True)
    result = {
        "scenario": "idle-memory",
        "started_utc": started,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "params": {
            "connections": args.connections,
            "loadgen_procs": args.procs,
            "settle_s": args.settle,
            "warmup_connections": WARMUP_CONNECTIONS,
            "target_kb": TARGET_KB,
            "servers": servers,
        },
        "runs": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    table = memory_markdown(result)
    (args.out / "memory.md").write_text(table)
    print()
    print(table)


if __name__ == "__main__":
    main()
