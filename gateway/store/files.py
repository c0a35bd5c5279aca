"""Uploaded files: their records (:class:`FileStore`) and their bytes (:class:`BlobStore`).

The flow (Slack-like): a client asks for an upload slot; the service creates a
``pending`` :class:`FileRecord` and presigns an upload of exactly ``size`` bytes of
``content_type`` to the blob store (an HTTP ``PUT`` valid for a few minutes); the client
uploads the bytes there, then confirms, and the record turns ``ready`` once the stored
blob has the announced size. A ready file is attached to (at most) one channel, by its
owner; whoever may read that channel may then download it through a short-lived URL.

Adapters: records on SQLite (:mod:`gateway.store.files_sqlite`) or DynamoDB
(:mod:`gateway.store.files_dynamodb`); bytes in a local folder served by the gateway
itself (:mod:`gateway.store.blobs_local`) or in S3 (:mod:`gateway.store.blobs_s3`).

Refusals of the record stores are :class:`gateway.domain.errors.DomainError` (the REST
routes map them like the domain's): ``NotFound`` (reason ``file``: unknown, or another
owner's: the two are not told apart), ``Conflict`` (reasons below), ``AlreadyExists``
(an id taken). Failures to reach a store are :class:`gateway.errors.StoreUnavailable`.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator
from typing import Literal, Protocol
from urllib.parse import quote

import msgspec

from gateway.domain.errors import InvalidField
from gateway.errors import ErrorCode, GatewayError

__all__ = [
    "MAX_NAME",
    "BlobRefused",
    "BlobStore",
    "FileRecord",
    "FileStatus",
    "FileStore",
    "GetGrant",
    "PutGrant",
    "ServedBlobs",
    "Upload",
    "check_content_type",
    "check_file_id",
    "check_file_name",
    "content_disposition",
    "new_file_id",
]

MAX_NAME = 255  # characters of a file name
FileStatus = Literal["pending", "ready"]

# Conflict reasons (``DomainError.reason``) of the record stores.
EXPIRED = "expired"  # mark_ready: the pending slot lapsed
SIZE = "size"  # mark_ready: the stored size is not the announced one
NOT_READY = "not_ready"  # attach: the file is still pending
ATTACHED = "attached"  # attach: the file is attached to another channel

_FILE_ID = re.compile(r"f[0-9a-f]{24}\Z")
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]{1,127}"
_CONTENT_TYPE = re.compile(
    rf"({_TOKEN})/({_TOKEN})((?:\s*;\s*{_TOKEN}=(?:{_TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\"))*)\Z"
)
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class FileRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One uploaded (or announced) file."""

    id: str  # "f" + 24 hex
    owner: str  # the user who asked for the slot
    name: str  # 1..255 characters, no control characters, no "/"
    size: int  # bytes, as announced (and, once ready, as stored)
    content_type: str  # "type/subtype[; params]", as announced
    status: FileStatus
    created_ms: int
    expires_ms: int | None = None  # pending: the slot lapses then (complete before); else None
    channel: str | None = None  # the channel it was posted to, once attached
    sha256: str | None = None  # hex digest, when the blob store knows it


class Upload(msgspec.Struct, frozen=True, kw_only=True):
    """How to upload a blob: send ``method`` to ``url`` with exactly these ``headers``."""

    url: str  # absolute (S3), or relative to the gateway's REST base URL (local folder)
    method: str
    headers: dict[str, str]


class FileStore(Protocol):
    """File records. Every method validates its input (``InvalidField``)."""

    async def create(self, record: FileRecord) -> FileRecord:
        """Store a new (pending) record; ``AlreadyExists`` (reason ``file``) if the id is
        taken. Forgets the owner's lapsed pending records on the way (if it can)."""
        ...

    async def get(self, file_id: str) -> FileRecord | None:
        """The record (a pending one even if it lapsed), or None."""
        ...

    async def mark_ready(self, file_id: str, owner: str, size: int) -> FileRecord:
        """Turn ``owner``'s pending record ready, if ``size`` is the announced size and it
        has not lapsed; the ready record. Idempotent: a ready record of that owner and
        size is returned as is. ``NotFound`` (reason ``file``) if there is no such record
        of ``owner``; ``Conflict`` reason ``size`` or ``expired``."""
        ...

    async def attach(self, file_id: str, owner: str, channel: str) -> FileRecord:
        """Attach ``owner``'s ready file to ``channel``; the attached record. Idempotent
        for the same channel. ``NotFound`` (reason ``file``); ``Conflict`` reason
        ``not_ready`` (still pending) or ``attached`` (to another channel)."""
        ...

    async def count_pending(self, owner: str) -> int:
        """``owner``'s pending records that have not lapsed (may lag by a second on
        DynamoDB, whose index is eventually consistent)."""
        ...

    async def aclose(self) -> None: ...


class BlobStore(Protocol):
    """Blob bytes, reached by clients through presigned URLs. ``key`` is a file id."""

    async def presign_put(self, key: str, size: int, content_type: str, expires_s: int) -> Upload:
        """An upload of exactly ``size`` bytes of ``content_type`` to ``key``, valid for
        ``expires_s`` seconds; another size or type is refused by the storage."""
        ...

    async def presign_get(self, key: str, filename: str, content_type: str, expires_s: int) -> str:
        """A download URL of ``key`` (an attachment named ``filename``, served as
        ``content_type``), valid for ``expires_s`` seconds."""
        ...

    async def head(self, key: str) -> int | None:
        """The stored size of ``key``, or None if nothing is stored there."""
        ...


class PutGrant(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified upload URL allows: exactly ``size`` bytes of ``content_type``."""

    size: int
    content_type: str


class GetGrant(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified download URL serves: the blob as ``content_type``, as an
    attachment named ``filename``."""

    filename: str
    content_type: str


class BlobRefused(GatewayError):
    """A request to a blob URL served by the gateway is refused: ``status`` is the HTTP
    status (400 bad length, 403 bad or expired signature, 404 nothing stored, 409 already
    stored, 413 over the limit, 415 another content type)."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


class ServedBlobs(Protocol):
    """A blob store whose URLs the gateway's own REST app answers (the local folder)."""

    def check_put(self, key: str, query: dict[str, str]) -> PutGrant:
        """Verify an upload URL's signature and expiry; :class:`BlobRefused` if not."""
        ...

    def check_get(self, key: str, query: dict[str, str]) -> GetGrant:
        """Verify a download URL's signature and expiry; :class:`BlobRefused` if not."""
        ...

    async def write(self, key: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        """Store exactly ``size`` bytes from ``chunks`` under ``key``, all or nothing:
        :class:`BlobRefused` 400 if the body is longer or shorter, 409 if ``key`` is
        already stored (a blob is never replaced)."""
        ...

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The stored bytes, in chunks (check :meth:`BlobStore.head` first: a blob that is
        not stored raises :class:`BlobRefused` 404 on iteration)."""
        ...


# -- checks ------------------------------------------------------------------------------


def new_file_id() -> str:
    return "f" + secrets.token_hex(12)


def check_file_id(file_id: str) -> str:
    if not isinstance(file_id, str) or not _FILE_ID.match(file_id):
        raise InvalidField("a file id is f followed by 24 hex digits", field="id")
    return file_id


def check_file_name(name: str) -> str:
    """``name`` if it is 1..255 characters without control characters (nor bidi
    overrides, nor lone surrogates), without ``/``, and not ``.`` or ``..``."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise InvalidField(f"a file name is 1..{MAX_NAME} characters", field="name")
    if "/" in name or name in (".", "..") or not name.strip():
        raise InvalidField("a file name has no '/' and is not blank, '.' or '..'", field="name")
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in _BIDI:
            raise InvalidField("a file name has no control characters", field="name")
    return name


def check_content_type(content_type: str) -> str:
    """``content_type`` (``type/subtype``, optional ``; name=value`` parameters, at most
    255 characters) with ``type/subtype`` lower-cased; ``InvalidField`` otherwise."""
    m = _CONTENT_TYPE.match(content_type) if isinstance(content_type, str) else None
    if m is None or len(content_type) > MAX_NAME:
        raise InvalidField(
            "content_type must look like type/subtype (RFC 9110 media type)",
            field="content_type",
        )
    return f"{m.group(1).lower()}/{m.group(2).lower()}{m.group(3)}"


def content_disposition(filename: str) -> str:
    """``attachment`` with ``filename`` as an ASCII fallback and as RFC 8187 UTF-8."""
    fallback = "".join(ch if " " <= ch < "\x7f" and ch not in '"\\%' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
