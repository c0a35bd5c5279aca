"""Markdown tables and PNG plots for the bench results (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import machine_line
from bench.servers import LABELS, SERVERS

OTHER_CPU_LIMIT = 10.0  # % of one core used by other processes during a measured window


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def saturated(row: dict[str, Any]) -> bool:
    return bool(row.get("lost")) or (row.get("server_cpu_pct") or 0) >= 90


def disturbed(row: dict[str, Any]) -> bool:
    """Other processes used >= 10 % of a core during the measured window."""
    return (row.get("other_cpu_pct") or 0) >= OTHER_CPU_LIMIT


def _median(values: list[float | None]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (server, N, rate): medians over the repetitions that completed, totals
    for delivered/lost, the worst max, the range of CPU per message, any failure."""
    groups: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["server"], r["n"], r["rate"]), []).append(r)
    rows = []
    for (server, n, rate), reps in groups.items():
        done = [r for r in reps if "p50_ms" in r]
        clean = [r for r in done if not disturbed(r)]
        ok = clean or done  # prefer the repetitions nothing else on the machine disturbed
        row: dict[str, Any] = {
            "server": server, "label": LABELS[server], "n": n, "rate": rate,
            "runs": len(ok), "runs_done": len(done), "disturbed": bool(ok) and not clean,
            "errors": [r["error"] for r in reps if "error" in r],
        }  # fmt: skip
        if ok:
            cpu = [r["cpu_us_per_msg"] for r in ok if r.get("cpu_us_per_msg")]
            row.update(
                delivered=sum(r["delivered"] for r in ok),
                lost=sum(r["lost"] for r in ok),
                max_ms=max(r["max_ms"] for r in ok),
                cpu_min=min(cpu, default=None),
                cpu_max=max(cpu, default=None),
            )
            for key in (
                "p50_ms",
                "p99_ms",
                "cpu_us_per_msg",
                "cpu_ratio_vs_websockets",
                "server_cpu_pct",
                "loadgen_cpu_pct",
                "other_cpu_pct",
            ):
                row[key] = _median([r.get(key) for r in ok])
        rows.append(row)
    return rows


def fanout_markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    rows = aggregate(result["runs"])
    reps = p.get("repeat", 1)
    lines = [
        f"### Fan-out ({result['mode']} run, {result['started_utc']})",
        "",
        f"Machine: {machine_line(result['machine'])}.",
        "",
        f"One publisher (also subscribed) and N subscribers on one channel, "
        f"{p['body_bytes']}-byte bodies, {p['warmup']:g} s warm-up then {p['duration']:g} s "
        f"measured, {reps} repetition(s) per row: medians over the repetitions that no other "
        "process disturbed ('runs' = used/completed; 'CPU range' = min-max over those used). "
        "Latency: intended send time to frame read by the subscriber. CPU: server process "
        "user+sys over the measured window / messages delivered to the N subscribers.",
        "",
        "| server | N | rate/s | runs | delivered | lost | p50 ms | p99 ms | max ms "
        "| CPU us/msg | CPU range | x websockets | server CPU % | loadgen CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not r["runs"]:
            first = r["errors"][0].splitlines()[0][:90] if r["errors"] else "no result"
            lines.append(
                f"| {r['label']} | {r['n']} | {r['rate']:g} | failed: {first} | | | | | | | | | |"
            )
            continue
        mark = " *" if saturated(r) else ""
        spread = f"{_fmt(r['cpu_min'], 1)}-{_fmt(r['cpu_max'], 1)}" if r["runs"] > 1 else ""
        runs = f"{r['runs']}/{r['runs_done']}" + (" †" if r["disturbed"] else "")
        lines.append(
            f"| {r['label']} | {r['n']} | {r['rate']:g} | {runs} "
            f"| {r['delivered']} | {r['lost']} "
            f"| {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['max_ms'])} "
            f"| {_fmt(r['cpu_us_per_msg'], 1)}{mark} | {spread} "
            f"| {_fmt(r['cpu_ratio_vs_websockets'])} "
            f"| {_fmt(r['server_cpu_pct'], 0)} | {_fmt(r['loadgen_cpu_pct'], 0)} |"
        )
    if any(saturated(r) for r in rows):
        lines += [
            "",
            "\\* server saturated (median CPU >= 90 % of its core, or messages lost): it fell "
            "behind, latency is queueing time, 'lost' counts messages not delivered within the "
            "drain timeout after the last publish, and CPU per delivered message is overstated "
            "(work spent on undelivered messages is charged to the delivered ones).",
        ]
    noisy = [r for r in result["runs"] if disturbed(r)]
    if noisy:
        worst = max(r["other_cpu_pct"] for r in noisy)
        lines += [
            "",
            f"{len(noisy)} of {len(result['runs'])} measured windows were disturbed: other "
            f"processes used >= {OTHER_CPU_LIMIT:g} % (up to {worst:g} %) of a core "
            "(`other_cpu_pct` in the JSON); they are left out of the medians where a clean "
            "repetition exists, and rows with none are marked †.",
        ]
    if any((r.get("loadgen_cpu_pct") or 0) >= 90 for r in result["runs"]):
        lines += [
            "",
            "Warning: the load generator used >= 90 % of its core in some runs; there its own "
            "receive queue, not the server, dominates the latency.",
        ]
    notes = [
        f"- {r['label']} N={r['n']} rate={r['rate']:g}: {e.splitlines()[0][:200]}"
        for r in rows
        for e in r["errors"]
    ]
    if notes:
        lines += ["", "Errors:", "", *notes]
    return "\n".join(lines) + "\n"


def fanout_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in aggregate(result["runs"]) if r["runs"]]
    configs = sorted({(r["rate"], r["n"]) for r in rows})
    servers = [s for s in SERVERS if any(r["server"] == s for r in rows)]
    if not configs or not servers:
        return
    by_key = {(r["server"], r["rate"], r["n"]): r for r in rows}
    fig, (ax_lat, ax_cpu) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / len(servers)
    colors = {"gateway": "tab:blue", "websockets": "tab:orange", "socketio": "tab:green"}
    xs = range(len(configs))
    for i, name in enumerate(servers):
        offs = [x - 0.4 + width * (i + 0.5) for x in xs]
        got = [by_key.get((name, rate, n)) for rate, n in configs]
        p50 = [r["p50_ms"] if r else 0 for r in got]
        p99 = [r["p99_ms"] if r else 0 for r in got]
        cpu = [(r["cpu_us_per_msg"] or 0) if r else 0 for r in got]
        lo = [c - ((r["cpu_min"] or c) if r else 0) for c, r in zip(cpu, got, strict=True)]
        hi = [((r["cpu_max"] or c) if r else 0) - c for c, r in zip(cpu, got, strict=True)]
        color = colors.get(name, "gray")
        ax_lat.bar(offs, p99, width, color=color, alpha=0.35, label=f"{LABELS[name]} p99")
        ax_lat.bar(offs, p50, width * 0.6, color=color, label=f"{LABELS[name]} p50")
        ax_cpu.bar(offs, cpu, width, color=color, label=LABELS[name], yerr=[lo, hi], capsize=3)
    labels = [f"N={n}\n{rate:g} msg/s" for rate, n in configs]
    for ax in (ax_lat, ax_cpu):
        ax.set_xticks(list(xs), labels)
        ax.grid(axis="y", alpha=0.3)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency, ms (log): wide bar p99, narrow bar p50")
    ax_lat.set_title("Delivery latency (intended send -> read), medians")
    ax_lat.legend(fontsize=7)
    ax_cpu.set_ylabel("server CPU us per delivered message (median, min-max)")
    ax_cpu.set_title("Server CPU per delivered message (lower is better)")
    ax_cpu.legend(fontsize=7)
    m = result["machine"]
    fig.suptitle(
        f"Fan-out, 1 publisher -> N subscribers ({result['mode']}); "
        f"{m['cores']} cores {m['cpu_model']}, Python {m['python']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def memory_markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"### Idle memory ({result['started_utc']})",
        "",
        f"Machine: {machine_line(result['machine'])}.",
        "",
        f"{p['connections']:,} idle connections (gateway: authenticated and subscribed to one "
        f"channel), opened by {p['loadgen_procs']} load-generator process(es) on core 1; "
        f"server memory read {p['settle_s']:g} s after the last one opened. "
        f"Gateway target: at most {p['target_kb']} KB per connection.",
        "",
        "| server | connections | RSS before MiB | RSS after MiB | RSS KB/conn "
        "| USS KB/conn | open s | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    mib = 1024 * 1024
    for r in result["runs"]:
        if "rss_kb_per_conn" not in r:
            first = r.get("error", "no result").splitlines()[0][:90]
            lines.append(f"| {r['label']} | failed: {first} | | | | | | |")
            continue
        target = ""
        if r["server"] == "gateway":
            target = "met" if r["rss_kb_per_conn"] <= p["target_kb"] else "MISSED"
        lines.append(
            f"| {r['label']} | {r['connections']:,} | {r['before']['rss'] / mib:.1f} "
            f"| {r['after']['rss'] / mib:.1f} | {r['rss_kb_per_conn']:.1f} "
            f"| {r['uss_kb_per_conn']:.1f} | {r['open_s']:.1f} | {target} |"
        )
    notes = [f"- {r['label']}: {r['error'][:300]}" for r in result["runs"] if "error" in r]
    if notes:
        lines += ["", "Errors:", "", *notes]
    return "\n".join(lines) + "\n"
