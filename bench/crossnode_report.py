"""Cross-node fan-out bench: aggregation, targets, the Markdown report and the plot.

Split from ``bench/crossnode.py`` (which runs the servers and the load) to keep both
modules small.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import machine_line

LABELS = {
    "gateway": "gateway (Redis Streams bus)",
    "socketio": "python-socketio (AsyncRedisManager)",
    "channels": "Django Channels (channels-redis)",
}
KINDS = tuple(LABELS)
BASELINE = "socketio"
SCENARIOS = ("single", "local", "cross")
SECRET_ENV = "BENCH_JWT_SECRET"
SPIN_S = 0.0012  # the loop's timers have 1 ms granularity: sleep to here, then spin
IDLE_SPIN_NS = 20_000  # a loop pass shorter than this found nothing to do
OTHER_CPU_LIMIT = 10.0  # % of a core used by other processes: the window is disturbed
HOP_TARGET_MS = 5.0
CPU_TARGET_X = 3.0


def _median(values: list[Any]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return float(vals[mid]) if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def disturbed(row: dict[str, Any]) -> bool:
    return (row.get("other_cpu_pct") or 0) >= OTHER_CPU_LIMIT


def saturated(row: dict[str, Any]) -> bool:
    return bool(row.get("lost")) or (row.get("core0_cpu_pct") or 0) >= 90


def mark_used(runs: list[dict[str, Any]]) -> None:
    """Per (server, scenario, N, rate, repetition): the first undisturbed attempt is used, or
    the last attempt if every one was disturbed; the others stay in the JSON, unused."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["server"], r["scenario"], r["n"], r["rate"], r["rep"]), []).append(r)
    for attempts in groups.values():
        clean = [r for r in attempts if not disturbed(r) and "error" not in r]
        chosen = clean[0] if clean else attempts[-1]
        for r in attempts:
            r["used"] = r is chosen


def add_ratios(runs: list[dict[str, Any]]) -> None:
    """Delivered messages per server CPU second relative to python-socketio at the same
    scenario, N and rate, in the same repetition (nodes only, and nodes + redis)."""
    base = {
        (r["scenario"], r["n"], r["rate"], r["rep"]): r
        for r in runs
        if r["server"] == BASELINE and r.get("msgs_per_cpu_s") and r.get("used", True)
    }
    for r in runs:
        b = base.get((r["scenario"], r["n"], r["rate"], r["rep"]))
        for key in ("msgs_per_cpu_s", "msgs_per_cpu_s_with_redis"):
            mine, theirs = r.get(key), (b or {}).get(key)
            r[f"{key}_x_socketio"] = round(mine / theirs, 2) if mine and theirs else None


MEDIAN_KEYS = (
    "p50_ms", "p99_ms", "cpu_us_per_msg", "redis_us_per_msg", "msgs_per_cpu_s",
    "msgs_per_cpu_s_with_redis", "msgs_per_cpu_s_x_socketio",
    "msgs_per_cpu_s_with_redis_x_socketio", "node_a_cpu_pct", "node_b_cpu_pct",
    "redis_cpu_pct", "core0_cpu_pct", "loadgen_busy_pct", "other_cpu_pct", "bus_msgs_per_s",
    "deliveries_per_s", "publish_lag_p99_ms", "node_a_user_s", "node_a_sys_s", "node_b_user_s",
    "node_b_sys_s", "redis_user_s", "redis_sys_s", "window_s",
)  # fmt: skip


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (server, scenario, N, rate): medians over the undisturbed repetitions
    (all of them, marked, if none is clean); delivered/lost totals; the worst max."""
    groups: dict[tuple[str, str, int, float], list[dict[str, Any]]] = {}
    for r in runs:
        if r.get("used", True):
            groups.setdefault((r["server"], r["scenario"], r["n"], r["rate"]), []).append(r)
    rows = []
    for (server, scenario, n, rate), reps in groups.items():
        done = [r for r in reps if "p50_ms" in r and "nodes_cpu_s" in r]
        clean = [r for r in done if not disturbed(r)]
        ok = clean or done
        row: dict[str, Any] = {
            "server": server, "label": LABELS[server], "scenario": scenario, "n": n,
            "rate": rate, "runs": len(ok), "runs_done": len(done),
            "disturbed": bool(ok) and not clean,
            "errors": [r["error"] for r in reps if "error" in r],
            "closed": sum((Counter(r.get("closed_during_run", {})) for r in ok), Counter()),
            "other_frames": sum((Counter(r.get("other_frames", {})) for r in ok), Counter()),
        }  # fmt: skip
        if ok:
            row.update(
                delivered=sum(r["delivered"] for r in ok),
                expected=sum(r["expected"] for r in ok),
                lost=sum(r["lost"] for r in ok),
                max_ms=max(r["max_ms"] for r in ok),
            )
            for key in MEDIAN_KEYS:
                row[key] = _median([r.get(key) for r in ok])
        rows.append(row)
    order = {k: i for i, k in enumerate(KINDS)}
    sc = {k: i for i, k in enumerate(SCENARIOS)}
    rows.sort(key=lambda r: (r["rate"], r["n"], order[r["server"]], sc[r["scenario"]]))
    return rows


def hops(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Added hop per (server, N, rate): cross minus single, and cross minus local."""
    by = {(r["server"], r["scenario"], r["n"], r["rate"]): r for r in rows if r["runs"]}
    out = []
    for server, n, rate in sorted(
        {(r["server"], r["n"], r["rate"]) for r in rows},
        key=lambda k: (k[2], k[1], KINDS.index(k[0])),
    ):
        cross = by.get((server, "cross", n, rate))
        if cross is None or not cross["delivered"]:
            continue
        h: dict[str, Any] = {"server": server, "label": LABELS[server], "n": n, "rate": rate}
        h["cross_p50_ms"], h["cross_p99_ms"] = cross["p50_ms"], cross["p99_ms"]
        h["cross_saturated"] = saturated(cross)
        for base in ("single", "local"):
            b = by.get((server, base, n, rate))
            if b is None or not b["delivered"]:
                continue
            h[f"{base}_p50_ms"], h[f"{base}_p99_ms"] = b["p50_ms"], b["p99_ms"]
            h[f"{base}_saturated"] = saturated(b)
            h[f"added_p50_vs_{base}_ms"] = cross["p50_ms"] - b["p50_ms"]
            h[f"added_p99_vs_{base}_ms"] = cross["p99_ms"] - b["p99_ms"]
        out.append(h)
    return out


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def targets(rows: list[dict[str, Any]], hop_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's two targets, read off the gateway's rows."""
    out: dict[str, Any] = {}
    hop = [h for h in hop_rows if h["server"] == "gateway" and h["rate"] == 1000]
    out["hop"] = [
        {
            "n": h["n"],
            "added_p99_vs_single_ms": h.get("added_p99_vs_single_ms"),
            "added_p99_vs_local_ms": h.get("added_p99_vs_local_ms"),
            "met": (
                h.get("added_p99_vs_single_ms") is not None
                and h["added_p99_vs_single_ms"] < HOP_TARGET_MS
                and not h["cross_saturated"]
            ),
        }
        for h in hop
    ]
    cpu = [r for r in rows if r["server"] == "gateway" and r["scenario"] == "cross" and r["runs"]]
    out["cpu"] = [
        {
            "n": r["n"],
            "rate": r["rate"],
            "x_socketio": r.get("msgs_per_cpu_s_x_socketio"),
            "x_socketio_with_redis": r.get("msgs_per_cpu_s_with_redis_x_socketio"),
            "saturated": saturated(r),
            "socketio_saturated": any(
                saturated(b)
                for b in rows
                if b["server"] == BASELINE
                and b["scenario"] == "cross"
                and (b["n"], b["rate"]) == (r["n"], r["rate"])
                and b["runs"]
            ),
            "met": (r.get("msgs_per_cpu_s_x_socketio") or 0) >= CPU_TARGET_X,
            "met_with_redis": (r.get("msgs_per_cpu_s_with_redis_x_socketio") or 0) >= CPU_TARGET_X,
        }
        for r in cpu
    ]
    return out


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    rows = aggregate(result["runs"])
    hop_rows = hops(rows)
    lines = [
        f"### Cross-node fan-out ({result['mode']} run, {result['started_utc']})",
        "",
        f"Machine: {machine_line(result['machine'])}; redis-server {result['redis_version']}"
        f", channels {result['machine']['extra_packages'].get('channels')}, channels-redis "
        f"{result['machine']['extra_packages'].get('channels-redis')}"
        f" (layer: {p['channels_layer']}). Both nodes and redis-server on core 0.",
        "",
        f"One publisher (also subscribed, on node A) and N subscribers on one channel, "
        f"{p['body_bytes']}-byte bodies, {p['warmup']:g} s warm-up then {p['duration']:g} s "
        f"measured, {p['repeat']} repetition(s): medians over the repetitions no other "
        "process disturbed. `single`: one node, no Redis; `local`: two nodes + Redis, "
        "publisher and subscribers on node A; `cross`: publisher on node A, subscribers on "
        "node B. Latency: intended send time to frame read. `node us/msg`: CPU of both nodes "
        "/ deliveries to the N subscribers; `redis us/msg` likewise for redis-server; "
        "`msgs/CPU s`: deliveries per CPU second of the nodes (and of nodes + redis); "
        "`x sio`: that over python-socketio's in the same scenario and repetition.",
        "",
        "| server | scenario | N | rate/s | runs | delivered | lost | p50 ms | p99 ms | max ms "
        "| node us/msg | redis us/msg | msgs/CPU s | x sio | msgs/CPU s incl. redis | x sio "
        "| A / B / redis CPU % | bus msg/s | gen busy % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---"
        "|---:|---:|",
    ]
    base_sat = {
        (b["scenario"], b["n"], b["rate"]): saturated(b)
        for b in rows
        if b["server"] == BASELINE and b["runs"]
    }
    for r in rows:
        if not r["runs"]:
            first = r["errors"][0].splitlines()[0][:100] if r["errors"] else "no result"
            lines.append(
                f"| {r['label']} | {r['scenario']} | {r['n']} | {r['rate']:g} | failed: "
                f"{first} |" + " |" * 15
            )
            continue
        mark = " *" if saturated(r) else ""
        runs = f"{r['runs']}/{r['runs_done']}" + (" †" if r["disturbed"] else "")
        cpu3 = (
            f"{_f(r['node_a_cpu_pct'], 0)} / {_f(r['node_b_cpu_pct'], 0)} / "
            f"{_f(r['redis_cpu_pct'], 0)}"
        )
        sect = (
            " §"
            if r["server"] != BASELINE and base_sat.get((r["scenario"], r["n"], r["rate"]))
            else ""
        )
        if r["delivered"]:
            lat = f"{_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {_f(r['max_ms'])}"
        else:
            lat = "none delivered | | "
        lines.append(
            f"| {r['label']} | {r['scenario']} | {r['n']} | {r['rate']:g} | {runs} "
            f"| {_f(r['delivered'])} | {_f(r['lost'])} | {lat} "
            f"| {_f(r['cpu_us_per_msg'], 1)}{mark} "
            f"| {_f(r['redis_us_per_msg'], 1)} | {_f(r['msgs_per_cpu_s'], 0)} "
            f"| {_f(r['msgs_per_cpu_s_x_socketio'])}{sect} "
            f"| {_f(r['msgs_per_cpu_s_with_redis'], 0)} "
            f"| {_f(r['msgs_per_cpu_s_with_redis_x_socketio'])}{sect} | {cpu3} "
            f"| {_f(r['bus_msgs_per_s'], 0)} | {_f(r['loadgen_busy_pct'], 0)} |"
        )
    lines += [
        "",
        "\\* saturated: messages lost (not delivered within 5 s after the last publish) or "
        "core 0 (both nodes + redis) >= 90 % busy; latency is then queueing time and CPU per "
        "delivered message is overstated. § python-socketio is saturated in that cell, so "
        "the ratio mostly says how far it fell behind, not what a message costs it. 'none "
        "delivered': not one measured message reached a subscriber within the window and "
        "the 5 s drain (the server was still working through the warm-up backlog).",
        "",
        "Added hop (cross-node minus single-node, and minus two nodes with everything on "
        "node A), medians in ms:",
        "",
        "| server | N | rate/s | single p50 / p99 | local p50 / p99 | cross p50 / p99 "
        "| added p50 vs single | added p99 vs single | added p99 vs local |",
        "|---|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for h in hop_rows:

        def pair(base: str, h: dict[str, Any] = h) -> str:
            if f"{base}_p50_ms" not in h:
                return "-"
            star = " *" if h[f"{base}_saturated"] else ""
            return f"{_f(h[f'{base}_p50_ms'])} / {_f(h[f'{base}_p99_ms'])}{star}"

        lines.append(
            f"| {h['label']} | {h['n']} | {h['rate']:g} | {pair('single')} | {pair('local')} "
            f"| {pair('cross')} | {_signed(h.get('added_p50_vs_single_ms'))} "
            f"| {_signed(h.get('added_p99_vs_single_ms'))} "
            f"| {_signed(h.get('added_p99_vs_local_ms'))} |"
        )
    lines += [
        "",
        "Where the CPU goes, cross-node (medians, % of one core over the window; user / "
        "system; on loopback a sender's system time includes the receiver's TCP work):",
        "",
        "| server | N | rate/s | node A user / sys | node B user / sys | redis user / sys "
        "| core 0 total |",
        "|---|---:|---:|---|---|---|---:|",
    ]
    for r in rows:
        if r["scenario"] != "cross" or not r["runs"]:
            continue
        w = max(1e-9, r["window_s"] or 0) / 100

        def us(prefix: str, r: dict[str, Any] = r, w: float = w) -> str:
            return (
                f"{_f((r[f'{prefix}_user_s'] or 0) / w, 0)} / "
                f"{_f((r[f'{prefix}_sys_s'] or 0) / w, 0)}"
            )

        lines.append(
            f"| {r['label']} | {r['n']} | {r['rate']:g} | {us('node_a')} | {us('node_b')} "
            f"| {us('redis')} | {_f(r['core0_cpu_pct'], 0)} |"
        )
    t = targets(rows, hop_rows)
    lines += ["", "Targets (gateway):", ""]
    for h in t["hop"]:
        if h["added_p99_vs_single_ms"] is None:
            continue
        lines.append(
            f"- added hop p99 < {HOP_TARGET_MS:g} ms at 1,000 msg/s, N={h['n']}: "
            f"{_signed(h['added_p99_vs_single_ms'])} ms vs single "
            f"({_signed(h['added_p99_vs_local_ms'])} vs local): "
            + ("met" if h["met"] else "NOT met")
        )
    for c in t["cpu"]:
        head = (
            f"- >= {CPU_TARGET_X:g}x python-socketio's deliveries per CPU second, cross, "
            f"N={c['n']}, {c['rate']:g} msg/s: "
        )
        if c["x_socketio"] is None:
            lines.append(head + "no ratio (python-socketio delivered no measured message)")
            continue
        lines.append(
            head + f"{_f(c['x_socketio'])}x nodes only "
            f"({'met' if c['met'] else 'NOT met'}), {_f(c['x_socketio_with_redis'])}x with "
            f"redis ({'met' if c['met_with_redis'] else 'NOT met'})"
            + (" [gateway saturated]" if c["saturated"] else "")
            + (" [python-socketio saturated]" if c["socketio_saturated"] else "")
        )
    noisy = [r for r in result["runs"] if disturbed(r)]
    if noisy:
        lines += [
            "",
            f"{len(noisy)} of {len(result['runs'])} measured windows were disturbed (other "
            f"processes used >= {OTHER_CPU_LIMIT:g} %, up to "
            f"{max(r['other_cpu_pct'] for r in noisy):g} %, of a core). A disturbed run is "
            f"run again (at most {p.get('retries', 0)} time(s), {p.get('max_retries', 0)} in "
            "all); the first clean attempt of each repetition is used, else the last one, and "
            "† marks rows with no clean repetition.",
        ]
    odd = [
        f"- {r['label']} {r['scenario']} N={r['n']} rate={r['rate']:g}: closed "
        f"{dict(r['closed'])}, other frames {dict(r['other_frames'])}"
        for r in rows
        if r["closed"] or r["other_frames"]
    ]
    errors = [
        f"- {r['label']} {r['scenario']} N={r['n']} rate={r['rate']:g}: {e.splitlines()[0][:200]}"
        for r in rows
        for e in r["errors"]
    ]
    problems = [
        f"- {r['server']} {r['scenario']} N={r['n']} rate={r['rate']:g} rep {r['rep']} node "
        f"{role}: {lns[0][:200]} ({len(lns)} line(s))"
        for r in result["runs"]
        for role, lns in r.get("node_log_problems", {}).items()
    ]
    if odd:
        lines += ["", "Connections closed or unexpected frames:", "", *odd]
    if errors:
        lines += ["", "Errors:", "", *errors]
    if problems:
        lines += ["", "Server log warnings/errors:", "", *problems[:30]]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in aggregate(result["runs"]) if r["runs"]]
    if not rows:
        return
    configs = sorted({(r["rate"], r["n"]) for r in rows})
    kinds = [k for k in KINDS if any(r["server"] == k for r in rows)]
    by = {(r["server"], r["scenario"], r["rate"], r["n"]): r for r in rows}
    colors = {"gateway": "tab:blue", "socketio": "tab:green", "channels": "tab:red"}
    fig, (ax_lat, ax_hop, ax_cpu) = plt.subplots(1, 3, figsize=(17, 5.2))
    width = 0.8 / len(kinds)
    xs = list(range(len(configs)))
    labels = [f"N={n}\n{rate:g}/s" for rate, n in configs]
    for i, kind in enumerate(kinds):
        offs = [x - 0.4 + width * (i + 0.5) for x in xs]
        color = colors.get(kind, "gray")
        # latency per scenario: p99 markers, single / local / cross
        for j, (scen, marker) in enumerate((("single", "o"), ("local", "s"), ("cross", "^"))):
            got = [by.get((kind, scen, rate, n)) for rate, n in configs]
            ys = [r["p99_ms"] if r and r["delivered"] else None for r in got]
            pts = [(o + (j - 1) * width * 0.25, y) for o, y in zip(offs, ys, strict=True) if y]
            if pts:
                ax_lat.scatter(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    color=color,
                    marker=marker,
                    s=28,
                    label=f"{LABELS[kind]} {scen}",
                )
        hop, cpu, sat = [], [], []
        for rate, n in configs:
            c, s = by.get((kind, "cross", rate, n)), by.get((kind, "single", rate, n))
            if c and s and c["delivered"] and s["delivered"]:
                hop.append(c["p99_ms"] - s["p99_ms"])
            else:
                hop.append(0.0)
            cpu.append((c.get("msgs_per_cpu_s") or 0) if c else 0)
            sat.append(bool(c and (saturated(c) or (s and saturated(s)))))
        for ax, ys in ((ax_hop, hop), (ax_cpu, cpu)):
            bars = ax.bar(offs, ys, width, color=color, label=LABELS[kind])
            for bar, flag in zip(bars, sat, strict=True):
                if flag:  # saturated: hatched, the number is queueing, not the hop
                    bar.set_hatch("///")
                    bar.set_edgecolor("white")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("p99 latency, ms (log)")
    ax_lat.set_title("p99: o single, s local (2 nodes, all on A), ^ cross")
    ax_lat.legend(fontsize=6, ncol=1)
    ax_hop.axhline(HOP_TARGET_MS, color="black", linestyle="--", linewidth=1)
    ax_hop.set_yscale("symlog", linthresh=10)
    ax_hop.set_ylabel("cross p99 - single p99, ms (symlog)")
    ax_hop.set_title(f"Added hop, p99 (target < {HOP_TARGET_MS:g} ms); hatched: saturated")
    ax_hop.legend(fontsize=7)
    ax_cpu.set_yscale("log")
    ax_cpu.set_ylabel("deliveries per CPU second of both nodes (log)")
    ax_cpu.set_title("Cross-node: deliveries per node CPU s (hatched: saturated)")
    ax_cpu.legend(fontsize=7)
    for ax in (ax_lat, ax_hop, ax_cpu):
        ax.set_xticks(xs, labels)
        ax.grid(axis="y", alpha=0.3)
    m = result["machine"]
    fig.suptitle(
        f"Cross-node fan-out over Redis ({result['mode']}); {m['cores']} cores "
        f"{m['cpu_model']}, Python {m['python']}; nodes + redis on core 0, generator on core 1",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- main
