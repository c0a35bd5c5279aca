"""Blobs in S3: clients upload and download directly, with presigned URLs.

The object of blob ``key`` (a file id) is ``files/<key>`` in the configured bucket
(:data:`gateway.store.tables.FILES_BUCKET`, created by deployment; :func:`open_s3_blob_store`
only checks that it is there and fails fast naming it).

Upload URLs are SigV4 query-signed ``PutObject`` requests with ``Content-Length``,
``Content-Type`` and ``If-None-Match: *`` among the signed headers
(``X-Amz-SignedHeaders=content-length;content-type;host;if-none-match``): S3 refuses a
PUT with another length or type (``SignatureDoesNotMatch``), and refuses to replace an
object already uploaded (``412``), so a ready file cannot change under its readers.
botocore presigns S3 URLs in ``us-east-1`` (and the other regions that still take it)
with SigV2 unless told otherwise, and SigV2 does not sign ``Content-Length``:
:meth:`gateway.aws.Aws.presign` always chooses SigV4. Download URLs are presigned
``GetObject`` requests with ``ResponseContentDisposition`` (an attachment, named) and
``ResponseContentType`` (the announced type, whatever the object says). Both are computed
locally: no request is sent.

The service still checks the stored size with :meth:`S3BlobStore.head` before it marks a
file ready (``complete``): the last line of defence where presigned headers are not
enforced (moto's server, for one, checks neither signatures nor expiry of presigned
URLs).

Permissions of the node's role on the bucket: ``s3:PutObject`` and ``s3:GetObject`` on
``files/*`` (presigned URLs act with the signer's rights) and ``s3:ListBucket`` (without
it S3 answers a ``HeadObject`` of a missing object with 403 instead of 404, and
``complete`` before the upload fails with 500 instead of 409).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.aws import Aws, AwsError
from gateway.errors import StoreUnavailable
from gateway.store.files import Upload, content_disposition
from gateway.store.tables import check_bucket, check_bucket_name

__all__ = ["S3BlobStore", "open_s3_blob_store"]

PREFIX = "files/"


class S3BlobStore:
    """A :class:`gateway.store.files.BlobStore` on bucket ``bucket`` through ``aws``."""

    def __init__(self, aws: Aws, bucket: str) -> None:
        self.aws = aws
        self.bucket = check_bucket_name(bucket)

    def object_key(self, key: str) -> str:
        return PREFIX + key

    async def check(self) -> None:
        """Raise :class:`StoreUnavailable` naming the bucket unless it exists and may be
        used."""
        try:
            problems = await check_bucket(self.aws, self.bucket)
        except AwsError as exc:
            problems = [f"bucket {self.bucket}: {exc.message}"]
        if problems:
            raise StoreUnavailable(
                f"S3 bucket {self.bucket!r} for uploaded files is not usable: "
                f"{'; '.join(problems)} (GATEWAY_S3_BUCKET; deployment creates it)"
            )

    async def presign_put(self, key: str, size: int, content_type: str, expires_s: int) -> Upload:
        params = {
            "Bucket": self.bucket,
            "Key": self.object_key(key),
            "ContentLength": size,
            "ContentType": content_type,
            "IfNoneMatch": "*",
        }
        url = await self.aws.presign("s3", "put_object", expires_s=expires_s, **params)
        headers = {"Content-Type": content_type, "Content-Length": str(size), "If-None-Match": "*"}
        return Upload(url=url, method="PUT", headers=headers)

    async def presign_get(self, key: str, filename: str, content_type: str, expires_s: int) -> str:
        params = {
            "Bucket": self.bucket,
            "Key": self.object_key(key),
            "ResponseContentDisposition": content_disposition(filename),
            "ResponseContentType": content_type,
        }
        return await self.aws.presign("s3", "get_object", expires_s=expires_s, **params)

    async def head(self, key: str) -> int | None:
        try:
            got = await self.aws.call(
                "s3", "head_object", Bucket=self.bucket, Key=self.object_key(key)
            )
        except AwsError as exc:
            if exc.aws_code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(got["ContentLength"])


@asynccontextmanager
async def open_s3_blob_store(aws: Aws, bucket: str) -> AsyncIterator[S3BlobStore]:
    """An :class:`S3BlobStore` on ``bucket``, after :meth:`S3BlobStore.check`."""
    store = S3BlobStore(aws, bucket)
    await store.check()
    yield store
