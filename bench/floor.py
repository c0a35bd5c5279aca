"""The floor under fan-out: CPU cost of writing one small frame to one loopback socket.

    python -m bench.floor            # 1,000 sockets x 200 rounds, ~1 min

A server process pinned to core 0 holds N accepted TCP sockets; a reader process pinned to
core 1 drains them. The server writes the same 124-byte WebSocket frame (4-byte header +
120-byte JSON, the size of a fan-out frame of a 100-byte body) to every socket, round after
round, with ``os.write`` and with ``socket.send``, TCP_NODELAY on and off, and reports its
own CPU time (user + sys) per write. No server can fan out one message to one subscriber
for less than this: on loopback the kernel charges the sender for both its send path and
the receiver's TCP processing (softirq). Writes bench/results/floor.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import resource
import select
import socket
import time
from pathlib import Path
from typing import Any

from bench.common import machine_facts

FRAME = b"\x81\x78" + b"x" * 120  # a 122-byte unmasked text frame


def _reader(port: int, n: int, ready: Any, stop: Any) -> None:
    os.sched_setaffinity(0, {1})
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    ready.set()
    ep = select.epoll()
    by_fd = {}
    for s in socks:
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = s
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        for fd, _ in ep.poll(0.2):
            with contextlib.suppress(BlockingIOError):
                by_fd[fd].recv(65536)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(n: int, rounds: int, mode: str, nodelay: bool) -> dict[str, Any]:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    ready, stop = mp.Event(), mp.Event()
    proc = mp.Process(target=_reader, args=(srv.getsockname()[1], n, ready, stop))
    proc.start()
    conns = [srv.accept()[0] for _ in range(n)]
    ready.wait(60)
    for c in conns:
        c.setblocking(False)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
    fds = [c.fileno() for c in conns]
    time.sleep(0.5)
    write = os.write
    c0 = _cpu()
    for _ in range(rounds):
        if mode == "os.write":
            for fd in fds:
                write(fd, FRAME)
        else:
            for c in conns:
                c.send(FRAME)
        time.sleep(0.02)  # let the reader drain: measure steady state, not full buffers
    spent = _cpu() - c0
    stop.set()
    proc.join(10)
    for c in conns:
        c.close()
    srv.close()
    return {
        "mode": mode,
        "nodelay": nodelay,
        "writes": n * rounds,
        "cpu_us_per_write": round(spent / (n * rounds) * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {0})
    rows = [
        measure(args.n, args.rounds, mode, nodelay)
        for mode in ("os.write", "socket.send")
        for nodelay in (True, False)
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_facts(), "n": args.n, "rounds": args.rounds, "rows": rows}
    (out / "floor.json").write_text(json.dumps(result, indent=2))
    lines = [
        "### Write floor (one 122-byte frame to one loopback TCP socket)",
        "",
        f"{args.n} sockets x {args.rounds} rounds, writer on core 0, reader on core 1.",
        "",
        "| call | TCP_NODELAY | CPU us per write |",
        "|---|---|---:|",
        *(
            f"| {r['mode']} | {'on' if r['nodelay'] else 'off'} | {r['cpu_us_per_write']} |"
            for r in rows
        ),
    ]
    text = "\n".join(lines) + "\n"
    (out / "floor.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
