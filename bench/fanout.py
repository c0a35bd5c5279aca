"""Fan-out benchmark: one publisher, N subscribers, the gateway beside two peers.

    python -m bench.fanout --quick     # smoke: N=50, 5 s per run, < 2 min
    python -m bench.fanout             # full: N=100 and 1,000 at 10 and 50 msg/s, < 15 min

For every (N, rate) and every server, a fresh server starts pinned to core 0 and a fresh load
generator (bench/loadgen.py) pinned to core 1 opens the subscribers, warms up, publishes at a
fixed rate and reports delivery latencies. This process reads the server's CPU time (psutil)
when the generator announces the start and the end of the measured window. Results go to
bench/results/fanout.{json,md,png} (``fanout-quick.*`` with --quick).
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

import psutil

from bench.common import (
    LOADGEN_CORE,
    RESULTS,
    ROOT,
    machine_facts,
    pin,
    raise_nofile,
    refuse_if_busy,
    system_busy_seconds,
    wait_quiet,
)
from bench.report import fanout_markdown, fanout_plot
from bench.servers import BASELINE, LABELS, SERVERS, ServerStartError, start_server

FULL = {"n": [100, 1000], "rates": [10.0, 50.0], "duration": 20.0, "warmup": 3.0, "repeat": 2}
QUICK = {"n": [50], "rates": [10.0], "duration": 5.0, "warmup": 1.0, "repeat": 1}


def read_lines(proc: subprocess.Popen[str], deadline: float) -> Any:
    """Yield the generator's stdout lines until it exits or ``deadline`` (monotonic) passes."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                if proc.poll() is not None:
                    return
                continue
            line = proc.stdout.readline()
            if not line:
                return
            yield line.rstrip("\n")
    finally:
        sel.close()


def run_one(
    name: str, n: int, rate: float, params: dict[str, Any], log_dir: Path
) -> dict[str, Any]:
    """Start ``name``, drive one fan-out measurement against it, stop it; return one row."""
    row: dict[str, Any] = {"server": name, "label": LABELS[name], "n": n, "rate": rate}
    row["quiet_wait_s"] = wait_quiet()
    try:
        server = start_server(name)
    except ServerStartError as exc:
        row["error"] = str(exc)
        row["start_failed"] = True
        return row
    argv = [
        sys.executable, "-m", "bench.loadgen", "fanout",
        "--kind", name, "--port", str(server.port), "--n", str(n), "--rate", str(rate),
        "--duration", str(params["duration"]), "--warmup", str(params["warmup"]),
        "--body-bytes", str(params["body_bytes"]),
    ]  # fmt: skip
    env = {**os.environ, **server.loadgen_env, "PYTHONPATH": str(ROOT)}
    budget = 120 + params["warmup"] + params["duration"] + 30
    gen_log = log_dir / f"loadgen-{name}-{n}-{rate:g}.log"
    try:
        with gen_log.open("w") as err:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True
            )
            gen = psutil.Process(proc.pid)
            cpu0 = cpu1 = None
            deadline = time.monotonic() + budget
            for line in read_lines(proc, deadline):
                if line == "WINDOW_START":
                    cpu0 = server.cpu_times()
                    gen0, sys0 = process_cpu(gen), system_busy_seconds()
                elif line == "WINDOW_END":
                    cpu1 = server.cpu_times()
                    gen1, sys1 = process_cpu(gen), system_busy_seconds()
                elif line.startswith("RESULT "):
                    row.update(json.loads(line[len("RESULT ") :]))
            try:
                proc.wait(max(5.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                row.setdefault("error", f"load generator overran its {budget:g}s budget")
        row["server_alive_after"] = server.alive()
        if not row["server_alive_after"]:
            row["error"] = f"server exited during the run; log tail:\n{server.log_tail()}"
        row["server_memory_after"] = server.memory()
        if cpu0 is not None and cpu1 is not None and "delivered" in row:
            cpu = sum(cpu1) - sum(cpu0)
            row["server_user_s"] = round(cpu1[0] - cpu0[0], 3)
            row["server_sys_s"] = round(cpu1[1] - cpu0[1], 3)
            row["server_cpu_s"] = round(cpu, 4)
            row["server_cpu_pct"] = round(100 * cpu / max(1e-9, row["window_s"]), 1)
            row["cpu_us_per_msg"] = 1e6 * cpu / row["delivered"] if row["delivered"] else None
            # whatever else ran on the machine during the window (should be ~0)
            # softirq (loopback packet processing) is part of the traffic, not foreign
            window = row["window_s"]
            other = (sys1[0] - sys0[0]) - cpu - (gen1 - gen0)
            row["other_cpu_pct"] = round(100 * max(0.0, other) / window, 1)
            row["softirq_pct"] = round(100 * (sys1[1] - sys0[1]) / window, 1)
            row["steal_pct"] = round(100 * (sys1[2] - sys0[2]) / window, 1)
        elif "error" not in row:
            row["error"] = f"incomplete run, see {gen_log}; server log:\n{server.log_tail()}"
    finally:
        server.stop()
    return row


def process_cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """CPU per delivered message relative to the websockets peer at the same N and rate,
    in the same repetition."""
    base = {
        (r["n"], r["rate"], r["rep"]): r.get("cpu_us_per_msg")
        for r in rows
        if r["server"] == BASELINE and r.get("cpu_us_per_msg")
    }
    for r in rows:
        b = base.get((r["n"], r["rate"], r["rep"]))
        mine = r.get("cpu_us_per_msg")
        r["cpu_ratio_vs_websockets"] = round(mine / b, 2) if mine and b else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smoke run: small N, short")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma list of servers")
    p.add_argument("--n", help="comma list of subscriber counts (overrides the preset)")
    p.add_argument("--rates", help="comma list of publish rates per second")
    p.add_argument("--duration", type=float, help="measured seconds per run")
    p.add_argument("--warmup", type=float, help="warm-up seconds per run")
    p.add_argument("--body-bytes", type=int, default=100)
    p.add_argument("--repeat", type=int, help="repetitions of the whole matrix (full: 2)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument(
        "--allow-concurrent",
        action="store_true",
        help="run even if another bench is running (numbers will be spoiled)",
    )
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.n = [int(x) for x in args.n.split(",")] if args.n else preset["n"]
    args.rates = [float(x) for x in args.rates.split(",")] if args.rates else preset["rates"]
    args.duration = args.duration or preset["duration"]
    args.warmup = args.warmup if args.warmup is not None else preset["warmup"]
    args.repeat = args.repeat or preset["repeat"]
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        p.error(f"unknown servers {sorted(unknown)}; choose from {SERVERS}")
    if not 0 < args.duration <= 120 or max(args.n) > 10_000 or not 0 < args.repeat <= 5:
        p.error("duration must be in (0, 120] s, N at most 10,000, repeat in 1..5")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    refuse_if_busy(args.allow_concurrent)
    pin(LOADGEN_CORE)
    raise_nofile()
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / "logs"
    log_dir.mkdir(exist_ok=True)
    stem = "fanout-quick" if args.quick else "fanout"
    params = {
        "duration": args.duration,
        "warmup": args.warmup,
        "body_bytes": args.body_bytes,
        "n": args.n,
        "rates": args.rates,
        "servers": args.servers,
        "repeat": args.repeat,
    }
    started = datetime.now(UTC).isoformat(timespec="seconds")
    rows: list[dict[str, Any]] = []
    failed: set[str] = set()
    plan = [
        (rep, rate, n, name)
        for rep in range(args.repeat)  # repetitions spread over the whole run
        for rate in args.rates
        for n in args.n
        for name in args.servers  # interleaved, so slow drift hits every server alike
    ]
    for rep, rate, n, name in plan:
        if name in failed:
            continue
        print(f"[fanout] #{rep + 1} {name:<10} N={n:<5} rate={rate:g}/s ...", flush=True)
        row = run_one(name, n, rate, params, log_dir)
        row["rep"] = rep
        rows.append(row)
        if "error" in row:
            print(f"[fanout]   failed: {row['error']}", flush=True)
            if row.get("start_failed"):
                failed.add(name)  # it does not even start: skip its other runs
        else:
            print(
                f"[fanout]   delivered {row['delivered']}/{row['expected']} "
                f"p50 {row['p50_ms']:.2f} ms p99 {row['p99_ms']:.2f} ms "
                f"cpu {row.get('cpu_us_per_msg') or 0:.1f} us/msg",
                flush=True,
            )
    add_ratios(rows)
    result = {
        "scenario": "fanout",
        "mode": "quick" if args.quick else "full",
        "started_utc": started,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "params": params,
        "runs": rows,
    }
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = fanout_markdown(result)
    (args.out / f"{stem}.md").write_text(table)
    fanout_plot(result, args.out / f"{stem}.png")
    print()
    print(table)


if __name__ == "__main__":
    main()
