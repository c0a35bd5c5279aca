"""Uploaded files end to end over real HTTP: slot, upload, complete, metadata, download,
on the local folder (the REST app answers the blob URLs) and on S3 (moto's server)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
import trio

from gateway.app import Gateway, open_gateway
from gateway.errors import StoreUnavailable
from gateway.protocol import frames as f
from gateway.store.files import content_disposition
from gateway.store.tables import create_bucket
from tests.aws import connect
from tests.conftest import make_settings, token
from tests.rawclient import LOG_EVENTS, raw_client
from tests.routes.domain_helpers import (
    auth,
    check_error,
    http_client,
    make_channel,
    make_user,
    make_workspace,
)

T = 30  # seconds: deadline of each test body


async def slot(
    http: httpx.AsyncClient,
    user: str = "alice",
    *,
    name: str = "notes.txt",
    size: int = 5,
    content_type: str = "text/plain",
) -> dict[str, Any]:
    r = await http.post(
        "/v1/files",
        headers=auth(user),
        json={"name": name, "size": size, "content_type": content_type},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"id", "upload", "expires_ms"}
    return body


async def upload(
    http: httpx.AsyncClient, created: dict[str, Any], body: bytes, **headers: str
) -> httpx.Response:
    """PUT ``body`` to the slot's upload URL with its headers (and ``headers``); the
    Content-Length is the body's (httpx refuses to send another)."""
    up = created["upload"]
    assert up["method"] == "PUT"
    sent = {k: v for k, v in up["headers"].items() if k != "Content-Length"} | headers
    return await http.put(up["url"], content=body, headers=sent)


async def uploaded(http: httpx.AsyncClient, user: str = "alice", body: bytes = b"hello") -> str:
    """A ready file of ``user`` holding ``body``; its id."""
    created = await slot(http, user, size=len(body))
    r = await upload(http, created, body)
    assert r.status_code in (200, 204), r.text
    r = await http.post(f"/v1/files/{created['id']}/complete", headers=auth(user))
    assert r.status_code == 200, r.text
    file_id: str = created["id"]
    return file_id


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | changes
    return parts._replace(query=urlencode(query)).geturl()


# -- the whole flow ------------------------------------------------------------------------


async def test_upload_complete_and_download(gateway: Gateway) -> None:
    with trio.fail_after(T):
        async with http_client(gateway) as http:
            created = await slot(http, name="Résumé 2024.txt", content_type="Text/Plain")
            up = created["upload"]
            assert up["url"].startswith(f"{gateway.http_url}/v1/blobs/{created['id']}?")
            assert up["headers"] == {"Content-Type": "text/plain", "Content-Length": "5"}
            r = await http.get(f"/v1/files/{created['id']}", headers=auth("alice"))
            assert r.status_code == 200, r.text
            assert r.json()["file"]["status"] == "pending"
            assert r.json()["download"] is None

            r = await upload(http, created, b"hello")
            assert r.status_code == 204, r.text
            r = await http.post(f"/v1/files/{created['id']}/complete", headers=auth("alice"))
            assert r.status_code == 200, r.text
            done = r.json()
            assert done["status"] == "ready"
            assert done["expires_ms"] is None
            assert (done["name"], done["size"], done["owner"]) == ("Résumé 2024.txt", 5, "alice")
            again = await http.post(f"/v1/files/{created['id']}/complete", headers=auth("alice"))
            assert again.json() == done  # idempotent

            r = await http.get(f"/v1/files/{created['id']}", headers=auth("alice"))
            assert r.status_code == 200, r.text
            view = r.json()
            assert view["file"] == done
            download = view["download"]["url"]
            r = await http.get(download)  # no token: the signature is the capability
            assert r.status_code == 200, r.text
            assert r.content == b"hello"
            assert r.headers["content-type"] == "text/plain"
            assert r.headers["content-disposition"] == content_disposition("Résumé 2024.txt")
            assert r.headers["x-content-type-options"] == "nosniff"

            r = await upload(http, created, b"HELLO")  # the URL is still valid
            check_error(r, 409, "conflict")  # but a stored blob is never replaced
            r = await http.get(download)
            assert r.content == b"hello"


async def test_uploads_stream_past_the_json_body_limit(gateway: Gateway) -> None:
    body = bytes(range(256)) * 1024 * 3  # 768 KiB: over the app's 64 KiB body limit
    with trio.fail_after(T):
        async with http_client(gateway) as http:
            created = await slot(http, size=len(body), content_type="application/octet-stream")

            async def chunked() -> Any:  # no Content-Length: counted while streaming
                for start in range(0, len(body), 100_000):
                    yield body[start : start + 100_000]

            headers = {"Content-Type": "application/octet-stream"}
            r = await http.put(created["upload"]["url"], content=chunked(), headers=headers)
            assert r.status_code == 204, r.text
            r = await http.post(f"/v1/files/{created['id']}/complete", headers=auth("alice"))
            assert r.status_code == 200, r.text
            r = await http.get(f"/v1/files/{created['id']}", headers=auth("alice"))
            r = await http.get(r.json()["download"]["url"])
            assert r.status_code == 200, r.text
            assert r.headers["content-length"] == str(len(body))
            assert r.content == body
            r = await http.post(
                "/v1/files",
                headers=auth("alice") | {"Content-Type": "application/json"},
                content=b"{" + b" " * 70_000 + b"}",
            )
            check_error(r, 413, "too_large")  # the JSON routes keep their limit


async def test_attached_files_are_readable_by_channel_readers(gateway: Gateway) -> None:
    with trio.fail_after(T):
        async with http_client(gateway) as http:
            await make_user(http, "alice")
            ws = await make_workspace(http, "alice", {"bob": "member"})
            channel = (await make_channel(http, ws, "alice", "general"))["id"]
            await make_user(http, "carol")
            file_id = await uploaded(http)
            r = await http.get(f"/v1/files/{file_id}", headers=auth("bob"))
            check_error(r, 404, "not_found", reason="file")  # not attached: the owner's only

            [attached] = await gateway.node.files.attach("alice", [file_id], channel)
            assert attached.channel == channel
            r = await http.get(f"/v1/files/{file_id}", headers=auth("bob"))
            assert r.status_code == 200, r.text
            assert r.json()["file"]["channel"] == channel
            r = await http.get(r.json()["download"]["url"])
            assert r.content == b"hello"
            r = await http.get(f"/v1/files/{file_id}", headers=auth("carol"))
            check_error(r, 404, "not_found", reason="file")  # not in the workspace


# -- refusals --------------------------------------------------------------------------------


async def test_uploads_must_match_the_slot(gateway: Gateway) -> None:
    with trio.fail_after(T):
        async with http_client(gateway) as http:
            created = await slot(http)
            r = await upload(http, created, b"hello!")
            check_error(r, 400, "invalid_field")  # another length
            r = await upload(http, created, b"hell")
            check_error(r, 400, "invalid_field")
            r = await upload(http, created, b"hello", **{"Content-Type": "text/html"})
            check_error(r, 415, "invalid_field")  # another type

            async def chunked() -> Any:  # no Content-Length: counted while streaming
                yield b"hello"
                yield b"!"

            headers = {"Content-Type": "text/plain"}
            r = await http.put(created["upload"]["url"], content=chunked(), headers=headers)
            check_error(r, 400, "invalid_field")
            r = await http.post(f"/v1/files/{created['id']}/complete", headers=auth("alice"))
            check_error(r, 409, "conflict", reason="not_uploaded")  # complete before upload
            r = await upload(http, created, b"hello")
            assert r.status_code == 204, r.text


async def test_signatures_are_checked(gateway: Gateway) -> None:
    with trio.fail_after(T):
        async with http_client(gateway) as http:
            created = await slot(http)
            url = created["upload"]["url"]
            sig = dict(parse_qsl(urlsplit(url).query))["sig"]
            tampered = [
                with_query(url, sig=("A" if sig[0] != "A" else "B") + sig[1:]),
                with_query(url, size="6"),
                with_query(url, ct="text/html"),
                url.replace(created["id"], created["id"][:-1] + "0")
                if created["id"][-1] != "0"
                else url.replace(created["id"], created["id"][:-1] + "1"),
            ]
            for bad in tampered:
                r = await http.put(bad, content=b"hello", headers={"Content-Type": "text/plain"})
                check_error(r, 403, "forbidden")
            r = await http.get(url)  # an upload URL is no download URL
            check_error(r, 403, "forbidden")

            served: Any = gateway.node.files.served
            real = served.clock
            served.clock = lambda: real() + gateway.settings.file_url_ttl + 1
            try:
                r = await upload(http, created, b"hello")
                error = check_error(r, 403, "forbidden")
                assert "expired" in error["message"]
            finally:
                served.clock = real
            r = await upload(http, created, b"hello")
            assert r.status_code == 204, r.text


async def test_limits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_file_bytes=1000)
    with trio.fail_after(T):
        async with open_gateway(settings) as gw, http_client(gw) as http:
            r = await http.post(
                "/v1/files",
                headers=auth("alice"),
                json={"name": "big.bin", "size": 1001, "content_type": "application/octet-stream"},
            )
            error = check_error(r, 413, "too_large")
            assert error["field"] == "size"
            created = await slot(http, size=1000, content_type="application/octet-stream")
            r = await upload(
                http, created, b"x" * 1001, **{"Content-Length": "1001"}
            )  # over the limit, whatever the URL says
            check_error(r, 413, "too_large")
            r = await upload(http, created, b"x" * 1000)
            assert r.status_code == 204, r.text

            for _ in range(19):  # 20 open slots in all (the one above was not completed)
                await slot(http)
            r = await http.post(
                "/v1/files",
                headers=auth("alice"),
                json={"name": "one-too-many", "size": 1, "content_type": "text/plain"},
            )
            check_error(r, 422, "limit_exceeded", reason="pending_files")
            await slot(http, "bob")  # per user
            r = await http.post(f"/v1/files/{created['id']}/complete", headers=auth("alice"))
            assert r.status_code == 200, r.text
            await slot(http)  # a completed slot is no longer open


@pytest.mark.parametrize(
    ("name", "content_type", "field"),
    [
        ("", "text/plain", "name"),
        ("a/b.txt", "text/plain", "name"),
        ("bell\x07.txt", "text/plain", "name"),
        ("new\nline.txt", "text/plain", "name"),
        ("evil\u202etxt.exe", "text/plain", "name"),
        ("..", "text/plain", "name"),
        ("   ", "text/plain", "name"),
        ("x" * 256, "text/plain", "name"),
        ("ok.txt", "text", "content_type"),
        ("ok.txt", "text/", "content_type"),
        ("ok.txt", "/plain", "content_type"),
        ("ok.txt", "te xt/plain", "content_type"),
        ("ok.txt", "text/plain; charset", "content_type"),
    ],
)
async def test_bad_names_and_types(
    gateway: Gateway, name: str, content_type: str, field: str
) -> None:
    with trio.fail_after(T):
        async with http_client(gateway) as http:
            r = await http.post(
                "/v1/files",
                headers=auth("alice"),
                json={"name": name, "size": 1, "content_type": content_type},
            )
            error = check_error(r, 400, "invalid_field")
            assert error.get("field") == field, error


async def test_other_users_files_are_not_found(gateway: Gateway) -> None:
    with trio.fail_after(T):
        async with http_client(gateway) as http:
            file_id = await uploaded(http)
            pending = (await slot(http))["id"]
            for fid in (file_id, pending, "f" + "0" * 24, "nonsense"):
                r = await http.get(f"/v1/files/{fid}", headers=auth("bob"))
                check_error(r, 404, "not_found", reason="file")
                r = await http.post(f"/v1/files/{fid}/complete", headers=auth("bob"))
                check_error(r, 404, "not_found", reason="file")
            r = await http.post("/v1/files", json={"name": "a", "size": 1, "content_type": "a/b"})
            check_error(r, 401, "not_authenticated")
            r = await http.get(f"/v1/files/{file_id}")
            check_error(r, 401, "not_authenticated")


# -- S3 (moto's server) ----------------------------------------------------------------------


async def test_files_on_s3(tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore's credential chain, from the environment only (never a metadata endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bucket = f"files-{uuid.uuid4().hex[:12]}"
    settings = make_settings(tmp_path, s3_bucket=bucket, aws_endpoint_url=moto_url)
    with trio.fail_after(T):
        missing = pytest.RaisesExc(StoreUnavailable, match=f"{bucket}.*missing")
        with pytest.RaisesGroup(missing, flatten_subgroups=True):  # fails fast, naming it
            async with open_gateway(settings):
                pass
        async with connect(moto_url) as aws:
            await create_bucket(aws, bucket)
        async with open_gateway(settings) as gw, http_client(gw) as http:
            created = await slot(http, name="photo.png", size=4, content_type="image/png")
            up = created["upload"]
            assert up["url"].startswith(f"{moto_url}/{bucket}/files/{created['id']}?")
            assert up["headers"]["If-None-Match"] == "*"
            r = await http.post(f"/v1/files/{created['id']}/complete", headers=auth("alice"))
            check_error(r, 409, "conflict", reason="not_uploaded")
            r = await upload(http, created, b"\x89PNG")
            assert r.status_code == 200, r.text
            r = await http.post(f"/v1/files/{created['id']}/complete", headers=auth("alice"))
            assert r.status_code == 200, r.text
            r = await http.get(f"/v1/files/{created['id']}", headers=auth("alice"))
            download = r.json()["download"]["url"]
            assert download.startswith(f"{moto_url}/{bucket}/files/{created['id']}?")
            r = await http.get(download)
            assert r.status_code == 200, r.text
            assert r.content == b"\x89PNG"
            assert r.headers["content-type"] == "image/png"
            assert r.headers["content-disposition"] == content_disposition("photo.png")

            # moto lets a PUT of another length through (S3 refuses it: the length is a
            # signed header); complete checks the stored size, so the file never turns ready.
            created = await slot(http, size=4, content_type="image/png")
            r = await http.put(
                created["upload"]["url"], content=b"12345", headers={"Content-Type": "image/png"}
            )
            assert r.status_code == 200, r.text
            r = await http.post(f"/v1/files/{created['id']}/complete", headers=auth("alice"))
            check_error(r, 409, "conflict", reason="size")

            r = await http.put(f"/v1/blobs/{created['id']}", content=b"1234")
            check_error(r, 404, "not_found")  # no local blob routes with S3


async def test_a_message_attaches_files_and_carries_them(gateway: Gateway) -> None:
    with trio.fail_after(T):
        async with http_client(gateway) as http:
            await make_user(http, "alice")
            ws = await make_workspace(http, "alice", {"bob": "member"})
            channel = (await make_channel(http, ws, "alice", "general"))["id"]
            await gateway.node.domain.join_channel(channel, "bob", actor="bob")
            file_id = await uploaded(http)
            pending = (await slot(http, "alice", name="later.txt"))["id"]
            async with (
                raw_client(gateway.ws_url, token=token("alice")) as alice,
                raw_client(gateway.ws_url, token=token("bob")) as bob,
            ):
                for c in (alice, bob):
                    await c.subscribe(channel)
                await alice.send(f.Publish(channel=channel, cmid="p1", body="see", files=[pending]))
                err = await alice.expect(f.Error, skip=LOG_EVENTS)
                assert (err.code, err.ref) == ("conflict", "p1")  # not uploaded yet
                await bob.send(f.Publish(channel=channel, cmid="b1", body="x", files=[file_id]))
                err = await bob.expect(f.Error, skip=LOG_EVENTS)
                assert err.code == "not_found"  # not bob's file
                await alice.send(f.Publish(channel=channel, cmid="p2", body="see", files=[file_id]))
                msg = await bob.expect(f.MessageEvent, skip=LOG_EVENTS)
                assert (msg.body, msg.files) == ("see", [file_id])
            r = await http.get(f"/v1/files/{file_id}", headers=auth("bob"))
            assert r.status_code == 200 and r.json()["file"]["channel"] == channel
            page = await http.get(f"/v1/channels/{channel}/messages", headers=auth("bob"))
            assert page.json()["messages"][-1]["files"] == [file_id]
