"""Tests of the AWS bridge, and :class:`FaultProxy`: a real HTTP hop in front of moto.

moto cannot be told to throttle or to drop a connection, so the tests that need AWS to
misbehave put this small trio HTTP/1.1 proxy between the SDK and moto's server. Each request
passes through unchanged unless a :class:`Rule` matches its operation (the
``X-Amz-Target`` header's last part, e.g. ``"TransactWriteItems"``):

* ``reply``: answer with a canned AWS error (``throttle`` and ``server_error`` make one);
  moto never sees the request;
* ``drop``: close the connection without answering; moto never sees the request;
* ``land_then_drop``: forward to moto, then close without answering (the request happened,
  the client cannot know it: the "crash between" case);
* ``hang``: hold the request until ``release()`` (or forever), then forward it;
* ``delay``: wait ``seconds``, then forward it (a slow store; several requests wait at
  once);
* ``partial``: for ``BatchWriteItem``: forward only the first half (rounded up) of each
  table's write requests and answer the rest as ``UnprocessedItems``, as DynamoDB does
  when a partition is throttled;
* ``pass``: forward it (a rule that lets the next ``times`` requests through).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import trio

from gateway.aws import Aws, RetryPolicy, open_aws

__all__ = ["FAST", "FaultProxy", "Rule", "connect", "one_request_at_a_time", "open_fault_proxy"]

FAST = RetryPolicy(attempts=4, base=0.005, cap=0.05, timeout=10.0)
"""Retries for tests: the same number of tries as in production, much shorter sleeps."""


_MOTO_TURN: trio.lowlevel.RunVar[trio.Lock] = trio.lowlevel.RunVar("moto_turn")


def one_request_at_a_time(aws: Aws) -> None:
    """Make ``aws`` send its requests to moto one at a time, with every other ``aws`` so
    treated in this test (one lock per trio run).

    DynamoDB applies each request atomically; moto's threaded server does not: a conditional
    ``UpdateItem`` that creates an item checks its condition, validates, then writes, and
    other threads' requests pass the same check in between (several "winners" of one
    expected version), and a cancelled transaction restores copies of whole tables taken
    when it began (undoing writes that landed meanwhile). One request at a time restores
    the per-request atomicity the adapter relies on; tasks still interleave between
    requests, so its read-decide-write races are exercised as before."""
    try:
        lock = _MOTO_TURN.get()
    except LookupError:
        lock = trio.Lock()
        _MOTO_TURN.set(lock)
    call = aws.call

    async def one_at_a_time(service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        async with lock:
            return await call(service, operation, **params)

    aws.call = one_at_a_time  # type: ignore[method-assign]


def connect(url: str, retry: RetryPolicy = FAST) -> AbstractAsyncContextManager[Aws]:
    """:func:`open_aws` on moto (or a proxy to it), with test credentials: no credential
    chain, so nothing ever asks an instance metadata endpoint."""
    return open_aws(url, "us-east-1", access_key="testing", secret_key="testing", retry=retry)


_HOP = {b"host", b"content-length", b"transfer-encoding", b"connection", b"content-encoding"}
DYNAMO_ERROR = "com.amazonaws.dynamodb.v20120810#"


@dataclasses.dataclass
class Rule:
    """Do ``kind`` to the next ``times`` requests of operation ``op`` (None: any)."""

    kind: str  # "reply" | "drop" | "land_then_drop" | "hang" | "delay" | "partial" | "pass"
    times: int = 1
    op: str | None = None
    status: int = 400
    body: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0  # "delay"
    contains: tuple[bytes, ...] = ()  # only requests whose body holds each of these


class FaultProxy:
    """A trio HTTP/1.1 proxy to ``upstream`` applying :class:`Rule` s (see the module)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self.rules: list[Rule] = []
        self.seen: list[str] = []  # operations of every request received, in order
        self.forwarded: list[str] = []  # operations moto received
        self.connections = 0  # client connections open now
        self._release = trio.Event()

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def throttle(self, times: int = 1, op: str | None = None) -> Rule:
        body = {"__type": DYNAMO_ERROR + "ThrottlingException", "message": "Rate exceeded"}
        return self.add(Rule("reply", times, op, 400, body))

    def server_error(self, times: int = 1, op: str | None = None) -> Rule:
        body = {"__type": DYNAMO_ERROR + "InternalServerError", "message": "injected"}
        return self.add(Rule("reply", times, op, 500, body))

    def delay(self, seconds: float, times: int = 1_000_000, op: str | None = None) -> Rule:
        return self.add(Rule("delay", times, op, seconds=seconds))

    def release(self) -> None:
        """Let held (``hang``) requests go on, and stop holding new ones."""
        self._release.set()
        self.rules = [r for r in self.rules if r.kind != "hang"]

    def clear(self) -> None:
        self.rules.clear()

    def _match(self, op: str, body: bytes) -> Rule | None:
        for rule in self.rules:
            if rule.times > 0 and rule.op in (None, op) and all(c in body for c in rule.contains):
                rule.times -= 1
                return rule
        return None

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, httpx.HTTPError):
            pass  # the client or moto went away: so does this connection
        finally:
            self.connections -= 1

    async def _hold(self, conn: h11.Connection, stream: trio.SocketStream) -> bool:
        """Wait for ``release()``; False if the client closed the connection first."""
        hung_up = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal hung_up
                data = await stream.receive_some(65536)
                if data:
                    conn.receive_data(data)  # pipelined: h11 keeps it for later
                    await trio.sleep_forever()
                hung_up = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await self._release.wait()
            nursery.cancel_scope.cancel()
        return not hung_up

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream, httpx.AsyncClient(base_url=self.upstream, timeout=30) as client:
            while True:
                got = await _read_request(conn, stream)
                if got is None:
                    return
                request, body = got
                headers = {k.lower(): v for k, v in request.headers}
                target = headers.get(b"x-amz-target", b"").decode()
                op = target.rsplit(".", 1)[-1] if target else request.method.decode()
                self.seen.append(op)
                rule = self._match(op, body)
                kind = rule.kind if rule is not None else "pass"
                if kind == "drop":
                    return
                if kind == "hang" and not await self._hold(conn, stream):
                    return  # the client hung up meanwhile
                if kind == "delay" and rule is not None:
                    await trio.sleep(rule.seconds)
                unprocessed: dict[str, list[Any]] = {}
                if kind == "partial":
                    body, unprocessed = _split_batch_write(body)
                if rule is not None and kind == "reply":
                    status, out = rule.status, json.dumps(rule.body).encode()
                    reply = [(b"content-type", b"application/x-amz-json-1.0")]
                else:
                    self.forwarded.append(op)
                    path = urlsplit(request.target.decode())  # the SDK sends absolute URLs
                    upstream = await client.request(
                        request.method.decode(),
                        path._replace(scheme="", netloc="").geturl() or "/",
                        headers=[(k, v) for k, v in request.headers if k.lower() not in _HOP],
                        content=body,
                    )
                    status, out = upstream.status_code, upstream.content
                    reply = [(k, v) for k, v in upstream.headers.raw if k.lower() not in _HOP]
                    if unprocessed and status == 200:
                        answer = json.loads(out)
                        answer["UnprocessedItems"] = unprocessed
                        out = json.dumps(answer).encode()
                        reply = [(k, v) for k, v in reply if k.lower() != b"x-amz-crc32"]
                    if kind == "land_then_drop":
                        return
                reply.append((b"content-length", str(len(out)).encode()))
                data = conn.send(h11.Response(status_code=status, headers=reply))
                data = (data or b"") + (conn.send(h11.Data(data=out)) or b"")
                data += conn.send(h11.EndOfMessage()) or b""
                await stream.send_all(data)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()


def _split_batch_write(body: bytes) -> tuple[bytes, dict[str, list[Any]]]:
    """A ``BatchWriteItem`` body with the second half of each table's requests taken out
    (moto does not check signatures), and those requests as ``UnprocessedItems``."""
    request = json.loads(body)
    kept: dict[str, list[Any]] = {}
    left: dict[str, list[Any]] = {}
    for table, writes in request["RequestItems"].items():
        half = (len(writes) + 1) // 2
        kept[table] = writes[:half]
        if writes[half:]:
            left[table] = writes[half:]
    request["RequestItems"] = kept
    return json.dumps(request).encode(), left


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request, bytes] | None:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return None
        if event is h11.NEED_DATA:
            try:
                conn.receive_data(await stream.receive_some(65536))
            except trio.BrokenResourceError:
                return None
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


@asynccontextmanager
async def open_fault_proxy(upstream: str) -> AsyncIterator[FaultProxy]:
    """A :class:`FaultProxy` on a free 127.0.0.1 port, closed (with its connections) on exit."""
    proxy = FaultProxy(upstream)
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        proxy.url = f"http://127.0.0.1:{port}"
        try:
            yield proxy
        finally:
            proxy.release()
            nursery.cancel_scope.cancel()
