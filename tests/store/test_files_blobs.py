"""Blob stores of uploaded files: the local folder (signed URLs answered by the REST app) and
S3 on moto's server (presigned URLs, used over real HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import trio

from gateway.errors import StoreUnavailable
from gateway.store.blobs_local import LocalBlobStore, open_local_blob_store
from gateway.store.blobs_s3 import S3BlobStore, open_s3_blob_store
from gateway.store.files import BlobRefused, content_disposition, new_file_id
from gateway.store.tables import BUCKETS, check_bucket, create_bucket
from tests.aws import connect

T = 60  # seconds: deadline of each test body
KEY = b"k" * 32


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def local(tmp_path: Path, clock: Clock) -> LocalBlobStore:
    return open_local_blob_store(str(tmp_path / "files"), KEY, clock=clock)


def statuses(exc: pytest.ExceptionInfo[BlobRefused]) -> int:
    return exc.value.status


# -- the local folder --------------------------------------------------------------------


async def test_local_upload_url_allows_exactly_what_it_signs(local: LocalBlobStore) -> None:
    key = new_file_id()
    upload = await local.presign_put(key, 5, "text/plain", 60)
    assert upload.method == "PUT"
    assert upload.headers == {"Content-Type": "text/plain", "Content-Length": "5"}
    assert upload.url.startswith(f"/v1/blobs/{key}?")
    args = query(upload.url)
    grant = local.check_put(key, args)
    assert (grant.size, grant.content_type) == (5, "text/plain")
    for name, value in [("size", "6"), ("ct", "text/html"), ("exp", str(int(args["exp"]) + 1))]:
        with pytest.raises(BlobRefused) as exc:
            local.check_put(key, args | {name: value})
        assert statuses(exc) == 403
    with pytest.raises(BlobRefused) as exc:
        local.check_put(new_file_id(), args)  # another key
    assert statuses(exc) == 403
    with pytest.raises(BlobRefused) as exc:
        local.check_put(
            key, args | {"sig": args["sig"][:-1] + ("A" if args["sig"][-1] != "A" else "B")}
        )
    assert statuses(exc) == 403
    with pytest.raises(BlobRefused) as exc:
        local.check_get(key, args | {"name": "x"})  # an upload URL is no download URL
    assert statuses(exc) == 403
    other = LocalBlobStore(local.root, b"o" * 32, clock=local.clock)
    with pytest.raises(BlobRefused) as exc:
        other.check_put(key, args)  # another node's key
    assert statuses(exc) == 403


async def test_local_urls_expire(local: LocalBlobStore, clock: Clock) -> None:
    key = new_file_id()
    args = query((await local.presign_put(key, 5, "text/plain", 60)).url)
    clock.now += 60
    local.check_put(key, args)  # valid through its last second
    clock.now += 1
    with pytest.raises(BlobRefused, match="expired") as exc:
        local.check_put(key, args)
    assert statuses(exc) == 403


async def test_local_write_stores_exactly_the_size_and_never_replaces(
    local: LocalBlobStore,
) -> None:
    key = new_file_id()
    assert await local.head(key) is None
    for parts in [(b"hell",), (b"hello", b"!"), (b"hel", b"lo", b"!")]:
        with pytest.raises(BlobRefused) as exc:
            await local.write(key, 5, chunks(*parts))
        assert statuses(exc) == 400
        assert await local.head(key) is None
    await local.write(key, 5, chunks(b"he", b"llo"))
    assert await local.head(key) == 5
    with pytest.raises(BlobRefused) as exc:
        await local.write(key, 5, chunks(b"HELLO"))
    assert statuses(exc) == 409
    assert b"".join([c async for c in local.read(key)]) == b"hello"
    assert list(await trio.Path(local.tmp).iterdir()) == []  # no temporary file left behind


async def test_local_keys_cannot_leave_the_folder(local: LocalBlobStore) -> None:
    for key in ["../x", ".tmp", "a/b", "", "x" * 129]:
        assert await local.head(key) is None
        with pytest.raises(BlobRefused) as exc:
            local.check_put(key, {})
        assert statuses(exc) == 404


def test_content_disposition_has_an_ascii_fallback() -> None:
    value = content_disposition('Résumé "final" 100%.pdf')
    assert value == (
        'attachment; filename="R_sum_ _final_ 100_.pdf"; '
        "filename*=UTF-8''R%C3%A9sum%C3%A9%20%22final%22%20100%25.pdf"
    )
    value.encode("latin-1")  # a valid header value


# -- S3 (moto's server) ------------------------------------------------------------------


@pytest.fixture
async def bucket(moto_url: str) -> str:
    name = f"files-{uuid.uuid4().hex[:12]}"
    with trio.fail_after(T):
        async with connect(moto_url) as aws:
            assert await check_bucket(aws, name) == [f"bucket {name}: missing"]
            for _ in range(2):  # idempotent
                await create_bucket(aws, name, *BUCKETS)
            assert await check_bucket(aws, name) == []
            cors = await aws.call("s3", "get_bucket_cors", Bucket=name)
            assert {"PUT", "GET"} <= set(cors["CORSRules"][0]["AllowedMethods"])
    return name


async def test_s3_check_fails_fast_naming_the_bucket(moto_url: str) -> None:
    with trio.fail_after(T):
        async with connect(moto_url) as aws:
            with pytest.raises(StoreUnavailable, match=r"'no-such-bucket-here'.*missing"):
                async with open_s3_blob_store(aws, "no-such-bucket-here"):
                    pass


def signed_headers(url: str) -> set[str]:
    return set(query(url)["X-Amz-SignedHeaders"].split(";"))


async def put(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.put(url, content=body, headers=headers)


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url)


async def test_s3_presigned_upload_and_download_over_http(moto_url: str, bucket: str) -> None:
    with trio.fail_after(T):
        async with connect(moto_url) as aws, open_s3_blob_store(aws, bucket) as blobs:
            key = new_file_id()
            upload = await blobs.presign_put(key, 5, "text/plain", 60)
            # SigV4 (botocore's default in us-east-1 would be SigV2, which signs no length),
            # with the length, the type and "never replace" among the signed headers.
            assert query(upload.url)["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
            assert signed_headers(upload.url) == {
                "content-length",
                "content-type",
                "host",
                "if-none-match",
            }
            assert upload.headers == {
                "Content-Type": "text/plain",
                "Content-Length": "5",
                "If-None-Match": "*",
            }
            assert await blobs.head(key) is None
            r = await put(upload.url, b"hello", upload.headers)
            assert r.status_code == 200, r.text
            assert await blobs.head(key) == 5
            r = await put(upload.url, b"HELLO", upload.headers)
            assert r.status_code == 412, r.text  # If-None-Match: a blob is never replaced

            url = await blobs.presign_get(key, "notes é.txt", "text/plain", 60)
            assert query(url)["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
            r = await get(url)
            assert r.status_code == 200, r.text
            assert r.content == b"hello"
            assert r.headers["content-type"] == "text/plain"
            assert r.headers["content-disposition"] == content_disposition("notes é.txt")


async def test_s3_moto_does_not_enforce_presigned_headers(moto_url: str, bucket: str) -> None:
    """What moto's server lets through, so that the service's own check (the stored size on
    ``complete``, see ``test_files.py``) is what catches it there. On S3 itself each of these
    PUTs is refused (403 SignatureDoesNotMatch, or AccessDenied once expired)."""
    with trio.fail_after(T):
        async with connect(moto_url) as aws, open_s3_blob_store(aws, bucket) as blobs:
            cases: Iterable[tuple[bytes, dict[str, str]]] = [
                (b"hello!", {"Content-Type": "text/plain"}),  # another length
                (b"hello", {"Content-Type": "text/html"}),  # another type
            ]
            for body, headers in cases:
                key = new_file_id()
                upload = await blobs.presign_put(key, 5, "text/plain", 60)
                r = await put(upload.url, body, headers)
                assert r.status_code == 200, r.text
                assert await blobs.head(key) == len(body)
            key = new_file_id()
            upload = await blobs.presign_put(key, 5, "text/plain", 60)
            forged = upload.url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
            r = await put(forged, b"hello", upload.headers)
            assert r.status_code == 200, r.text  # not even the signature is checked


def test_s3_store_refuses_bad_bucket_names() -> None:
    with pytest.raises(ValueError, match="bucket name"):
        S3BlobStore(None, "Not_A_Bucket")  # type: ignore[arg-type]
