"""Load generator: one asyncio + uvloop process, pinned to the load-generator core.

``fanout``: open N subscribers and one publisher (also subscribed), publish warm-up messages,
then publish at a fixed rate for a fixed duration, wait for the deliveries to drain, and print
one ``RESULT {json}`` line. It prints ``WINDOW_START`` when the first measured message is due
and ``WINDOW_END`` once every expected delivery arrived (or the drain timeout passed): the
orchestrator reads the server's CPU time at those two lines.

``idle``: open N authenticated, subscribed connections, print ``OPEN {json}``, hold them until
a line (or EOF) arrives on stdin or ``--hold`` seconds pass, close them and print ``DONE``.

Latency is measured from the message's *intended* send time (carried in its body) to the
moment its frame is read, on one clock (``perf_counter_ns``) in one process, so publisher
lateness counts against the result instead of hiding it (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from array import array
from collections import Counter
from typing import Any

import uvloop

from bench.common import HOST, LOADGEN_CORE, percentile, pin, raise_nofile
from bench.dialects import (
    DIALECTS,
    MARKER,
    SEQ_AT,
    SEQ_END,
    TIME_AT,
    TIME_END,
    Dialect,
    SetupError,
    make_body,
)
from bench.wsclient import WSClient, WSClosedError, connect

SECRET_ENV = "BENCH_JWT_SECRET"
SPIN_S = 0.0012


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def open_many(
    dialect: Dialect, count: int, first_index: int, concurrency: int, budget: float
) -> tuple[list[WSClient], Counter[str]]:
    """Open ``count`` set-up connections, at most ``concurrency`` handshakes in flight."""
    sem = asyncio.Semaphore(concurrency)
    failures: Counter[str] = Counter()
    opened: list[WSClient] = []

    async def one(index: int) -> None:
        async with sem:
            for _attempt in range(3):
                client: WSClient | None = None
                try:
                    client = await connect(
                        HOST, dialect.port, dialect.path, dialect.subprotocol, dialect.origin
                    )
                    async with asyncio.timeout(15):
                        await dialect.setup(client, index)
                    opened.append(client)
                    return
                except (OSError, WSClosedError, SetupError, TimeoutError, ValueError) as exc:
                    failures[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                    if client is not None and client.transport is not None:
                        client.transport.abort()
                    await asyncio.sleep(0.2)

    tasks = [asyncio.ensure_future(one(first_index + i)) for i in range(count)]
    try:
        async with asyncio.timeout(budget):
            await asyncio.gather(*tasks)
    except TimeoutError:
        failures["open budget exceeded"] += sum(1 for t in tasks if not t.done())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return opened, failures


async def until(deadline_ns: int) -> None:
    """Sleep until ``deadline_ns`` (perf_counter_ns). The loop's timers have 1 ms
    granularity, so sleep to 1 ms before and spin the rest: the publish leaves on time and
    the spin costs at most 1 ms of generator CPU per message."""
    delay = (deadline_ns - time.perf_counter_ns()) / 1e9 - SPIN_S
    if delay > 0:
        await asyncio.sleep(delay)
    while time.perf_counter_ns() < deadline_ns:
        pass


class Tally:
    """What the subscribers saw during the measured window."""

    def __init__(self, subscribers: int, measure_from: int) -> None:
        self.measure_from = measure_from
        self.latencies = array("q")
        self.counts = [0] * subscribers
        self.last = [-1] * subscribers
        self.reordered = 0
        self.publisher_got = 0

    def subscriber_handler(self, dialect: Dialect, client: WSClient, idx: int) -> Any:
        lat = self.latencies.append
        counts, last, measure_from = self.counts, self.last, self.measure_from
        other = dialect.on_other

        def on_text(payload: bytes, now: int) -> None:
            i = payload.find(MARKER)
            if i < 0:
                other(client, payload)
                return
            seq = int(payload[i + SEQ_AT : i + SEQ_END])
            if seq < measure_from:
                return
            lat(now - int(payload[i + TIME_AT : i + TIME_END]))
            counts[idx] += 1
            if seq <= last[idx]:
                self.reordered += 1
            last[idx] = seq

        return on_text

    def publisher_handler(self, dialect: Dialect, client: WSClient) -> Any:
        def on_text(payload: bytes, now: int) -> None:
            if payload.find(MARKER) < 0:
                dialect.on_other(client, payload)
            else:
                self.publisher_got += 1

        return on_text


def latency_summary(latencies: array[int]) -> dict[str, float]:
    ordered = sorted(latencies)
    ms = 1e-6
    return {
        "p50_ms": percentile(ordered, 50) * ms,
        "p90_ms": percentile(ordered, 90) * ms,
        "p99_ms": percentile(ordered, 99) * ms,
        "p999_ms": percentile(ordered, 99.9) * ms,
        "max_ms": (ordered[-1] if ordered else 0) * ms,
        "mean_ms": (sum(ordered) / len(ordered) if ordered else 0) * ms,
    }


async def fanout(args: argparse.Namespace) -> dict[str, Any]:
    dialect = DIALECTS[args.kind](args.port, os.environ.get(SECRET_ENV, ""))
    t_open = time.perf_counter()
    subs, failures = await open_many(dialect, args.n, 0, args.concurrency, args.open_budget)
    pubs, pub_failures = await open_many(dialect, 1, args.n, 1, 20)
    connect_s = time.perf_counter() - t_open
    if not pubs:
        return {"error": f"publisher could not connect: {dict(pub_failures)}"}
    publisher = pubs[0]
    warmup_count = round(args.warmup * args.rate)
    measure_count = round(args.duration * args.rate)
    tally = Tally(len(subs), warmup_count)
    for idx, client in enumerate(subs):
        client.on_text = tally.subscriber_handler(dialect, client, idx)
    publisher.on_text = tally.publisher_handler(dialect, publisher)
    await asyncio.sleep(args.settle)

    interval_ns = 1e9 / args.rate
    t0 = time.perf_counter_ns() + 20_000_000
    lags: list[int] = []
    cpu0, wall0, sent = 0.0, 0.0, 0
    for seq in range(warmup_count + measure_count):
        intended = t0 + int(seq * interval_ns)
        await until(intended)
        if seq == warmup_count:
            emit("WINDOW_START")
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
        if not publisher.is_open:
            break
        publisher.send_text(dialect.publish_frame(seq, make_body(seq, intended, args.body_bytes)))
        lags.append(time.perf_counter_ns() - intended)
        sent += seq >= warmup_count
    expected = sent * len(subs)
    drain_until = time.perf_counter() + args.drain
    while sum(tally.counts) < expected and time.perf_counter() < drain_until:
        await asyncio.sleep(0.01)
    cpu1, wall1 = cpu_seconds(), time.perf_counter()
    emit("WINDOW_END")

    delivered = sum(tally.counts)
    closed = Counter(str(c.close_code) for c in subs if not c.is_open)
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
        "acks": dialect.acks,
        "other_frames": dict(dialect.errors),
        "closed_during_run": dict(closed),
        "window_s": round(wall1 - wall0, 3),
        "publish_lag_p50_ms": round(percentile(sorted(lags), 50) / 1e6, 3),
        "publish_lag_max_ms": round(max(lags, default=0) / 1e6, 3),
        "loadgen_cpu_pct": round(100 * (cpu1 - cpu0) / max(1e-9, wall1 - wall0), 1),
        **latency_summary(tally.latencies),
    }
    for client in [*subs, publisher]:
        client.close()
    await asyncio.sleep(0.2)
    return result


async def idle(args: argparse.Namespace) -> None:
    dialect = DIALECTS[args.kind](args.port, os.environ.get(SECRET_ENV, ""))
    t_open = time.perf_counter()
    clients, failures = await open_many(
        dialect, args.n, args.first_index, args.concurrency, args.open_budget
    )
    for client in clients:
        client.on_text = lambda payload, now, c=client: dialect.on_other(c, payload)
    emit(
        "OPEN "
        + json.dumps(
            {
                "opened": len(clients),
                "failures": dict(failures),
                "open_s": round(time.perf_counter() - t_open, 3),
            }
        )
    )
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), release.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(release.wait(), args.hold)
    loop.remove_reader(sys.stdin.fileno())
    still_open = sum(1 for c in clients if c.is_open)
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)
    emit("DONE " + json.dumps({"still_open_at_release": still_open}))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    sub = p.add_subparsers(dest="mode", required=True)
    for mode in ("fanout", "idle"):
        s = sub.add_parser(mode)
        s.add_argument("--kind", choices=sorted(DIALECTS), required=True)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--n", type=int, required=True)
        s.add_argument("--concurrency", type=int, default=64, help="handshakes in flight")
        s.add_argument("--open-budget", type=float, default=120.0, help="seconds to open all")
        s.add_argument("--no-pin", action="store_true", help="do not pin to the loadgen core")
    f = sub.choices["fanout"]
    f.add_argument("--rate", type=float, default=10.0, help="publishes per second")
    f.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    f.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (not measured)")
    f.add_argument("--settle", type=float, default=1.0, help="pause after connecting")
    f.add_argument("--drain", type=float, default=5.0, help="max wait for late deliveries")
    f.add_argument("--body-bytes", type=int, default=100)
    i = sub.choices["idle"]
    i.add_argument("--first-index", type=int, default=0, help="first user index (sub claim)")
    i.add_argument("--hold", type=float, default=120.0, help="max seconds to hold connections")
    args = p.parse_args(argv)
    if args.mode == "fanout":
        if not 0 < args.rate <= 10_000 or not 0 < args.duration <= 600:
            p.error("rate must be in (0, 10000] and duration in (0, 600]")
        if args.body_bytes < 32:
            p.error("body-bytes must be at least 32 (the marker header)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.no_pin:
        pin(LOADGEN_CORE)
    raise_nofile()
    if args.mode == "fanout":
        result = uvloop.run(fanout(args))
        emit("RESULT " + json.dumps(result))
    else:
        uvloop.run(idle(args))


if __name__ == "__main__":
    main()
