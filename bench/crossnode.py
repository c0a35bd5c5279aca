"""Cross-node fan-out: the publisher on node A, N subscribers on node B, joined by Redis.

    python -m bench.crossnode --quick    # smoke: N=10 at 100 and 1,000 msg/s, 4 s per run
    python -m bench.crossnode            # full: N = 10, 100 at 100, 500, 1,000 msg/s, x2 (~50 min)

For every server kind (the gateway on its Redis Streams bus, python-socketio with
``socketio.AsyncRedisManager``, Django Channels with channels-redis) and every (N, rate), it
runs three scenarios, each on fresh processes:

* ``single``: one node in its single-node configuration, no Redis (gateway: the in-process
  bus; python-socketio: the in-memory manager; Channels: ``InMemoryChannelLayer``); the
  publisher and the N subscribers on it.
* ``local``: two nodes and a redis-server; the publisher and the subscribers on node A.
* ``cross``: the same deployment; the publisher on node A, the N subscribers on node B.

Both nodes and redis-server are pinned to core 0, the load generator (``python -m
bench.crossnode loadgen``, asyncio + uvloop, the client of bench/loadgen.py) and this
orchestrator to core 1. Latency is measured from each message's intended send time; CPU is
read from /proc (psutil) for node A, node B and redis-server at the start and the end of the
measured window. Added hop = cross minus single (and cross minus local), p50 and p99.
Results: bench/results/crossnode.{json,md,png} (``crossnode-quick.*`` with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    HOST,
    LOADGEN_CORE,
    RESULTS,
    ROOT,
    free_port,
    machine_facts,
    other_benches,
    percentile,
    pin,
    raise_nofile,
    system_busy_seconds,
    wait_for_port,
    wait_quiet,
)
from bench.crossnode_report import (
    IDLE_SPIN_NS,
    KINDS,
    SCENARIOS,
    SECRET_ENV,
    SPIN_S,
    add_ratios,
    aggregate,
    disturbed,
    hops,
    mark_used,
    markdown,
    plot,
    targets,
)
from bench.dialects import Dialect, Gateway, SocketIOPeer, WebsocketsPeer, make_body
from bench.servers import (
    Server,
    ServerStartError,
    keep_log,
    log_problems,
    popen,
    redis_version,
    start_redis,
    started,
)

EXTRA_PACKAGES = ("channels", "channels-redis", "Django", "asgiref", "redis", "hiredis")

FULL = {
    "n": [10, 100],
    "rates": [100.0, 500.0, 1000.0],
    "duration": 10.0,
    "warmup": 3.0,
    "repeat": 2,
}
QUICK = {"n": [10], "rates": [100.0, 1000.0], "duration": 4.0, "warmup": 1.0, "repeat": 1}


# ---------------------------------------------------------------------- the load generator


class ChannelsPeer(WebsocketsPeer):
    """bench/peers/channels_group.py: ``ok`` once in the group; text sent is the body."""

    name = "channels"


DIALECTS: dict[str, type[Dialect]] = {
    "gateway": Gateway,
    "socketio": SocketIOPeer,
    "channels": ChannelsPeer,
}


async def _pace(deadline_ns: int, idle: list[int]) -> None:
    """Sleep to 1 ms before ``deadline_ns``, then spin *through the loop* (``sleep(0)``) so
    subscribers' frames are still read while the publisher waits (at 1,000 msg/s the
    publisher would otherwise spin without ever yielding). Loop passes that found nothing
    to do are added to ``idle[0]`` (ns), to tell busy from spinning."""
    delay = (deadline_ns - time.perf_counter_ns()) / 1e9 - SPIN_S
    if delay > 0:
        await asyncio.sleep(delay)
    while True:
        before = time.perf_counter_ns()
        if before >= deadline_ns:
            return
        await asyncio.sleep(0)
        spent = time.perf_counter_ns() - before
        if spent < IDLE_SPIN_NS:
            idle[0] += spent


async def _drive(args: argparse.Namespace) -> dict[str, Any]:
    from bench.loadgen import Tally, cpu_seconds, emit, latency_summary, open_many

    secret = os.environ.get(SECRET_ENV, "")
    d_sub = DIALECTS[args.kind](args.sub_port, secret)
    d_pub = DIALECTS[args.kind](args.pub_port, secret)
    t_open = time.perf_counter()
    subs, failures = await open_many(d_sub, args.n, 0, 64, args.open_budget)
    pubs, pub_failures = await open_many(d_pub, 1, args.n, 1, 20)
    connect_s = time.perf_counter() - t_open
    if not pubs:
        return {"error": f"publisher could not connect: {dict(pub_failures)}"}
    publisher = pubs[0]
    warmup_count = round(args.warmup * args.rate)
    measure_count = round(args.duration * args.rate)
    tally = Tally(len(subs), warmup_count)
    for idx, client in enumerate(subs):
        client.on_text = tally.subscriber_handler(d_sub, client, idx)
    publisher.on_text = tally.publisher_handler(d_pub, publisher)
    await asyncio.sleep(args.settle)

    interval_ns = 1e9 / args.rate
    t0 = time.perf_counter_ns() + 20_000_000
    lags: list[int] = []
    idle = [0]
    cpu0, wall0, idle0, sent = 0.0, 0.0, 0, 0
    for seq in range(warmup_count + measure_count):
        intended = t0 + int(seq * interval_ns)
        await _pace(intended, idle)
        if seq == warmup_count:
            emit("WINDOW_START")
            cpu0, wall0, idle0 = cpu_seconds(), time.perf_counter(), idle[0]
        if not publisher.is_open:
            break
        publisher.send_text(d_pub.publish_frame(seq, make_body(seq, intended, args.body_bytes)))
        lags.append(time.perf_counter_ns() - intended)
        sent += seq >= warmup_count
    expected = sent * len(subs)
    drain_until = time.perf_counter() + args.drain
    while sum(tally.counts) < expected and time.perf_counter() < drain_until:
        await asyncio.sleep(0.01)
    cpu1, wall1 = cpu_seconds(), time.perf_counter()
    emit("WINDOW_END")

    window = wall1 - wall0
    delivered = sum(tally.counts)
    closed = Counter(str(c.close_code) for c in [*subs, publisher] if not c.is_open)
    busy = max(0.0, (cpu1 - cpu0) - (idle[0] - idle0) / 1e9)
    result = {
        "kind": args.kind,
        "n": args.n,
        "rate": args.rate,
        "duration_s": args.duration,
        "body_bytes": args.body_bytes,
        "subscribers_connected": len(subs),
        "connect_failures": dict(failures),
        "connect_s": round(connect_s, 3),
        "warmup_sent": warmup_count,
        "sent": sent,
        "expected": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "reordered": tally.reordered,
        "subscribers_short": sum(1 for c in tally.counts if c < sent),
        "publisher_received": tally.publisher_got,
        "acks": d_pub.acks,
        "other_frames": dict(d_pub.errors + d_sub.errors),
        "closed_during_run": dict(closed),
        "window_s": round(window, 3),
        "publish_lag_p50_ms": round(percentile(sorted(lags), 50) / 1e6, 3),
        "publish_lag_p99_ms": round(percentile(sorted(lags), 99) / 1e6, 3),
        "publish_lag_max_ms": round(max(lags, default=0) / 1e6, 3),
        "loadgen_cpu_pct": round(100 * (cpu1 - cpu0) / max(1e-9, window), 1),
        "loadgen_busy_pct": round(100 * busy / max(1e-9, window), 1),
        **latency_summary(tally.latencies),
    }
    for client in [*subs, publisher]:
        client.close()
    await asyncio.sleep(0.2)
    return result


def loadgen_main(argv: list[str]) -> None:
    import uvloop

    from bench.loadgen import emit

    p = argparse.ArgumentParser(prog="python -m bench.crossnode loadgen")
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--pub-port", type=int, required=True, help="node the publisher uses")
    p.add_argument("--sub-port", type=int, required=True, help="node the subscribers use")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--drain", type=float, default=5.0)
    p.add_argument("--body-bytes", type=int, default=100)
    p.add_argument("--open-budget", type=float, default=60.0)
    args = p.parse_args(argv)
    if not 0 < args.rate <= 20_000 or not 0 < args.duration <= 600 or args.body_bytes < 32:
        p.error("rate in (0, 20000], duration in (0, 600], body-bytes >= 32")
    pin(LOADGEN_CORE)
    raise_nofile()
    emit("RESULT " + json.dumps(uvloop.run(_drive(args))))


# ---------------------------------------------------------------------------- processes


def start_node(
    kind: str, role: str, redis_url: str, shared: Path, secret: str, channels_layer: str
) -> Server:
    """One node of ``kind`` pinned to the server core; ``redis_url`` empty: single-node."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-{role}-"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    http_port = 0
    if kind == "gateway":
        http_port = free_port()
        env.update(
            GATEWAY_WS_PORT=str(port),
            GATEWAY_HTTP_PORT=str(http_port),
            GATEWAY_DATA_DIR=str(shared),  # one message store shared by the nodes
            GATEWAY_JWT_SECRET=secret,
            GATEWAY_LOG_LEVEL="WARNING",
            # the publisher sends up to 1,000 frames/s; the default limit is 50/s
            GATEWAY_RATE_PER_SECOND="20000",
            GATEWAY_RATE_BURST="20000",
            GATEWAY_MAX_CONNECTIONS="60000",
            GATEWAY_DRAIN_TIMEOUT="2",
        )
        if redis_url:
            env.update(GATEWAY_REDIS_URL=redis_url, GATEWAY_REDIS_PREFIX="xnode")
        argv = [str(Path(sys.executable).with_name("gateway")), "serve"]
    elif kind == "socketio":
        argv = [sys.executable, "-m", "bench.peers.socketio_redis", "--port", str(port)]
        argv += ["--redis", redis_url] if redis_url else []
    elif kind == "channels":
        argv = [sys.executable, "-m", "bench.peers.channels_group", "--port", str(port)]
        argv += ["--redis", redis_url, "--layer", channels_layer] if redis_url else []
    else:
        raise ValueError(f"unknown kind {kind!r}")
    server = Server(kind, port, popen(argv, env, workdir), workdir / "server.log", workdir)

    def ready(timeout: float) -> bool:
        if not wait_for_port(port, timeout, server.alive):
            return False
        if kind != "gateway":
            return True
        deadline = time.monotonic() + timeout  # /readyz checks the bus (Redis PING) too
        while time.monotonic() < deadline and server.alive():
            with contextlib.suppress(OSError):
                url = f"http://{HOST}:{http_port}/readyz"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return True
            time.sleep(0.1)
        return False

    return started(server, ready, f"{kind} node {role} on {port}")


# ---------------------------------------------------------------------------- one run


def _read_lines(proc: subprocess.Popen[str], deadline: float) -> Any:
    from bench.fanout import read_lines

    return read_lines(proc, deadline)


def _proc_cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


def _start_node_retry(
    kind: str, role: str, url: str, shared: Path, secret: str, layer: str, row: dict[str, Any]
) -> Server:
    """Start a node; on failure note it in ``row`` and try once more after 3 s (the tree
    under test may be mid-edit by someone else, or the machine briefly overloaded)."""
    try:
        return start_node(kind, role, url, shared, secret, layer)
    except ServerStartError as exc:
        row.setdefault("start_retries", []).append(str(exc)[:4000])
        time.sleep(3)
        return start_node(kind, role, url, shared, secret, layer)


def run_one(
    kind: str, scenario: str, n: int, rate: float, params: dict[str, Any], log_dir: Path
) -> dict[str, Any]:
    """Start the processes of ``scenario``, drive one measurement, stop them; one row."""
    row: dict[str, Any] = {"server": kind, "scenario": scenario, "n": n, "rate": rate}
    row["quiet_wait_s"] = wait_quiet()
    tag = f"{kind}-{scenario}-{n}-{rate:g}-{params['rep']}"
    secret = secrets.token_hex(32)
    shared = Path(tempfile.mkdtemp(prefix="bench-xnode-data-"))
    redis: Server | None = None
    nodes: dict[str, Server] = {}
    try:
        try:
            if scenario != "single":
                redis = start_redis()
            url = f"redis://{HOST}:{redis.port}" if redis else ""  # the gateway takes no /db
            for role in ("a", "b") if scenario != "single" else ("a",):
                nodes[role] = _start_node_retry(
                    kind, role, url, shared, secret, params["channels_layer"], row
                )
        except ServerStartError as exc:
            row["error"] = str(exc)
            row["start_failed"] = True
            return row
        sub_node = nodes["b"] if scenario == "cross" else nodes["a"]
        _drive_loadgen(
            row,
            kind,
            nodes["a"].port,
            sub_node.port,
            n,
            rate,
            params,
            secret,
            nodes,
            redis,
            log_dir / f"loadgen-{tag}.log",
        )
        for role, node in nodes.items():
            row[f"node_{role}_alive_after"] = node.alive()
            if not node.alive():
                row["error"] = f"node {role} exited during the run; log tail:\n{node.log_tail()}"
        if redis is not None and not redis.alive():
            row["error"] = f"redis-server exited during the run:\n{redis.log_tail()}"
    finally:
        for role, node in nodes.items():
            kept = log_dir / f"node-{tag}-{role}.log"
            keep_log(node, kept)
            node.stop()
            problems = log_problems(kept)
            if problems:
                row.setdefault("node_log_problems", {})[role] = problems
        if redis is not None:
            redis.stop()
        shutil.rmtree(shared, ignore_errors=True)
    return row


def _drive_loadgen(
    row: dict[str, Any],
    kind: str,
    pub_port: int,
    sub_port: int,
    n: int,
    rate: float,
    params: dict[str, Any],
    secret: str,
    nodes: dict[str, Server],
    redis: Server | None,
    gen_log: Path,
) -> None:
    argv = [
        sys.executable, "-m", "bench.crossnode", "loadgen", "--kind", kind,
        "--pub-port", str(pub_port), "--sub-port", str(sub_port), "--n", str(n),
        "--rate", str(rate), "--duration", str(params["duration"]),
        "--warmup", str(params["warmup"]), "--body-bytes", str(params["body_bytes"]),
    ]  # fmt: skip
    env = {**os.environ, SECRET_ENV: secret, "PYTHONPATH": str(ROOT)}
    budget = 90 + params["warmup"] + params["duration"] + 30
    snap0: dict[str, float] = {}
    snap1: dict[str, float] = {}
    sys0 = sys1 = (0.0, 0.0, 0.0)
    with gen_log.open("w") as err:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        gen = psutil.Process(proc.pid)

        def snapshot() -> dict[str, float]:
            snap = {"gen": _proc_cpu(gen)}
            for key, server in (("a", nodes.get("a")), ("b", nodes.get("b")), ("redis", redis)):
                user, system = server.cpu_times() if server is not None else (0.0, 0.0)
                snap.update({key: user + system, f"{key}_user": user, f"{key}_sys": system})
            return snap

        deadline = time.monotonic() + budget
        for line in _read_lines(proc, deadline):
            if line == "WINDOW_START":
                snap0, sys0 = snapshot(), system_busy_seconds()
            elif line == "WINDOW_END":
                snap1, sys1 = snapshot(), system_busy_seconds()
            elif line.startswith("RESULT "):
                row.update(json.loads(line[len("RESULT ") :]))
        try:
            proc.wait(max(5.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            row.setdefault("error", f"load generator overran its {budget:g}s budget")
    if not snap0 or not snap1 or "delivered" not in row:
        row.setdefault("error", f"incomplete run, see {gen_log}")
        return
    window = max(1e-9, row["window_s"])
    d = {k: snap1[k] - snap0[k] for k in snap0}
    nodes_cpu = d["a"] + d["b"]
    delivered = row["delivered"]
    for key in ("a", "b", "redis"):
        prefix = "redis" if key == "redis" else f"node_{key}"
        row[f"{prefix}_user_s"] = round(d[f"{key}_user"], 3)
        row[f"{prefix}_sys_s"] = round(d[f"{key}_sys"], 3)
    row.update(
        node_a_cpu_s=round(d["a"], 3),
        node_b_cpu_s=round(d["b"], 3),
        nodes_cpu_s=round(nodes_cpu, 3),
        redis_cpu_s=round(d["redis"], 3),
        node_a_cpu_pct=round(100 * d["a"] / window, 1),
        node_b_cpu_pct=round(100 * d["b"] / window, 1),
        redis_cpu_pct=round(100 * d["redis"] / window, 1),
        core0_cpu_pct=round(100 * (nodes_cpu + d["redis"]) / window, 1),
        cpu_us_per_msg=1e6 * nodes_cpu / delivered if delivered else None,
        redis_us_per_msg=1e6 * d["redis"] / delivered if delivered else None,
        msgs_per_cpu_s=delivered / nodes_cpu if nodes_cpu > 0 else None,
        msgs_per_cpu_s_with_redis=(
            delivered / (nodes_cpu + d["redis"]) if nodes_cpu + d["redis"] > 0 else None
        ),
        bus_msgs_per_s=(
            round(delivered / max(1, row["subscribers_connected"]) / row["duration_s"], 1)
            if row.get("scenario") != "single"
            else None
        ),
        deliveries_per_s=round(delivered / row["duration_s"], 1),
    )
    other = (sys1[0] - sys0[0]) - nodes_cpu - d["redis"] - d["gen"]
    row["other_cpu_pct"] = round(100 * max(0.0, other) / window, 1)
    row["softirq_pct"] = round(100 * (sys1[1] - sys0[1]) / window, 1)
    row["steal_pct"] = round(100 * (sys1[2] - sys0[2]) / window, 1)


# ---------------------------------------------------------------------------- analysis


def _tree_state() -> dict[str, Any]:
    """Uncommitted changes under gateway/ at run time: the gateway measured is the tree."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "gateway"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
        return {"gateway_dirty_files": [ln[3:] for ln in out.splitlines()]}
    return {}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.crossnode",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smoke run: N=10, 4 s per run")
    p.add_argument("--servers", default=",".join(KINDS), help=f"comma list of {KINDS}")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {SCENARIOS}")
    p.add_argument("--n", help="comma list of subscriber counts (overrides the preset)")
    p.add_argument("--rates", help="comma list of publish rates per second")
    p.add_argument("--duration", type=float, help="measured seconds per run")
    p.add_argument("--warmup", type=float, help="warm-up seconds per run")
    p.add_argument("--repeat", type=int, help="repetitions of the whole matrix (full: 2)")
    p.add_argument("--body-bytes", type=int, default=100)
    p.add_argument("--channels-layer", choices=("core", "pubsub"), default="core")
    p.add_argument("--json", type=Path, help="output JSON (default bench/results/crossnode.json)")
    p.add_argument("--md", type=Path, help="output Markdown")
    p.add_argument("--png", type=Path, help="output plot")
    p.add_argument("--logs", type=Path, help="directory for generator and node logs")
    p.add_argument("--retries", type=int, default=1, help="re-runs of a disturbed run")
    p.add_argument("--max-retries", type=int, default=30, help="re-runs in the whole run")
    p.add_argument("--allow-concurrent", action="store_true", help="run beside another bench")
    p.add_argument("--from-json", type=Path, help="only rewrite --md/--png from this result")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.n = [int(x) for x in args.n.split(",")] if args.n else preset["n"]
    args.rates = [float(x) for x in args.rates.split(",")] if args.rates else preset["rates"]
    args.duration = args.duration or preset["duration"]
    args.warmup = args.warmup if args.warmup is not None else preset["warmup"]
    args.repeat = args.repeat or preset["repeat"]
    args.servers = [s for s in args.servers.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    if set(args.servers) - set(KINDS) or set(args.scenarios) - set(SCENARIOS):
        p.error(f"servers from {KINDS}, scenarios from {SCENARIOS}")
    if not 0 < args.duration <= 120 or max(args.n) > 5000 or not 0 < args.repeat <= 5:
        p.error("duration must be in (0, 120] s, N at most 5,000, repeat in 1..5")
    if max(args.rates) > 20_000:
        p.error("rates at most 20,000/s")
    stem = RESULTS / ("crossnode-quick" if args.quick else "crossnode")
    args.json = args.json or stem.with_suffix(".json")
    args.md = args.md or stem.with_suffix(".md")
    args.png = args.png or stem.with_suffix(".png")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    args.logs = args.logs or Path(tempfile.gettempdir()) / f"bench-crossnode-logs-{stamp}"
    return args


def _report(row: dict[str, Any]) -> None:
    if "start_retries" in row:
        print(f"[crossnode]   start retried: {row['start_retries'][0][:300]}", flush=True)
    if "error" in row:
        print(f"[crossnode]   failed: {row['error'][:400]}", flush=True)
        return
    print(
        f"[crossnode]   delivered {row['delivered']}/{row['expected']} "
        f"p50 {row['p50_ms']:.2f} p99 {row['p99_ms']:.2f} max {row['max_ms']:.1f} ms; "
        f"nodes {row['cpu_us_per_msg'] or 0:.1f} us/msg, redis "
        f"{row['redis_us_per_msg'] or 0:.1f}; core0 {row['core0_cpu_pct']:.0f} %, "
        f"other {row['other_cpu_pct']:.0f} %",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["loadgen"]:
        loadgen_main(argv[1:])
        return
    args = parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        mark_used(result["runs"])
        add_ratios(result["runs"])
        rows = aggregate(result["runs"])
        result["summary"] = {"rows": rows, "hops": hops(rows), "targets": targets(rows, hops(rows))}
        args.json.write_text(json.dumps(result, indent=2, default=dict) + "\n")
        args.md.write_text(markdown(result))
        plot(result, args.png)
        print(args.md.read_text())
        return
    found = other_benches()
    if found and not args.allow_concurrent:
        sys.exit(
            "another bench is running; wait for it (or --allow-concurrent):\n  "
            + "\n  ".join(found)
        )
    # SIGTERM unwinds like Ctrl-C, so every started server is stopped by its finally block
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pin(LOADGEN_CORE)
    raise_nofile()
    args.logs.mkdir(parents=True, exist_ok=True)
    for out in (args.json, args.md, args.png):
        out.parent.mkdir(parents=True, exist_ok=True)
    params = {
        "duration": args.duration,
        "warmup": args.warmup,
        "body_bytes": args.body_bytes,
        "n": args.n,
        "rates": args.rates,
        "servers": args.servers,
        "scenarios": args.scenarios,
        "repeat": args.repeat,
        "channels_layer": args.channels_layer,
        "drain_s": 5.0,
        "retries": args.retries,
        "max_retries": args.max_retries,
    }
    machine = machine_facts()
    machine["extra_packages"] = {}
    for name in EXTRA_PACKAGES:
        try:
            machine["extra_packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            machine["extra_packages"][name] = "absent"
    machine.update(_tree_state())
    load = os.getloadavg()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"[crossnode] logs in {args.logs}; load average {load[0]:.2f}", flush=True)
    runs: list[dict[str, Any]] = []
    plan = [
        (rep, rate, n, scenario, kind)
        for rep in range(args.repeat)
        for rate in args.rates
        for n in args.n
        for scenario in args.scenarios
        for kind in args.servers  # interleaved, so slow drift hits every server alike
    ]
    failed: set[tuple[str, str]] = set()
    start_failures: Counter[tuple[str, str]] = Counter()
    retries_left = args.max_retries

    def checkpoint() -> None:  # partial results survive an interrupted run
        partial = {"scenario": "crossnode", "mode": "partial", "started_utc": started,
                   "machine": machine, "params": params, "runs": runs}  # fmt: skip
        args.json.write_text(json.dumps(partial, indent=2, default=dict) + "\n")

    for i, (rep, rate, n, scenario, kind) in enumerate(plan):
        if (kind, scenario) in failed:
            continue
        for attempt in range(1 + args.retries):
            print(
                f"[crossnode] {i + 1}/{len(plan)} #{rep + 1} {kind:<8} {scenario:<6} N={n:<4} "
                f"rate={rate:g}/s" + (f" (retry {attempt}: disturbed)" if attempt else "") + " ...",
                flush=True,
            )
            row = run_one(kind, scenario, n, rate, {**params, "rep": rep}, args.logs)
            row["rep"], row["attempt"] = rep, attempt
            runs.append(row)
            _report(row)
            checkpoint()
            last = attempt == args.retries
            if not disturbed(row) or "error" in row or last or retries_left <= 0:
                break
            retries_left -= 1
        if row.get("start_failed"):
            start_failures[(kind, scenario)] += 1
            if start_failures[(kind, scenario)] >= 2:
                failed.add((kind, scenario))  # twice in a row: skip its other runs
        else:
            start_failures[(kind, scenario)] = 0
    mark_used(runs)
    add_ratios(runs)
    result = {
        "scenario": "crossnode",
        "mode": "quick" if args.quick else "full",
        "started_utc": started,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in load],
        "machine": machine,
        "redis_version": redis_version(),
        "params": params,
        "logs": str(args.logs),
        "runs": runs,
    }
    rows = aggregate(runs)
    result["summary"] = {"rows": rows, "hops": hops(rows), "targets": targets(rows, hops(rows))}
    args.json.write_text(json.dumps(result, indent=2, default=dict) + "\n")
    table = markdown(result)
    args.md.write_text(table)
    plot(result, args.png)
    print()
    print(table)


if __name__ == "__main__":
    main()
