"""REST control plane: health, readiness, metrics, history pages, error shape."""

from __future__ import annotations

import httpx
import trio

from gateway.app import Gateway
from gateway.protocol import frames as f
from tests.conftest import token
from tests.rawclient import raw_client


async def _publish(gw: Gateway, channel: str, n: int) -> None:
    async with raw_client(gw.ws_url, token=token("alice")) as c:
        await c.subscribe(channel)
        for i in range(n):
            await c.send(f.Publish(channel=channel, cmid=f"h{i}", body=f"m{i}"))
            await c.expect(f.Ack, skip=(f.MessageEvent,))


async def test_health_ready_metrics(gateway: Gateway) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            r = await http.get("/healthz")
            assert r.status_code == 200 and r.json()["status"] == "ok"
            r = await http.get("/readyz")
            assert r.status_code == 200 and r.json()["status"] == "ready"
            await _publish(gateway, "m", 2)
            r = await http.get("/metrics")
            assert r.status_code == 200
            text = r.text
            for name in (
                "gateway_connections",
                "gateway_frames_in_total",
                "gateway_frames_out_total",
                "gateway_fanout_latency_seconds_bucket",
                "gateway_messages_published_total 2.0",
            ):
                assert name in text, name
            r = await http.get("/nope")
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_history_pages(gateway: Gateway) -> None:
    await _publish(gateway, "hist", 12)
    auth = {"authorization": f"Bearer {token('bob')}"}
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.http_url, headers=auth) as http:
            r = await http.get("/v1/channels/hist/messages", params={"after": 0, "limit": 5})
            body = r.json()
            assert r.status_code == 200 and body["head"] == 12
            assert [m["offset"] for m in body["messages"]] == [1, 2, 3, 4, 5]
            r = await http.get("/v1/channels/hist/messages", params={"before": 12, "limit": 3})
            assert [m["offset"] for m in r.json()["messages"]] == [9, 10, 11]
            r = await http.get("/v1/channels/hist/messages", params={"before": 2, "limit": 50})
            assert [m["body"] for m in r.json()["messages"]] == ["m0"]
            r = await http.get("/v1/channels/hist/messages", params={"around": 6, "limit": 5})
            assert [m["offset"] for m in r.json()["messages"]] == [4, 5, 6, 7, 8]
            r = await http.get("/v1/channels/hist/messages", params={"around": 1, "limit": 3})
            assert [m["offset"] for m in r.json()["messages"]] == [1, 2, 3]


async def test_history_search_by_author(gateway: Gateway) -> None:
    async with (
        raw_client(gateway.ws_url, token=token("alice")) as alice,
        raw_client(gateway.ws_url, token=token("bob")) as bob,
    ):
        for c in (alice, bob):
            await c.subscribe("s")
        for i in range(6):
            c = (alice, bob)[i % 2]
            await c.send(f.Publish(channel="s", cmid=f"c{i}", body=f"m{i}"))
            await c.expect(f.Ack, skip=(f.MessageEvent,))
    auth = {"authorization": f"Bearer {token('carol')}"}
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.http_url, headers=auth) as http:
            r = await http.get("/v1/channels/s/messages", params={"author": "bob"})
            assert [m["body"] for m in r.json()["messages"]] == ["m1", "m3", "m5"]
            r = await http.get(
                "/v1/channels/s/messages", params={"author": "alice", "before": 5, "limit": 1}
            )
            assert [m["offset"] for m in r.json()["messages"]] == [3]
            bads: list[dict[str, str | int]] = [
                {"author": "bob", "after": 1},
                {"author": "x" * 129},
                {"around": 0},
            ]
            for bad in bads:
                r = await http.get("/v1/channels/s/messages", params=bad)
                assert r.status_code == 400, bad


async def test_history_errors(gateway: Gateway) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=gateway.http_url) as http:
            r = await http.get("/v1/channels/x/messages")
            assert r.status_code == 401 and r.json()["error"]["code"] == "not_authenticated"
            r = await http.get(
                "/v1/channels/x/messages", headers={"authorization": "Bearer forged.token.x"}
            )
            assert r.status_code == 401 and r.json()["error"]["code"] == "auth_failed"
            ok = {"authorization": f"Bearer {token('g', channels=['pub-*'])}"}
            r = await http.get("/v1/channels/secret/messages", headers=ok)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
            history_bads: list[dict[str, str | int]] = [
                {"limit": 0},
                {"limit": 999},
                {"after": "x"},
                {"after": 1, "before": 5},
                {"around": 3, "before": 5},
                {"before": 0},
                {"after": -1},
                # beyond any offset (and SQLite's INTEGER): refused, not a 500
                {"after": 2**53 + 1},
                {"before": 2**107},
                {"around": 2**64},
                {"author": "g", "before": 150063445502743578091616515129344},
            ]
            for params in history_bads:
                r = await http.get("/v1/channels/pub-a/messages", headers=ok, params=params)
                assert r.status_code == 400, params
                assert r.json()["error"]["code"] == "invalid_field"
            r = await http.get("/v1/channels/bad%20name/messages", headers=ok)
            assert r.status_code in (400, 403)
