"""Real Redis servers for the tests: a standalone server and a 3-master cluster.

Synchronous process management on top of :mod:`subprocess`: every server is a child
``redis-server`` in its own process group, on a loopback port, with its data, AOF and log in
a directory of its own. AOF with ``appendfsync always`` means a key whose write was
acknowledged survives ``stop()`` (SIGTERM) and ``kill()`` (SIGKILL) alike, so fault tests
can kill, pause and restart servers and check what is still there.

There are no fallbacks: without ``redis-server``/``redis-cli`` on PATH, :func:`find_binary`
raises a :class:`RuntimeError` that says what is missing and how to install it
(``./scripts/test`` does).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self, TypeAlias

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
CLUSTER_TIMEOUT = 20.0
CLUSTER_SLOTS = 16384

RespValue: TypeAlias = "str | int | list[RespValue] | None"

_live: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_all() -> None:
    """Last resort: no redis-server outlives the test process, whatever happened."""
    for proc in list(_live):
        _killpg(proc, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
    _live.clear()


def _killpg(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child leads its own process group (start_new_session), so this also reaches
    # any AOF-rewrite child it forked.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def find_binary(name: str) -> str:
    """The absolute path of ``name`` on PATH, or a RuntimeError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} not found on PATH: ./scripts/test installs it "
            "(apt-get install redis-server redis-tools)"
        )
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is valid and free as well."""
    for _ in range(200):
        port = free_port()
        if port + 10000 <= 65535 and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) found on 127.0.0.1")


class RedisReplyError(Exception):
    """Redis answered a command with an error reply (``-ERR ...``)."""


class _Resp:
    """A minimal blocking RESP2 client: one connection, one command at a time."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:i])
        del self.buf[: i + 2]
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[: n + 2]
        return data

    def read(self) -> RespValue:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisReplyError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode("utf-8", "surrogateescape")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"unexpected RESP reply: {line[:80]!r}")

    def call(self, *args: str | bytes | int) -> RespValue:
        out = bytearray(b"*%d\r\n" % len(args))
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out += b"$%d\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(out)
        return self.read()


def resp_call(host: str, port: int, *args: str | bytes | int, timeout: float = 5.0) -> RespValue:
    """Send one command on a fresh connection and return the decoded reply.

    Bulk strings are decoded as UTF-8 (``surrogateescape``); an error reply raises
    :class:`RedisReplyError`.
    """
    conn = _Resp(host, port, timeout)
    try:
        return conn.call(*args)
    finally:
        conn.close()


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a server on host:port answers PING with +PONG (raw socket, no client lib)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while b"\r\n" not in reply:
                chunk = s.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"+PONG")
    except OSError:
        return False


class _ChildServer:
    """Lifecycle of one server child process in its own process group: the parts that
    do not depend on what the server is. Subclasses set ``_proc`` in ``start``."""

    host = HOST
    url: str
    dir: Path

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    def start(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.url} {state} dir={self.dir}>"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """The process exists (it may be paused)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self.running and self._paused

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def stop(self) -> None:
        """SIGTERM and wait (a paused server is continued first; one that does not exit
        within 10 s is killed)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                _killpg(proc, signal.SIGCONT)
            _killpg(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _killpg(proc, signal.SIGKILL)
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL (the whole process group) and wait: a crash, nothing is flushed on exit."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _killpg(proc, signal.SIGKILL)
            proc.wait()
        self._reap()

    def pause(self) -> None:
        """SIGSTOP: the port stays open, connections hang until :meth:`resume`."""
        if not self.running or self._proc is None:
            raise RuntimeError(f"{self!r} is not running")
        _killpg(self._proc, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if not self.running or self._proc is None:
            raise RuntimeError(f"{self!r} is not running")
        _killpg(self._proc, signal.SIGCONT)
        self._paused = False

    def restart(self) -> None:
        """Stop (or kill, if it will not stop) and start again on the same port and dir."""
        self.stop()
        self.start()

    def _reap(self) -> None:
        if self._proc is not None:
            _live.discard(self._proc)
        self._proc = None
        self._paused = False


class RedisServer(_ChildServer):
    """One ``redis-server`` child process on 127.0.0.1.

    ``port`` defaults to a free port; it and ``dir`` stay the same across restarts, so
    ``url`` stays valid and the data (AOF in ``dir``) comes back.
    """

    def __init__(self, dir: Path, port: int | None = None, *, cluster: bool = False) -> None:
        self.dir = Path(dir).resolve()
        self.cluster = cluster
        if port is None:
            port = free_cluster_port() if cluster else free_port()
        self.port = port
        self.url = f"redis://{self.host}:{self.port}"
        self.logfile = self.dir / "redis.log"
        self._outfile = self.dir / "redis.out"
        super().__init__()

    def ping(self, timeout: float = 1.0) -> bool:
        return ping(self.host, self.port, timeout)

    def args(self) -> list[str]:
        args = [
            find_binary("redis-server"),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", str(self.logfile),
        ]  # fmt: skip
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
        return args

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for path in (self._outfile, self.logfile):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts) or "(no log output)"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait (at most 10 s) until it answers PING."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        args = self.args()  # raises a clear RuntimeError if redis-server is missing
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._outfile.open("ab") as out:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # own process group: killpg reaches it all
            )
        self._proc = proc
        self._paused = False
        _live.add(proc)
        deadline = time.monotonic() + START_TIMEOUT
        taken = ""
        while True:
            if proc.poll() is not None:
                self._reap()
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with code {proc.returncode} "
                    f"while starting{taken}:\n{self.log_tail()}"
                )
            if self.ping(timeout=0.5):
                owner = self._server_pid()
                if owner == proc.pid:
                    return
                if owner is not None:
                    # Another redis-server holds the port: ours fails to bind and exits.
                    taken = f" (port taken by another redis-server, pid {owner})"
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                    continue
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{START_TIMEOUT:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _server_pid(self) -> int | None:
        """The process_id the server on our port reports, or None if it cannot tell."""
        try:
            info = self.call("INFO", "server")
        except (OSError, RedisReplyError):
            return None
        if isinstance(info, str):
            for line in info.splitlines():
                if line.startswith("process_id:"):
                    return int(line.split(":", 1)[1])
        return None

    # -- commands ----------------------------------------------------------------------

    def command(self, *args: str) -> str:
        """Run ``redis-cli -h HOST -p PORT ARGS...`` and return its stdout minus the final
        newline. Options may come first (``command("-c", "SET", "k", "v")``). Non-zero exit
        raises :class:`subprocess.CalledProcessError`.
        """
        result = subprocess.run(
            [find_binary("redis-cli"), "-h", self.host, "-p", str(self.port), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.removesuffix("\n")

    def call(self, *args: str | bytes | int) -> RespValue:
        """Send one command over a raw socket and return the decoded RESP reply."""
        return resp_call(self.host, self.port, *args)

    def flushall(self) -> None:
        self.call("FLUSHALL")


SlotRange: TypeAlias = tuple[int, int, int]
"""(first slot, last slot, port of the master serving them)"""


class RedisCluster:
    """A Redis Cluster of ``masters`` (default 3) masters and no replicas.

    Each node is a :class:`RedisServer` with ``cluster=True`` in ``dir/nodeN``. ``url`` is
    the first node's URL: cluster clients discover the others from it.
    """

    def __init__(self, dir: Path, masters: int = 3) -> None:
        self.dir = Path(dir).resolve()
        self.nodes: list[RedisServer] = [
            RedisServer(self.dir / f"node{i}", cluster=True) for i in range(masters)
        ]
        self.urls = [node.url for node in self.nodes]
        self.url = self.urls[0]

    def __repr__(self) -> str:
        return f"<RedisCluster {' '.join(self.urls)}>"

    def __enter__(self) -> RedisCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)

    def start(self) -> None:
        """Start the nodes, create the cluster, wait (at most 20 s) until it is consistent."""
        try:
            for node in self.nodes:
                node.start()
            if not (self.dir / "created").exists():
                self._create()
            self.wait_ok()
        except BaseException:
            self.kill()
            raise

    def _create(self) -> None:
        cli = find_binary("redis-cli")
        addrs = [f"{node.host}:{node.port}" for node in self.nodes]
        result = subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLUSTER_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        (self.dir / "created").write_text(result.stdout)

    def slots(self, node: RedisServer | None = None) -> list[SlotRange]:
        """The slot map as ``node`` (default: the first) sees it, sorted by first slot."""
        reply = (node or self.nodes[0]).call("CLUSTER", "SLOTS")
        ranges: list[SlotRange] = []
        assert isinstance(reply, list)
        for entry in reply:
            assert isinstance(entry, list)
            first, last, master = entry[0], entry[1], entry[2]
            assert isinstance(first, int) and isinstance(last, int)
            assert isinstance(master, list) and isinstance(master[1], int)
            ranges.append((first, last, master[1]))
        return sorted(ranges)

    def _problem(self) -> str | None:
        """Why the cluster is not ready yet, or None when it is."""
        maps = []
        for node in self.nodes:
            try:
                info = node.call("CLUSTER", "INFO")
                slots = self.slots(node)
            except (OSError, RedisReplyError) as e:
                return f"{node.url}: {e}"
            if not isinstance(info, str) or "cluster_state:ok" not in info:
                return f"{node.url}: not cluster_state:ok:\n{info}"
            maps.append(slots)
        if any(m != maps[0] for m in maps):
            return f"nodes disagree on CLUSTER SLOTS: {maps}"
        covered = sum(last - first + 1 for first, last, _ in maps[0])
        if covered != CLUSTER_SLOTS:
            return f"{covered} of {CLUSTER_SLOTS} slots covered: {maps[0]}"
        return None

    def wait_ok(self, timeout: float = CLUSTER_TIMEOUT) -> None:
        """Wait until every node says cluster_state:ok and all agree on the slot map."""
        deadline = time.monotonic() + timeout
        while (problem := self._problem()) is not None:
            if time.monotonic() > deadline:
                logs = "\n".join(node.log_tail(10) for node in self.nodes)
                raise RuntimeError(f"cluster not ready after {timeout:.0f} s: {problem}\n{logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()


# -- moto's server: a local DynamoDB/S3 API --------------------------------------------------

import http.client  # noqa: E402
import sys  # noqa: E402


def moto_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if an HTTP server on host:port answers ``GET /moto-api/`` with any status."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/moto-api/")
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class MotoServer(_ChildServer):
    """moto's server (``python -m moto.server``) as a child process on 127.0.0.1.

    It keeps everything in memory: a restart (or a kill) comes back empty, with no tables.
    ``port`` defaults to a free port and stays the same across restarts, so ``url`` stays
    valid. There is no fallback: if moto is not installed (``pip install -e '.[test]'``
    installs ``moto[server]``) or does not answer within 30 s, :meth:`start` raises a
    RuntimeError saying why, with the server's output.
    """

    start_timeout = 30.0

    def __init__(self, dir: Path, port: int | None = None) -> None:
        self.dir = Path(dir).resolve()
        self.port = free_port() if port is None else port
        self.url = f"http://{self.host}:{self.port}"
        self.logfile = self.dir / "moto.log"
        super().__init__()

    def ping(self, timeout: float = 1.0) -> bool:
        return moto_answers(self.host, self.port, timeout)

    def args(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.logfile.read_text(errors="replace").splitlines()[-lines:]
            if text:
                return f"--- {self.logfile}\n" + "\n".join(text)
        return "(no log output)"

    def _bound(self) -> bool:
        """Our process says it listens on our port (not another server that answered)."""
        with contextlib.suppress(OSError):
            return f"Running on {self.url}" in self.logfile.read_text(errors="replace")
        return False

    def start(self) -> None:
        """Start the server and wait (at most 30 s) until it answers HTTP."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logfile.write_bytes(b"")
        with self.logfile.open("ab") as out:
            proc = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._proc = proc
        self._paused = False
        _live.add(proc)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                self._reap()
                raise RuntimeError(
                    f"moto server on port {self.port} exited with code {proc.returncode} while "
                    f"starting (is moto[server] installed? pip install -e '.[test]'):\n"
                    f"{self.log_tail()}"
                )
            if self._bound() and self.ping(timeout=0.5):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"moto server on port {self.port} did not answer within "
                    f"{self.start_timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
