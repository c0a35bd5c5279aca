"""Write-behind to DynamoDB (moto): how fast it drains, and whether a slow store slows fan-out.

    python -m bench.persist --quick    # 500 messages; fan-out runs of 5 s (about 4 min)
    python -m bench.persist            # 1,500 messages, 20 channels; runs of 20 s (~10 min)

* throughput: C publishers (one channel each) append M messages, ``--window`` in flight each;
  accept rate = acks/s, write-behind rate = M / (first ack -> all records in the store).
* latency: bench/loadgen.py ``fanout`` with the store direct, then behind a tests/aws
  FaultProxy delaying every request by each of ``--delays``; backlog = published - stored.

One fresh gateway node (Redis Streams bus, DynamoDB store on a fresh moto server with the
tables and bucket of ``gateway.store.tables``, checked by ``gateway check``) per measurement.
See bench/README.md, "Write-behind to DynamoDB", for the method and the pinning.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import trio

from bench import common as c
from bench.dialects import Gateway
from bench.fanout import read_lines
from bench.servers import (
    Server,
    keep_log,
    log_problems,
    popen,
    redis_version,
    start_redis,
    started,
)
from tests.services import MotoServer

FULL: dict[str, Any] = {"channels": 20, "messages": 1_500, "window": 16, "n": 100, "rate": 50.0}
FULL.update(duration=20.0, warmup=3.0, delays=[0.0, 0.2, 2.0], drain=600.0, fanout_drain=120.0)
QUICK = {**FULL, "channels": 10, "messages": 500, "duration": 5.0, "warmup": 1.0, "drain": 240}
PREFIX, BUCKET, REGION, SECRET_ENV = "persist", "persist-files", "us-east-1", "BENCH_JWT_SECRET"
STORE_CORE = ["nice", "-n", "19", "taskset", "-c", str(c.LOADGEN_CORE)]  # moto and the proxy
DISTURBED_PCT = 10.0  # other processes' CPU (% of one core) that marks a window disturbed
MOTO_MAX_MB = 3072  # moto's RSS balloons with its tables (see README): stop waiting beyond
Snap = tuple[dict[str, float], tuple[float, float, float], float]  # CPU, /proc/stat, time


def _aws(url: str) -> Any:
    from gateway.aws import open_aws

    return open_aws(url, REGION, access_key="testing", secret_key="testing")


# -- children: the throughput load generator and the FaultProxy ------------------------------


class _Publisher(Gateway):
    """Publisher ``i`` subscribes to channel ``persist-<i>`` (publishing needs it)."""

    async def setup(self, client: Any, index: int) -> None:
        await self._expect(client, "hello")
        auth = {"type": "auth", "token": self._token(self.secret, str(index))}
        client.send_text(json.dumps(auth))
        await self._expect(client, "ready")
        client.send_text(json.dumps({"type": "subscribe", "channel": f"persist-{index}"}))
        await self._expect(client, "subscribed")
        client.index = index  # open_many lists clients as they finish their setup


async def _publish(port: int, channels: int, messages: int, window: int) -> dict[str, Any]:
    from bench.loadgen import cpu_seconds, emit, open_many

    opened, failed = await open_many(_Publisher(port, os.environ[SECRET_ENV]), channels, 0, 16, 60)
    clients: list[Any] = sorted(opened, key=lambda cl: getattr(cl, "index", 0))
    per, body, k = messages // max(1, len(clients)), "x" * 100, len(clients)
    sent, answered, top, errors = [0] * k, [0] * k, [0] * k, Counter[str]()
    t_ack: list[float] = []

    def send(i: int) -> None:
        frame = {"type": "publish", "channel": f"persist-{clients[i].index}", "body": body}
        clients[i].send_text(json.dumps({**frame, "cmid": f"m{sent[i]}"}))
        sent[i] += 1

    def handler(i: int) -> Any:
        def on_text(payload: bytes, now: int) -> None:
            frame = json.loads(payload)
            if frame.get("type") == "ack":
                top[i] = max(top[i], frame["offset"])
                if not t_ack:
                    emit("FIRST_ACK")
                t_ack[1 if t_ack else 0 :] = [time.monotonic()]
            elif frame.get("type") == "error":
                errors[str(frame.get("code"))] += 1
            else:
                return  # the publisher's own messages coming back
            answered[i] += 1
            if sent[i] < per:
                send(i)
            elif sum(answered) == per * k:
                emit("LAST_ACK")

        return on_text

    cpu0, t0 = cpu_seconds(), time.monotonic()
    for i, client in enumerate(clients):
        client.on_text = handler(i)
        for _ in range(min(window, per)):
            send(i)
    deadline = time.monotonic() + 600
    while (
        sum(answered) < per * k
        and time.monotonic() < deadline
        and all(cl.is_open for cl in clients)
    ):
        await asyncio.sleep(0.05)
    result = {"publishers": k, "connect_failures": dict(failed), "sent": sum(sent),
              "answered": sum(answered), "accepted": sum(top), "errors": errors,
              "t_first_send": t0, "t_first_ack": t_ack[0] if t_ack else None,
              "t_last_ack": t_ack[-1] if t_ack else None, "loadgen_cpu_s": cpu_seconds() - cpu0,
              "closed": sum(not cl.is_open for cl in clients),
              "tops": {f"persist-{cl.index}": t for cl, t in zip(clients, top)}}  # noqa: B905  # fmt: skip
    for client in clients:
        client.close()
    await asyncio.sleep(0.2)
    return result


async def _proxy(upstream: str, port: int, delay: float) -> None:
    """tests/aws FaultProxy on ``port``; SIGUSR1 makes it delay every request by ``delay``."""
    from tests.aws import FaultProxy

    proxy = FaultProxy(upstream)
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(trio.serve_tcp, proxy.handle, port, host=c.HOST))
            async for _ in signals:
                proxy.delay(delay)  # any operation, DynamoDB and S3 alike


# -- the stack under test ---------------------------------------------------------------------


class _Moto(MotoServer):
    def args(self) -> list[str]:
        return [*STORE_CORE, *super().args()]


async def _create_infra(url: str) -> None:
    from gateway.store.tables import TABLES, create_bucket, create_tables

    async with _aws(url) as aws:
        await create_tables(aws, PREFIX, TABLES)
        await create_bucket(aws, BUCKET)


class Stack:
    """moto, redis-server, a FaultProxy (if ``delay`` is not None) and one gateway node."""

    def __init__(self, logs: Path, tag: str, delay: float | None) -> None:
        self.logs, self.tag, self.delay, self.secret = logs, tag, delay, secrets.token_hex(32)
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-persist-"))
        self.servers: dict[str, Server] = {}
        self.moto, self.http = _Moto(self.workdir / "moto"), c.free_port()

    def start(self) -> None:
        self.moto.start()
        trio.run(_create_infra, self.moto.url)
        self.servers["redis"] = start_redis()
        endpoint = self.moto.url
        if self.delay is not None:
            port, workdir = c.free_port(), self.workdir / "proxy"
            workdir.mkdir()
            argv = [*STORE_CORE, sys.executable, "-m", "bench.persist", "proxy", self.moto.url]
            proc = popen([*argv, str(port), str(self.delay)], self._env(), workdir)
            proxy = Server("proxy", port, proc, workdir / "server.log", workdir)
            self.servers["proxy"] = started(proxy, lambda t: c.wait_for_port(port, t), "proxy")
            endpoint = f"http://{c.HOST}:{port}"
        (workdir := self.workdir / "node").mkdir()
        env = {**self._env(), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent",
               "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "GATEWAY_STORE": "dynamodb",
               "GATEWAY_DYNAMODB_PREFIX": PREFIX, "GATEWAY_S3_BUCKET": BUCKET,
               "GATEWAY_AWS_REGION": REGION, "GATEWAY_AWS_ENDPOINT_URL": self.moto.url,
               "GATEWAY_REDIS_URL": f"redis://{c.HOST}:{self.servers['redis'].port}",
               "GATEWAY_REDIS_PREFIX": PREFIX, "GATEWAY_DATA_DIR": str(workdir / "data"),
               "GATEWAY_WS_PORT": str(port := c.free_port()), "GATEWAY_HTTP_PORT": str(self.http),
               "GATEWAY_JWT_SECRET": self.secret, "GATEWAY_LOG_LEVEL": "WARNING",
               "GATEWAY_RATE_PER_SECOND": "50000", "GATEWAY_RATE_BURST": "50000",
               "GATEWAY_DRAIN_TIMEOUT": "2"}  # fmt: skip
        gateway = str(Path(sys.executable).with_name("gateway"))
        check = subprocess.run([gateway, "check"], env=env, capture_output=True, text=True,
                               timeout=120, check=False)  # straight to moto  # fmt: skip
        if check.returncode != 0:
            raise RuntimeError(f"gateway check failed:\n{check.stdout}{check.stderr}")
        env["GATEWAY_AWS_ENDPOINT_URL"] = endpoint
        node = Server("gateway", port, popen([gateway, "serve"], env, workdir),
                      workdir / "server.log", workdir)  # fmt: skip
        self.servers["node"] = started(node, self._ready, "gateway node", timeout=60)
        if "proxy" in self.servers:  # from now on: the node is up, the store is slow
            self.servers["proxy"].proc.send_signal(signal.SIGUSR1)

    def _env(self) -> dict[str, str]:
        return {**os.environ, SECRET_ENV: self.secret, "PYTHONPATH": str(c.ROOT)}

    def _ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                url = f"http://{c.HOST}:{self.http}/readyz"
                with urllib.request.urlopen(url, timeout=2):  # 503 raises HTTPError
                    return True
            time.sleep(0.2)
        return False

    def snap(self) -> Snap:
        """CPU seconds of each process of the stack and of this one, /proc/stat, the time."""
        cpu = {name: sum(s.cpu_times()) for name, s in self.servers.items()}
        with contextlib.suppress(psutil.Error, TypeError):
            cpu["moto"] = sum(psutil.Process(self.moto.pid).cpu_times()[:2])
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu["bench"] = ru.ru_utime + ru.ru_stime
        return cpu, c.system_busy_seconds(), time.monotonic()

    def events(self) -> int | None:
        """Entries of the node's integration stream (one ``message.created`` per write)."""
        port = str(self.servers["redis"].port)
        out = subprocess.run(["redis-cli", "-p", port, "XLEN", f"{PREFIX}:events"],
                             capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
        return int(out.stdout) if out.stdout.strip().isdigit() else None

    def close(self, row: dict[str, Any]) -> None:
        for name, server in reversed(self.servers.items()):
            if not server.alive():
                row.setdefault("errors", []).append(f"{name} exited:\n{server.log_tail()}")
            keep_log(server, kept := self.logs / f"{self.tag}-{name}.log")
            server.stop()
            if name != "redis" and (problems := log_problems(kept)):
                row.setdefault("log_problems", {})[name] = problems
        self.moto.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class Watch:
    """A thread sampling every ``interval`` s the records in the store (the newest offset of
    each channel, read from moto directly) and the node's /metrics."""

    def __init__(self, stack: Stack, channels: list[str], interval: float) -> None:
        self.stack, self.channels, self.interval = stack, channels, interval
        self.samples: list[dict[str, float]] = []
        self.stop, self.error = threading.Event(), ""
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            trio.run(self._loop)
        except Exception as exc:  # noted in the row; the run goes on
            self.error = repr(exc)

    async def _loop(self) -> None:
        import httpx

        from gateway.store.dynamodb import open_dynamo_store

        url = f"http://{c.HOST}:{self.stack.http}/metrics"
        async with (
            _aws(self.stack.moto.url) as aws,
            open_dynamo_store(aws, PREFIX) as store,
            httpx.AsyncClient(timeout=5) as http,
        ):
            while not self.stop.is_set():
                t, stored, rss = time.monotonic(), 0, 0.0
                for ch in self.channels:
                    newest = await store.read_before(ch, 2**62, 1)
                    stored += newest[-1].offset if newest else 0
                m = dict(re.findall(r"^(gateway_\w+) (\S+)$", (await http.get(url)).text, re.M))
                with contextlib.suppress(psutil.Error, TypeError):
                    rss = psutil.Process(self.stack.moto.pid).memory_info().rss / 2**20
                self.samples.append({"t": time.monotonic(), "stored": stored, "moto_mb": rss,
                    "published": float(m.get("gateway_messages_published_total", 0)),
                    "gauge": float(m.get("gateway_bus_persist_backlog", 0))})  # fmt: skip
                await trio.sleep(max(0.0, self.interval - (time.monotonic() - t)))

    def wait(self, done: Any, budget: float) -> dict[str, float] | None:
        """The first sample from now on for which ``done(sample)``, within ``budget`` s."""
        deadline, seen = time.monotonic() + budget, len(self.samples)
        while time.monotonic() < deadline and self.thread.is_alive():
            if found := next((s for s in self.samples[seen:] if done(s)), None):
                return found
            if self.samples and self.samples[-1]["moto_mb"] > MOTO_MAX_MB:
                self.error = f"moto's RSS passed {MOTO_MAX_MB} MiB: stopped waiting"
                return None
            seen = len(self.samples)
            time.sleep(0.05)
        return None


def _cpu(a: Snap, b: Snap, gen: float) -> dict[str, float]:
    """CPU seconds of each process from snapshot a to b (``gen``: the load generator's) and
    what the rest of the machine used, in % of one core."""
    d = {f"{k}_cpu_s": round(b[0][k] - a[0].get(k, 0.0), 3) for k in b[0]}
    d["loadgen_cpu_s"], window = round(gen, 3), max(1e-9, b[2] - a[2])
    d["other_cpu_pct"] = round(100 * max(0.0, b[1][0] - a[1][0] - sum(d.values())) / window, 1)
    d["steal_pct"] = round(100 * (b[1][2] - a[1][2]) / window, 1)
    return d


def run(p: dict[str, Any], delay: float | None, logs: Path, attempt: int) -> dict[str, Any]:
    """One measurement on a fresh stack: throughput if ``delay`` is None, else latency."""
    row: dict[str, Any] = {"delay_s": delay, "attempt": attempt, "quiet_wait_s": c.wait_quiet()}
    tag = f"{'throughput' if delay is None else f'latency-{delay:g}'}-{attempt}"
    stack, watch = Stack(logs, tag, delay or None), None
    try:
        stack.start()
        channels = [f"persist-{i}" for i in range(p["channels"])] if delay is None else ["bench"]
        watch = Watch(stack, channels, 1.0 if delay is None else 0.5)
        port = str(stack.servers["node"].port)
        argv = ["bench.persist", "publish", port]
        argv += [str(p[k]) for k in ("channels", "messages", "window")]
        if delay is not None:
            argv = ["bench.loadgen", "fanout", "--kind", "gateway", "--port", port]
            argv += [a for k in ("n", "rate", "duration", "warmup") for a in (f"--{k}", str(p[k]))]
        snaps: dict[str, Any] = {}
        with (logs / f"{tag}-loadgen.log").open("w") as err:
            proc = subprocess.Popen([sys.executable, "-m", *argv], cwd=c.ROOT, env=stack._env(),
                                    stdout=subprocess.PIPE, stderr=err, text=True)  # fmt: skip
            gen = psutil.Process(proc.pid)
            for line in read_lines(proc, time.monotonic() + 700):
                if line.startswith("RESULT "):
                    row.update(json.loads(line[len("RESULT ") :]))
                elif line.isupper():  # FIRST_ACK, LAST_ACK, WINDOW_START, WINDOW_END
                    snaps[line] = (*stack.snap(), sum(gen.cpu_times()[:2]))
            proc.wait(30)
        if len(snaps) < 2:
            row.setdefault("errors", []).append(f"incomplete load generator run: {tag}")
        elif delay is None:
            _throughput(row, stack, watch, snaps["FIRST_ACK"], snaps["LAST_ACK"], p["drain"])
        else:
            _latency(row, watch, snaps["WINDOW_START"], snaps["WINDOW_END"], p["fanout_drain"])
        row["events"] = stack.events()
        row["moto_peak_mb"] = round(max((s["moto_mb"] for s in watch.samples), default=0))
        if row["events"] is not None:  # a channel.created per channel, a message.created per write
            sent = row.get("accepted", row.get("acks")) or 0
            row["repeated_events"] = row["events"] - row.get("publishers", 1) - sent
        if watch.error:
            row.setdefault("errors", []).append(f"store watch: {watch.error}")
    finally:
        if watch is not None:
            watch.stop.set()
            watch.thread.join(30)
        stack.close(row)
    return row


def _throughput(row: dict[str, Any], stack: Stack, watch: Watch, first: Any, last: Any,
                drain: float) -> None:  # fmt: skip
    total, t0 = row["accepted"], row["t_first_ack"]
    end = watch.wait(lambda s: s["stored"] >= total, drain)
    now = stack.snap()
    span = (end["t"] if end else now[2]) - t0
    row.update(_cpu(first, now, row["loadgen_cpu_s"]), span_s=span, drained=end is not None)
    row["accept_rate"] = total / (row["t_last_ack"] - row["t_first_send"])
    row["write_rate"] = total / span if end else None
    row["node_accept_cpu_s"] = _cpu(first, last, 0)["node_cpu_s"]
    row["node_drain_cpu_s"] = _cpu(last, now, 0)["node_cpu_s"]
    after = [s for s in watch.samples if s["t"] >= row["t_last_ack"]]
    row["backlog_at_last_ack"] = after[0]["published"] - after[0]["stored"] if after else None
    row["progress"] = [(round(s["t"] - t0, 1), s["stored"]) for s in watch.samples]
    gauge0 = watch.wait(lambda s: s["gauge"] == 0, 30) if end else None
    row["gauge_zero_after_s"] = round(gauge0["t"] - end["t"], 1) if gauge0 and end else None
    row["complete_channels"] = trio.run(_verify, stack.moto.url, row.pop("tops")) if end else 0


async def _verify(url: str, tops: dict[str, int]) -> int:
    """How many channels have every offset 1..top in the store (read page by page)."""
    from gateway.store.dynamodb import open_dynamo_store

    complete = 0
    async with _aws(url) as aws, open_dynamo_store(aws, PREFIX) as store:
        for ch, top in tops.items():
            dense = 0  # offsets 1, 2, ... without a gap
            while page := await store.read(ch, dense, 1000):
                for r in page:
                    dense += r.offset == dense + 1
                if page[-1].offset != dense:
                    break
            complete += dense == top
    return complete


def _latency(row: dict[str, Any], watch: Watch, a: Any, b: Any, drain: float) -> None:
    row.update(_cpu(a, b, b[3] - a[3]))
    for k in ("node", "moto", "redis", "loadgen"):
        row[f"{k}_cpu_pct"] = round(100 * row.get(f"{k}_cpu_s", 0) / (b[2] - a[2]), 1)
    end = watch.wait(lambda s: s["published"] > 0 and s["stored"] >= s["published"], drain)
    during = [s for s in watch.samples if not end or s["t"] <= end["t"]]
    row["max_backlog"] = max(s["published"] - s["stored"] for s in during)
    row["max_backlog_gauge"] = max(s["gauge"] for s in during)
    at_end = next(s for s in watch.samples if s["t"] >= b[2])
    row["backlog_at_window_end"] = at_end["published"] - at_end["stored"]
    row["drained_after_s"] = round(end["t"] - b[2], 1) if end else None
    row["stored_at_end"], row["published_at_end"] = (
        watch.samples[-1][k] for k in ("stored", "published")
    )
    gauge0 = watch.wait(lambda s: s["gauge"] == 0, 30) if end else None
    row["gauge_zero_after_s"] = round(gauge0["t"] - b[2], 1) if gauge0 else None


# -- report and main --------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]], cols: str) -> list[str]:
    """A markdown table: ``cols`` is ``header=key:format`` entries separated by ``;``."""
    spec = [(h, *ks.split(":", 1)) for h, ks in (col.split("=") for col in cols.split(";"))]
    out = ["| " + " | ".join(h for h, _, _ in spec) + " |", "|" + "---:|" * len(spec)]
    for r in rows:
        cells = ["-" if r.get(k) is None else format(r[k], f) for _, k, f in spec]
        out.append("| " + " | ".join(cells) + " |")
    return out


def markdown(res: dict[str, Any]) -> str:
    m, p = res["machine"], res["params"]
    for r in res["throughput"]:
        r["node"] = "{node_cpu_s:.2f} ({node_accept_cpu_s:.2f} + {node_drain_cpu_s:.2f})".format(
            **{k: r.get(k) or 0 for k in ("node_cpu_s", "node_accept_cpu_s", "node_drain_cpu_s")}
        )
        r["complete"] = f"{r.get('complete_channels')}/{r.get('publishers')}"
    used = [r for r in res["latency"] if r.get("used")]
    for r in used:
        r["store"] = f"proxy +{r['delay_s'] * 1000:g} ms" if r["delay_s"] else "direct"
        r["store"] += " †" if (r.get("other_cpu_pct") or 0) >= DISTURBED_PCT else ""
        r["x_direct"] = " / ".join("-" if r.get(f"x_{k}") is None else f"{r[f'x_{k}']:.2f}"
                                   for k in ("p50", "p99", "max"))  # fmt: skip
        r["backlog"] = f"{r.get('max_backlog') or 0:,.0f} ({r.get('max_backlog_gauge') or 0:,.0f})"
        r["in_store"] = f"{r.get('stored_at_end') or 0:,.0f}/{r.get('published_at_end') or 0:,.0f}"
    dirty = " + uncommitted changes under gateway/" if m["gateway_dirty"] else ""
    return "\n".join([
        f"# Write-behind to DynamoDB on moto ({res['mode']} run, {res['started_utc']})\n",
        f"Machine: {m['cores']} cores ({m['cpu_model']}), Linux {m['kernel']}, Python "
        f"{m['python']}, moto {m['moto']}, redis-server {res['redis_version']}, gateway commit "
        f"{m['git_commit']}{dirty}. Node and redis-server on core 0; load generator, "
        "orchestrator, moto and FaultProxy on core 1 (moto and proxy at nice 19).\n",
        "## Write-behind throughput\n",
        f"{p['messages']:,} messages of 100 bytes, {p['channels']} channels, {p['window']} in "
        "flight per publisher; columns as in bench/README.md, 'Write-behind to DynamoDB'.\n",
        *_table(res["throughput"], "accepted=accepted:,;accept msg/s=accept_rate:,.0f;"
                "write-behind items/s=write_rate:,.1f;backlog at last ack=backlog_at_last_ack:,.0f;"
                "span s=span_s:.1f;node CPU s (accept + drain)=node:;moto CPU s=moto_cpu_s:.2f;"
                "redis CPU s=redis_cpu_s:.2f;other CPU %=other_cpu_pct:.1f;complete channels="
                "complete:;gauge 0 s=gauge_zero_after_s:.1f;repeated events=repeated_events:,;"
                "moto peak MiB=moto_peak_mb:,"),
        "\n## Fan-out latency while the store is slow\n",
        f"1 publisher and {p['n']} subscribers, {p['rate']:g} msg/s, {p['warmup']:g} s warm-up, "
        f"{p['duration']:g} s measured; x direct: ratio to this run's direct store; †: other "
        f"processes used >= {DISTURBED_PCT:g} % of a core (columns: bench/README.md).\n",
        *_table(used, "store=store:;p50 ms=p50_ms:.2f;p99 ms=p99_ms:.2f;max ms=max_ms:.2f;"
                "x direct p50 / p99 / max=x_direct:;lost=lost:,;max backlog (gauge)=backlog:;"
                "backlog at end=backlog_at_window_end:,.0f;drained s=drained_after_s:.1f;"
                "stored/published at end=in_store:;gauge 0 s=gauge_zero_after_s:.1f;"
                "repeated events=repeated_events:,;node CPU %=node_cpu_pct:.1f;"
                "moto CPU %=moto_cpu_pct:.1f;"
                "loadgen CPU %=loadgen_cpu_pct:.1f;"
                "other CPU %=other_cpu_pct:.1f"),
        *[f"\n- {r['delay_s']}: {e[:300]}" for r in res["throughput"] + res["latency"]
          for e in r.get("errors", [])],
        "",
    ])  # fmt: skip


def _mark(rows: list[dict[str, Any]]) -> None:
    """Per delay, the last attempt is used; ratios are against the direct run's."""
    last = {r["delay_s"]: r for r in rows}
    base = last.get(0.0, {})
    for r in rows:
        r["used"] = last[r["delay_s"]] is r
        for k in ("p50", "p99", "max"):
            b, v = base.get(f"{k}_ms"), r.get(f"{k}_ms")
            r[f"x_{k}"] = round(v / b, 2) if b and v is not None else None


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.persist", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="smoke run")
    ap.add_argument("--scenarios", default="throughput,latency", help="comma list")
    for k, v in FULL.items():  # --channels, --messages, --window, --n, --rate, --duration, ...
        kind = (lambda x: [float(d) for d in x.split(",")]) if k == "delays" else type(v)
        ap.add_argument(f"--{k.replace('_', '-')}", type=kind)
    ap.add_argument("--retries", type=int, default=1, help="re-runs of a disturbed run")
    ap.add_argument("--allow-concurrent", action="store_true", help="run beside another bench")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args(argv)
    args.params = p = dict(QUICK if args.quick else FULL)
    p.update({k: v for k, v in vars(args).items() if k in p and v is not None})
    if not 0 < p["messages"] <= 100_000 or not 0 < p["duration"] <= 120 or p["n"] > 2000:
        ap.error("messages in (0, 100000], duration in (0, 120] s, n at most 2000")
    stem = c.RESULTS / ("persist-quick" if args.quick else "persist")
    args.json, args.md = args.json or stem.with_suffix(".json"), args.md or stem.with_suffix(".md")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["proxy"]:  # a child: the FaultProxy
        trio.run(_proxy, argv[1], int(argv[2]), float(argv[3]))
        return
    if argv[:1] == ["publish"]:  # a child: the throughput load generator
        import uvloop

        c.pin(c.LOADGEN_CORE)
        c.raise_nofile()
        print("RESULT " + json.dumps(uvloop.run(_publish(*map(int, argv[1:5])))), flush=True)
        return
    args = parse_args(argv)
    if (found := c.other_benches()) and not args.allow_concurrent:
        sys.exit("another bench is running (or --allow-concurrent):\n  " + "\n  ".join(found))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: every process stopped
    c.pin(c.LOADGEN_CORE)
    c.raise_nofile()
    logs = Path(tempfile.mkdtemp(prefix="bench-persist-logs-"))
    git = ["git", "-C", str(c.ROOT), "status", "--porcelain", "--", "gateway"]
    dirty = subprocess.run(git, capture_output=True, text=True, check=False).stdout.splitlines()
    machine = {**c.machine_facts(), "moto": metadata.version("moto"), "gateway_dirty": dirty}
    res: dict[str, Any] = {"scenario": "persist", "mode": "quick" if args.quick else "full",
                           "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                           "machine": machine, "redis_version": redis_version(),
                           "params": args.params, "logs": str(logs), "throughput": [],
                           "latency": []}  # fmt: skip
    print(f"[persist] logs in {logs}", flush=True)
    plan: list[float | None] = [None] if "throughput" in args.scenarios else []
    plan += args.params["delays"] if "latency" in args.scenarios else []
    for delay in plan:
        for attempt in range(1 + args.retries):
            what = "throughput" if delay is None else f"latency, store delay {delay:g} s"
            print(f"[persist] {what} (attempt {attempt + 1}) ...", flush=True)
            t = time.monotonic()
            try:
                row = run(args.params, delay, logs, attempt)
            except (RuntimeError, OSError) as exc:  # a process did not start
                row = {"delay_s": delay, "attempt": attempt, "errors": [str(exc)[:3000]]}
            row["wall_s"] = round(time.monotonic() - t, 1)
            res["throughput" if delay is None else "latency"].append(row)
            _mark(res["latency"])
            args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
            brief = {k: v for k, v in row.items() if k not in ("progress", "log_problems")}
            print(f"[persist]   {json.dumps(brief, default=str)[:1500]}", flush=True)
            if (row.get("other_cpu_pct") or 0) < DISTURBED_PCT or "errors" in row:
                break
    res["finished_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    args.md.write_text(markdown(res))
    print("\n" + args.md.read_text())


if __name__ == "__main__":
    main()
