"""Markdown tables and PNG plots for the bench results (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import machine_line
from bench.servers import LABELS, SERVERS


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def saturated(row: dict[str, Any]) -> bool:
    return bool(row.get("lost")) or (row.get("server_cpu_pct") or 0) >= 90


def fanout_markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"### Fan-out ({result['mode']} run, {result['started_utc']})",
        "",
        f"Machine: {machine_line(result['machine'])}.",
        "",
        f"One publisher (also subscribed) and N subscribers on one channel, "
        f"{p['body_bytes']}-byte bodies, {p['warmup']:g} s warm-up then {p['duration']:g} s "
        "measured. Latency: intended send time to frame read by the subscriber. CPU: server "
        "process user+sys over the measured window / messages delivered to the N subscribers.",
        "",
        "| server | N | rate/s | delivered | lost | p50 ms | p99 ms | max ms "
        "| CPU us/msg | x websockets | server CPU % | loadgen CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        if "error" in r and "delivered" not in r:
            first = r["error"].splitlines()[0][:90]
            lines.append(
                f"| {r['label']} | {r['n']} | {r['rate']:g} | failed: {first} | | | | | | | | |"
            )
            continue
        mark = " *" if saturated(r) else ""
        lines.append(
            f"| {r['label']} | {r['n']} | {r['rate']:g} | {r['delivered']} | {r['lost']} "
            f"| {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['max_ms'])} "
            f"| {_fmt(r.get('cpu_us_per_msg'), 1)}{mark} "
            f"| {_fmt(r.get('cpu_ratio_vs_websockets'))} "
            f"| {_fmt(r.get('server_cpu_pct'), 0)} | {_fmt(r.get('loadgen_cpu_pct'), 0)} |"
        )
    if any(saturated(r) for r in result["runs"]):
        lines += [
            "",
            "\\* server saturated (CPU >= 90 % of its core or messages lost): it fell behind, "
            "latency is queueing time, 'lost' counts messages not delivered within the drain "
            "timeout after the last publish, and CPU per delivered message is overstated "
            "(work spent on undelivered messages is charged to the delivered ones).",
        ]
    noisy = [r for r in result["runs"] if (r.get("other_cpu_pct") or 0) >= 10]
    if noisy:
        worst = max(r["other_cpu_pct"] for r in noisy)
        lines += [
            "",
            f"Warning: other processes used up to {worst:g} % of a core during {len(noisy)} "
            "measured window(s) (`other_cpu_pct` in the JSON): those numbers are disturbed.",
        ]
    if any((r.get("loadgen_cpu_pct") or 0) >= 90 for r in result["runs"]):
        lines += [
            "",
            "Warning: the load generator used >= 90 % of its core in some runs; there its own "
            "receive queue, not the server, dominates the latency.",
        ]
    notes = [
        f"- {r['label']} N={r['n']} rate={r['rate']:g}: {r['error'].splitlines()[0][:200]}"
        for r in result["runs"]
        if "error" in r
    ]
    if notes:
        lines += ["", "Errors:", "", *notes]
    return "\n".join(lines) + "\n"


def fanout_plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in result["runs"] if "p50_ms" in r]
    configs = sorted({(r["rate"], r["n"]) for r in runs})
    servers = [s for s in SERVERS if any(r["server"] == s for r in runs)]
    if not configs or not servers:
        return
    by_key = {(r["server"], r["rate"], r["n"]): r for r in runs}
    fig, (ax_lat, ax_cpu) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / len(servers)
    colors = {"gateway": "tab:blue", "websockets": "tab:orange", "socketio": "tab:green"}
    xs = range(len(configs))
    for i, name in enumerate(servers):
        offs = [x - 0.4 + width * (i + 0.5) for x in xs]
        rows = [by_key.get((name, rate, n)) for rate, n in configs]
        p50 = [r["p50_ms"] if r else 0 for r in rows]
        p99 = [r["p99_ms"] if r else 0 for r in rows]
        cpu = [(r.get("cpu_us_per_msg") or 0) if r else 0 for r in rows]
        color = colors.get(name, "gray")
        ax_lat.bar(offs, p99, width, color=color, alpha=0.35, label=f"{LABELS[name]} p99")
        ax_lat.bar(offs, p50, width * 0.6, color=color, label=f"{LABELS[name]} p50")
        ax_cpu.bar(offs, cpu, width, color=color, label=LABELS[name])
    labels = [f"N={n}\n{rate:g} msg/s" for rate, n in configs]
    for ax in (ax_lat, ax_cpu):
        ax.set_xticks(list(xs), labels)
        ax.grid(axis="y", alpha=0.3)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency, ms (log): wide bar p99, narrow bar p50")
    ax_lat.set_title("Delivery latency (intended send -> read)")
    ax_lat.legend(fontsize=7)
    ax_cpu.set_ylabel("server CPU us per delivered message")
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
