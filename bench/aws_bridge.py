"""Which way should trio talk to DynamoDB? All candidates against one moto server, one run.

Candidates (each a subprocess pinned to core 0; moto's server pinned to core 1):

* ``trio-asyncio``  aioboto3 15.5 (aiobotocore 2.25, aiohttp) under ``trio_asyncio.open_loop()``,
                    every call crossing with ``aio_as_trio``. aioboto3 pins an aiobotocore
                    that conflicts with 3.x, so it runs from another venv:
                    ``python3 -m venv /tmp/aws-a && /tmp/aws-a/bin/pip install
                    aioboto3==15.5.0 trio-asyncio trio``, then
                    ``--python trio-asyncio=/tmp/aws-a/bin/python``
* ``anyio-httpx``   aiobotocore 3.x with ``AioConfig(http_session_cls=HttpxSession)`` on trio
                    (httpx2 through anyio), the bare SDK client
* ``gateway``       :func:`gateway.aws.open_aws`: ``anyio-httpx`` plus the bridge's retries,
                    error translation and per-call child task
* ``thread``        botocore's sync client, one ``trio.to_thread.run_sync`` per call (a peer
                    for reference: trio's default limiter, so at most 40 in flight)

Scenarios (after 30 warm-up calls): ``seq`` GetItem one at a time; ``conc`` PutItem from 16
tasks; ``cancel`` 16 tasks x GetItem, each under ``move_on_after(uniform(0, 20 ms))`` so
cancellation lands at every stage of a request, then one plain call must succeed; ``hang``
moto's server stopped (SIGSTOP) for 2 s under 16 calls with 0.2 s deadlines. Reported:
requests/s, client CPU us/request (getrusage of the client process, threads included), moto
CPU us/request, for ``cancel`` and ``hang`` the worst lateness of a cancelled call past its
deadline, and the client's open file descriptors after ``cancel`` minus before (a leak grows
it). The result is
the median over ``--repeat`` repetitions, interleaved over candidates.

    .venv/bin/python -m bench.aws_bridge [--quick] [--python NAME=PATH] [--candidates a,b]

Last full run (2 cores shared with other work, 600 requests x 3 repetitions, medians; the
per-repetition spread is up to ~1.5x, see ``bench/results/aws_bridge.md``): client CPU per
sequential GetItem trio-asyncio 4.2 ms, anyio-httpx 3.7 ms, gateway 3.7 ms, thread 1.8 ms;
16-task PutItem 3.7 / 3.0 / 3.2 / 1.4 ms; moto itself 2.5-3.8 ms per request (so ~130-270
requests/s for everyone). Cancelled calls against a stopped server returned 8-23 ms past
their deadline for the async candidates and 1,861 ms (when the server came back) for the
thread one; no candidate leaked a file descriptor. Chosen: anyio-httpx, behind gateway.aws.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    HOST,
    RESULTS,
    ROOT,
    free_port,
    machine_facts,
    pin,
    system_busy_seconds,
    wait_quiet,
)

CANDIDATES = ("trio-asyncio", "anyio-httpx", "gateway", "thread")
SCENARIOS = ("seq", "conc", "cancel")
TASKS = 16
HANG_S = 2.0  # seconds moto stays stopped in the ``hang`` scenario
REGION = "us-east-1"
CREDS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


# -- child: one candidate, every scenario ------------------------------------------------------


def _opener(name: str, url: str) -> Any:
    """An async context manager yielding ``call(op, **params)`` for candidate ``name``."""
    from contextlib import asynccontextmanager

    import trio

    if name == "gateway":
        from gateway.aws import open_aws

        @asynccontextmanager
        async def gateway_client() -> Any:
            key, secret = CREDS.values()
            async with open_aws(url, REGION, access_key=key, secret_key=secret) as aws:
                yield aws.dynamodb

        return gateway_client()
    if name == "anyio-httpx":
        from aiobotocore.config import AioConfig
        from aiobotocore.httpxsession import HttpxSession
        from aiobotocore.session import AioSession

        @asynccontextmanager
        async def httpx_client() -> Any:
            config = AioConfig(http_session_cls=HttpxSession, max_pool_connections=32)
            session = AioSession()
            session.set_default_client_config(config)
            maker = session.create_client(
                "dynamodb", region_name=REGION, endpoint_url=url, config=config, **CREDS
            )
            async with maker as client:
                yield lambda op, **kw: getattr(client, op)(**kw)

        return httpx_client()
    if name == "trio-asyncio":
        import aioboto3
        import trio_asyncio
        from botocore.config import Config

        @asynccontextmanager
        async def aio_client() -> Any:
            async with trio_asyncio.open_loop():
                session = aioboto3.Session(region_name=REGION, **CREDS)
                maker = session.client(
                    "dynamodb", endpoint_url=url, config=Config(max_pool_connections=32)
                )
                client = await trio_asyncio.aio_as_trio(maker.__aenter__)()
                try:
                    yield lambda op, **kw: trio_asyncio.aio_as_trio(getattr(client, op))(**kw)
                finally:
                    await trio_asyncio.aio_as_trio(maker.__aexit__)(None, None, None)

        return aio_client()
    if name == "thread":
        import botocore.session
        from botocore.config import Config

        @asynccontextmanager
        async def thread_client() -> Any:
            session = botocore.session.get_session()
            client = session.create_client(
                "dynamodb",
                region_name=REGION,
                endpoint_url=url,
                config=Config(max_pool_connections=40),
                **CREDS,
            )

            async def call(op: str, **kw: Any) -> Any:
                return await trio.to_thread.run_sync(lambda: getattr(client, op)(**kw))

            try:
                yield call
            finally:
                client.close()

        return thread_client()
    raise SystemExit(f"unknown candidate {name!r}")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _moto_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _child(name: str, url: str, n: int, moto_pid: int) -> dict[str, Any]:
    import trio

    out: dict[str, Any] = {}
    async with _opener(name, url) as call:
        table = f"bench-{name}-{uuid.uuid4().hex[:8]}"
        await call(
            "create_table",
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        for i in range(30):
            await call("put_item", TableName=table, Item={"pk": {"S": f"k{i}"}})

        async def get(i: int) -> None:
            await call("get_item", TableName=table, Key={"pk": {"S": f"k{i % 30}"}})

        async def put(i: int) -> None:
            await call("put_item", TableName=table, Item={"pk": {"S": f"k{i % 30}"}})

        async def measure(scenario: str) -> None:
            fds = len(os.listdir("/proc/self/fd"))  # the pool is warm by now
            t0, c0, m0 = time.perf_counter(), _cpu(), _moto_cpu(moto_pid)
            late: list[float] = []
            if scenario == "seq":
                for i in range(n):
                    await get(i)
            else:
                left = iter(range(n))

                async def worker() -> None:
                    for i in left:
                        if scenario == "conc":
                            await put(i)
                            continue
                        limit = random.uniform(0.0, 0.020)
                        deadline = trio.current_time() + limit
                        with trio.move_on_after(limit):
                            await get(i)
                        late.append(max(0.0, trio.current_time() - deadline))

                async with trio.open_nursery() as nursery:
                    for _ in range(TASKS):
                        nursery.start_soon(worker)
            dt, dc, dm = time.perf_counter() - t0, _cpu() - c0, _moto_cpu(moto_pid) - m0
            row = {"rps": n / dt, "client_us": dc / n * 1e6, "moto_us": dm / n * 1e6}
            if scenario == "cancel":
                row["late_max_ms"] = max(late) * 1000
                await trio.sleep(0.2)  # let closed connections settle
                with trio.fail_after(10):
                    await get(0)  # still usable after all that
                row["fds_delta"] = len(os.listdir("/proc/self/fd")) - fds
            out[scenario] = row

        async def hung() -> None:
            """moto stopped (SIGSTOP) for HANG_S: how late do 0.2 s deadlines fire?"""
            returned: list[float] = []

            async def one(i: int) -> None:
                with trio.move_on_after(0.2):
                    await get(i)
                returned.append(trio.current_time() - start)

            os.kill(moto_pid, signal.SIGSTOP)
            try:
                start = trio.current_time()
                async with trio.open_nursery() as nursery:
                    for i in range(TASKS):
                        nursery.start_soon(one, i)
                    await trio.sleep(HANG_S)
                    os.kill(moto_pid, signal.SIGCONT)
            finally:
                os.kill(moto_pid, signal.SIGCONT)
            with trio.fail_after(30):
                await get(0)  # usable again
            out["hang"] = {"late_max_ms": (max(returned) - 0.2) * 1000}

        for scenario in SCENARIOS:
            await measure(scenario)
        await hung()
        await call("delete_table", TableName=table)
    return out


# -- parent: moto, candidates, tables ------------------------------------------------------


def _start_moto(logdir: Path) -> Any:
    from tests.services import MotoServer  # the tests' process manager for moto

    server = MotoServer(logdir, free_port())
    server.start()
    assert server.pid is not None
    os.sched_setaffinity(server.pid, {1 % (os.cpu_count() or 1)})
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 requests, 1 repetition")
    ap.add_argument("--n", type=int, default=600, help="requests per scenario")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--python", action="append", default=[], help="NAME=PATH interpreter")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--moto-pid", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import trio

        pin(0)
        try:
            result = trio.run(_child, args.child, args.url, args.n, args.moto_pid)
        except ImportError as exc:
            result = {"error": f"not installed here: {exc}"}
        print(json.dumps(result))
        return
    if args.quick:
        args.n, args.repeat = 100, 1
    pythons = dict(p.split("=", 1) for p in args.python)
    names = [c for c in args.candidates.split(",") if c]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = _start_moto(out / "logs" / "aws_bridge-moto")
    url = server.url
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in names}
    try:
        for rep in range(args.repeat):
            for name in names if rep % 2 == 0 else names[::-1]:
                waited = wait_quiet(max_wait=30)
                busy0, t0 = system_busy_seconds()[0], time.monotonic()
                cmd = [pythons.get(name, sys.executable), "-m", "bench.aws_bridge"]
                cmd += ["--child", name, "--url", url, "--n", str(args.n)]
                cmd += ["--moto-pid", str(server.pid)]
                try:
                    proc = subprocess.run(
                        cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
                    )
                finally:
                    server.resume()  # whatever the child did to it
                lines = proc.stdout.strip().splitlines()
                if proc.returncode != 0 or not lines:
                    result = {"error": f"exit {proc.returncode}: {proc.stderr[-800:]}"}
                else:
                    result = json.loads(lines[-1])
                result["waited_for_quiet_s"] = waited
                # whole machine, both cores: client + moto + anything else running meanwhile
                busy = (system_busy_seconds()[0] - busy0) / (time.monotonic() - t0)
                result["machine_busy_cores"] = round(busy, 2)
                runs[name].append(result)
                print(name, json.dumps(result), flush=True)
    finally:
        server.stop()
    facts = machine_facts()
    facts["packages"] |= _versions(pythons, names)
    doc = {"n": args.n, "repeat": args.repeat, "host": HOST, "machine": facts, "runs": runs}
    suffix = "-quick" if args.quick else ""
    (out / f"aws_bridge{suffix}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / f"aws_bridge{suffix}.md").write_text(_markdown(doc))
    print(_markdown(doc))


def _versions(pythons: dict[str, str], names: list[str]) -> dict[str, str]:
    found = {}
    for name in names:
        code = (
            "import importlib.metadata as m, json; v = {}\n"
            "for p in ('aioboto3', 'aiobotocore', 'botocore', 'trio-asyncio', 'httpx2', 'moto'):\n"
            "    try: v[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(v))"
        )
        py = pythons.get(name, sys.executable)
        got = subprocess.run([py, "-c", code], capture_output=True, text=True, check=False)
        for pkg, version in json.loads(got.stdout or "{}").items():
            found[f"{name}:{pkg}"] = version
    return found


def _markdown(doc: dict[str, Any]) -> str:
    def med(name: str, scenario: str, field: str) -> str:
        values = [r[scenario][field] for r in doc["runs"][name] if scenario in r]
        if not values:
            return "n/a"
        value = statistics.median(values)
        return f"{value:,.0f}" if abs(value) >= 10 else f"{value:,.1f}"

    pk = doc["machine"]["packages"]
    lines = [
        "# DynamoDB API from trio: bridge candidates against moto's server",
        "",
        f"{doc['n']} requests per scenario, {doc['repeat']} repetition(s), median shown. "
        f"Client pinned to core 0, moto's server to core 1. Versions: "
        + ", ".join(f"{k} {v}" for k, v in sorted(pk.items()) if ":" in k)
        + ".",
        "",
        "| candidate | seq req/s | seq client us/req | conc (16 tasks) req/s "
        "| conc client us/req | moto us/req (seq) | cancel: worst lateness ms "
        "| cancel: fd delta | hung server: worst lateness ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, results in doc["runs"].items():
        errors = [r["error"] for r in results if "error" in r]
        if errors and len(errors) == len(results):
            lines.append(f"| {name} | {errors[0][:60]} | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {med(name, 'seq', 'rps')} | {med(name, 'seq', 'client_us')} "
            f"| {med(name, 'conc', 'rps')} | {med(name, 'conc', 'client_us')} "
            f"| {med(name, 'seq', 'moto_us')} | {med(name, 'cancel', 'late_max_ms')} "
            f"| {med(name, 'cancel', 'fds_delta')} | {med(name, 'hang', 'late_max_ms')} |"
        )
    busy = {n: [r.get("machine_busy_cores", 0.0) for r in rs] for n, rs in doc["runs"].items()}
    lines += [
        "",
        "Machine busy during each candidate's runs (cores, of 2; client + moto + others): "
        + ", ".join(f"{n} {statistics.median(b):.2f}" for n, b in busy.items() if b)
        + ".",
        "",
        NOTES,
    ]
    return "\n".join(lines) + "\n"


NOTES = """## Reading it

* moto's server costs 3.5-5 ms of CPU per request and answers every request with
  `Connection: close`, so every call here opens a TCP connection: the numbers compare the
  candidates with each other on one workload, they say nothing about DynamoDB itself (a
  keep-alive TLS pool). Request rates are moto's ceiling (~100-250/s), not the clients'.
* Client CPU per request is dominated by botocore (serializing, signing, parsing, event
  hooks): the three async candidates are within the run-to-run noise of each other; the sync
  botocore client in a thread is cheaper per request (urllib3 instead of an async stack).
* `cancel`: every candidate returned the cancelled calls and stayed usable, with no file
  descriptor left behind; the worst lateness there is mostly scheduling delay on a shared
  two-core machine. `hang` is the telling one: the async candidates return within
  milliseconds of the deadline, while the thread candidate cannot interrupt a request already
  in its thread, so its cancelled calls return only when the stopped server comes back
  (about the 2 s it was stopped); a server that never answers would hold them until the
  SDK's read timeout.
* The per-repetition numbers in the JSON vary by up to 2x for the same candidate (other
  sessions' work on the machine; see the busy figure): differences below that are noise.

## Decision: `anyio-httpx` (aiobotocore 3.x + httpx2 on trio), wrapped by `gateway.aws`

Performance does not separate the async candidates, so the choice rests on what else they
bring. aiobotocore 3.9+ runs its httpx transport on trio through anyio as a supported mode
(its credential providers, retry sleeps and locks switch to anyio), so there is one event
loop, trio's cancellation reaches the socket, and nothing else must be installed.
aioboto3 15.5 pins aiobotocore 2.25 / botocore 1.40 (it cannot be installed beside
aiobotocore 3.x, and drags boto3 and moto back with it), and trio-asyncio adds a second
loop and a cross-loop hop per call. The thread peer is out for cancellation. The bridge's own
cost (retries, error translation, a child task per call that isolates botocore's per-call
ContextVar) does not show above the noise.
"""


if __name__ == "__main__":
    main()
