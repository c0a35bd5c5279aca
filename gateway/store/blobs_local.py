"""Blobs in a local folder (``<data_dir>/files``), served by the gateway's own REST app.

The embedded default: no service needed. A blob ``key`` (a file id) is the file
``<root>/<key>``. Upload and download URLs point at the REST app
(``/v1/blobs/<key>?exp=..&size=..&ct=..&sig=..`` to ``PUT``,
``/v1/blobs/<key>?exp=..&name=..&ct=..&sig=..`` to ``GET``; relative to the REST base
URL, which the routes prepend) and carry an HMAC-SHA256 signature, with a key of the
node's (derived like the cursor key: every node sharing the secret accepts every node's
URLs), over the method, the key, the expiry and what the URL allows (size and content type
of an upload; name and content type of a download). Signatures are compared in constant
time, then the expiry is checked.

An upload is streamed to ``<root>/.tmp``, fsynced, and linked into place only if it has
exactly the signed size; a stored blob is never replaced (a second upload to the same key
is refused with 409), so a ready file cannot change under its readers.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from urllib.parse import urlencode

import msgspec
import trio

from gateway.errors import ErrorCode
from gateway.store.files import BlobRefused, GetGrant, PutGrant, Upload

__all__ = ["LocalBlobStore", "open_local_blob_store"]

_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")
CHUNK = 256 * 1024  # bytes per disk write and per read


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise BlobRefused(404, ErrorCode.NOT_FOUND, "no such blob")
    return key


def _forged() -> BlobRefused:
    return BlobRefused(403, ErrorCode.FORBIDDEN, "the URL's signature is not valid")


class LocalBlobStore:
    """A :class:`gateway.store.files.BlobStore` and :class:`gateway.store.files.ServedBlobs`
    in the folder ``root`` (created if need be). ``signing_key`` (at least 16 bytes)
    signs the URLs; ``clock`` gives the time in seconds."""

    def __init__(
        self, root: str, signing_key: bytes, *, clock: Callable[[], float] = time.time
    ) -> None:
        if len(signing_key) < 16:
            raise ValueError("the blob signing key must be at least 16 bytes")
        self.root = root
        self.tmp = os.path.join(root, ".tmp")
        self._key = signing_key
        self.clock = clock

    def open(self) -> None:
        """Create the folders (blocking: call it at startup)."""
        os.makedirs(self.tmp, exist_ok=True)

    def path(self, key: str) -> str:
        return os.path.join(self.root, _check_key(key))

    # -- URLs ------------------------------------------------------------------------------

    def _sign(self, *fields: str | int) -> str:
        message = msgspec.json.encode(["gateway blob url v1", *fields])
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def _expiry(self, expires_s: int) -> int:
        if expires_s < 1:
            raise ValueError("expires_s must be at least 1")
        return int(self.clock()) + expires_s

    async def presign_put(self, key: str, size: int, content_type: str, expires_s: int) -> Upload:
        _check_key(key)
        exp = self._expiry(expires_s)
        sig = self._sign("PUT", key, exp, size, content_type)
        query = urlencode({"exp": exp, "size": size, "ct": content_type, "sig": sig})
        return Upload(
            url=f"/v1/blobs/{key}?{query}",
            method="PUT",
            headers={"Content-Type": content_type, "Content-Length": str(size)},
        )

    async def presign_get(self, key: str, filename: str, content_type: str, expires_s: int) -> str:
        _check_key(key)
        exp = self._expiry(expires_s)
        sig = self._sign("GET", key, exp, filename, content_type)
        query = urlencode({"exp": exp, "name": filename, "ct": content_type, "sig": sig})
        return f"/v1/blobs/{key}?{query}"

    def _verify(self, query: Mapping[str, str], *fields: str | int) -> None:
        expected = self._sign(*fields)
        if not hmac.compare_digest(query.get("sig", "").encode(), expected.encode()):
            raise _forged()
        if self.clock() > int(fields[2]):
            raise BlobRefused(403, ErrorCode.FORBIDDEN, "the URL expired: ask for a new one")

    def check_put(self, key: str, query: dict[str, str]) -> PutGrant:
        _check_key(key)
        try:
            exp, size, content_type = int(query["exp"]), int(query["size"]), query["ct"]
        except (KeyError, ValueError):
            raise _forged() from None
        self._verify(query, "PUT", key, exp, size, content_type)
        return PutGrant(size=size, content_type=content_type)

    def check_get(self, key: str, query: dict[str, str]) -> GetGrant:
        _check_key(key)
        try:
            exp, name, content_type = int(query["exp"]), query["name"], query["ct"]
        except (KeyError, ValueError):
            raise _forged() from None
        self._verify(query, "GET", key, exp, name, content_type)
        return GetGrant(filename=name, content_type=content_type)

    # -- bytes -----------------------------------------------------------------------------

    async def head(self, key: str) -> int | None:
        try:
            stat = await trio.Path(self.path(key)).stat()
        except BlobRefused:
            return None
        except FileNotFoundError:
            return None
        return stat.st_size

    async def write(self, key: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        final = self.path(key)
        if await trio.Path(final).exists():
            raise _stored(key)
        tmp = os.path.join(self.tmp, f"{key}.{secrets.token_hex(8)}")
        try:
            async with await trio.open_file(tmp, "wb") as out:
                total = 0
                buffer = bytearray()
                async for chunk in chunks:
                    total += len(chunk)
                    if total > size:
                        raise _bad_length(size)
                    buffer += chunk
                    if len(buffer) >= CHUNK:
                        await out.write(bytes(buffer))
                        buffer.clear()
                if total != size:
                    raise _bad_length(size)
                await out.write(bytes(buffer))
                await out.flush()
                await trio.to_thread.run_sync(os.fsync, out.fileno())
            try:
                await trio.to_thread.run_sync(os.link, tmp, final)  # never replaces
            except FileExistsError:
                raise _stored(key) from None
            await trio.to_thread.run_sync(_fsync_dir, self.root)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await trio.Path(tmp).unlink()
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise

    async def read(self, key: str) -> AsyncIterator[bytes]:
        path = self.path(key)
        try:
            source = await trio.open_file(path, "rb")
        except FileNotFoundError:
            raise BlobRefused(404, ErrorCode.NOT_FOUND, "no such blob") from None
        async with source:
            while chunk := await source.read(CHUNK):
                yield chunk


def _stored(key: str) -> BlobRefused:
    return BlobRefused(409, ErrorCode.CONFLICT, f"blob {key} is already uploaded")


def _bad_length(size: int) -> BlobRefused:
    return BlobRefused(400, ErrorCode.INVALID_FIELD, f"the body must be exactly {size} bytes")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_local_blob_store(
    root: str, signing_key: bytes, *, clock: Callable[[], float] = time.time
) -> LocalBlobStore:
    """A :class:`LocalBlobStore` in ``root``, its folders created (blocking, at startup)."""
    store = LocalBlobStore(root, signing_key, clock=clock)
    store.open()
    return store
