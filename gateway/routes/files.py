"""REST: uploaded files (``/v1/files``) and, for the local folder, the blob URLs
(``/v1/blobs/<key>``).

* ``POST /v1/files`` ``{name, size, content_type}``: a pending file and its upload
  (201 ``{id, upload: {url, method, headers}, expires_ms}``; ``url`` is absolute).
* ``PUT <upload url>`` with exactly those headers and ``size`` bytes: S3, or the REST app
  itself (``PUT /v1/blobs/<key>``, local folder only).
* ``POST /v1/files/<id>/complete``: the blob must be stored with the announced size (409
  ``conflict`` reason ``not_uploaded`` / ``size`` otherwise); the file is ``ready``.
* ``GET /v1/files/<id>``: ``{file, download: {url, expires_ms} | null}``. Its owner may
  always read it; once attached to a channel, whoever may read the channel
  (:func:`gateway.actors.access.channel_access`) may too. Anyone else gets 404, as for
  an unknown id.
* ``GET /v1/blobs/<key>`` (local folder only): the signed download, as an attachment.

Bearer auth and the JSON errors of :mod:`gateway.routes.domain_common`; the blob routes
take no token (the URL's signature is the capability).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urljoin

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from gateway.actors.access import Access, channel_access
from gateway.actors.files import FileTooLarge
from gateway.errors import ErrorCode
from gateway.routes.domain_common import (
    HttpError,
    authenticate,
    decode_body,
    endpoint,
    json_response,
    no_content,
)
from gateway.store.files import MAX_NAME, BlobRefused, FileRecord, content_disposition

if TYPE_CHECKING:
    from gateway.actors.files import FileService
    from gateway.actors.node import Node
    from gateway.auth import Identity

__all__ = ["NewFile", "register_file_routes"]

BLOBS = "/v1/blobs/"
_FILE_ID = re.compile(r"f[0-9a-f]{24}\Z")
DOWNLOAD_TIMEOUT = 3600.0  # seconds a download may take (slow readers)


class NewFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
    size: Annotated[int, msgspec.Meta(ge=0)]
    content_type: Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_NAME)]


def _files(node: Node) -> FileService:
    return node.files


def _no_file(file_id: str) -> HttpError:
    return HttpError(404, ErrorCode.NOT_FOUND, f"no file {file_id!r}", reason="file")


def _refused(exc: BlobRefused) -> HttpError:
    return HttpError(exc.status, exc.code, exc.message)


def _absolute(url: str) -> str:
    """A URL of the local blob store is relative to this REST app's base URL."""
    return urljoin(request.host_url, url)


async def _may_read(node: Node, identity: Identity, record: FileRecord) -> bool:
    if record.owner == identity.user:
        return True
    if record.channel is None:
        return False
    grant = await channel_access(node.domain, identity, record.channel)
    if grant.access < Access.READ:
        return False
    return not await node.bus.revoked(identity.user, record.channel)


def _blob_request_class(base: type[Any]) -> type[Any]:
    """``base`` (the app's request class), except that an upload to a blob URL has no
    app-wide body limit (64 KiB) nor body timeout: the route enforces the signed size,
    the file size limit and its own deadline while it streams the body to disk."""

    class BlobAwareRequest(base):  # type: ignore[misc]
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kw: Any) -> None:
            if method == "PUT" and path.startswith(BLOBS):
                kw["max_content_length"] = None
                kw["body_timeout"] = None
            super().__init__(method, scheme, path, *args, **kw)

    return BlobAwareRequest


def register_file_routes(app: QuartTrio, node: Node) -> None:
    """Add the file routes. ``node`` is only used while handling requests."""
    app.request_class = _blob_request_class(app.request_class)

    @app.post("/v1/files")
    @endpoint
    async def create_file() -> Response:
        identity = await authenticate(node)
        body = await decode_body(NewFile)
        try:
            record, upload, expires_ms = await _files(node).create_slot(
                identity.user, body.name, body.size, body.content_type
            )
        except FileTooLarge as exc:
            raise HttpError(413, ErrorCode.TOO_LARGE, exc.message, field="size") from None
        return json_response(
            {
                "id": record.id,
                "upload": {
                    "url": _absolute(upload.url),
                    "method": upload.method,
                    "headers": upload.headers,
                },
                "expires_ms": expires_ms,
            },
            status=201,
        )

    @app.post("/v1/files/<file>/complete")
    @endpoint
    async def complete_file(file: str) -> Response:
        identity = await authenticate(node)
        if not _FILE_ID.match(file):
            raise _no_file(file)
        return json_response(await _files(node).complete(identity.user, file))

    @app.get("/v1/files/<file>")
    @endpoint
    async def get_file(file: str) -> Response:
        identity = await authenticate(node)
        if not _FILE_ID.match(file):
            raise _no_file(file)
        files = _files(node)
        record = await files.get(file)
        if record is None or not await _may_read(node, identity, record):
            raise _no_file(file)
        download = await files.download_url(record)
        return json_response(
            {
                "file": record,
                "download": None
                if download is None
                else {"url": _absolute(download[0]), "expires_ms": download[1]},
            }
        )

    @app.put("/v1/blobs/<key>")
    @endpoint
    async def put_blob(key: str) -> Response:
        files = _files(node)
        served = files.served
        if served is None:
            raise HttpError(404, ErrorCode.NOT_FOUND, "no such endpoint")
        try:
            grant = served.check_put(key, dict(request.args))
        except BlobRefused as exc:
            raise _refused(exc) from None
        declared = request.content_length
        if declared is not None and declared > files.max_bytes:
            raise HttpError(
                413, ErrorCode.TOO_LARGE, f"a file may have at most {files.max_bytes} bytes"
            )
        if declared is not None and declared != grant.size:
            raise HttpError(
                400, ErrorCode.INVALID_FIELD, f"the body must be exactly {grant.size} bytes"
            )
        if request.headers.get("content-type", "") != grant.content_type:
            raise HttpError(
                415, ErrorCode.INVALID_FIELD, f"send Content-Type: {grant.content_type}"
            )

        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.body:
                yield chunk

        with trio.move_on_after(max(60.0, 2 * files.url_ttl)) as deadline:
            try:
                await served.write(key, grant.size, body())
            except BlobRefused as exc:
                raise _refused(exc) from None
        if deadline.cancelled_caught:
            raise HttpError(408, ErrorCode.INVALID_FIELD, "the upload took too long")
        return no_content()

    @app.get("/v1/blobs/<key>")
    @endpoint
    async def get_blob(key: str) -> Response:
        files = _files(node)
        served = files.served
        if served is None:
            raise HttpError(404, ErrorCode.NOT_FOUND, "no such endpoint")
        try:
            grant = served.check_get(key, dict(request.args))
        except BlobRefused as exc:
            raise _refused(exc) from None
        size = await files.blobs.head(key)
        if size is None:
            raise HttpError(404, ErrorCode.NOT_FOUND, "no such blob")
        response = Response(
            served.read(key),
            content_type=grant.content_type,
            headers={
                "Content-Length": str(size),
                "Content-Disposition": content_disposition(grant.filename),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "private, no-store",
            },
        )
        response.timeout = DOWNLOAD_TIMEOUT
        return response
