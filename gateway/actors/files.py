"""Uploaded files: slots, completion, download URLs and attaching files to a channel.

:class:`FileService` holds the record store, the blob store and the limits; the REST
routes (``gateway.routes.files``) and message posting call it. It decides nothing about
channel access: the caller checks that whoever reads a file may read its channel.

Lifecycle of a file: ``create_slot`` (a ``pending`` record and a presigned upload of
exactly ``size`` bytes of ``content_type``, valid ``url_ttl`` seconds) -> the client
uploads -> ``complete`` (the blob store must hold exactly ``size`` bytes under the file
id; the record turns ``ready``) -> ``attach`` to one channel by the owner. A slot lapses
``2 * url_ttl`` after it was made: the upload URL's life, then as long again to complete
(an upload that started just before its URL expired may still be running).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.domain.errors import Conflict, InvalidField, LimitExceeded, NotFound
from gateway.store.files import (
    BlobStore,
    FileRecord,
    FileStore,
    ServedBlobs,
    Upload,
    check_content_type,
    check_file_id,
    check_file_name,
    new_file_id,
)

__all__ = ["MAX_ATTACHMENTS", "MAX_PENDING", "FileService", "FileTooLarge"]

MAX_PENDING = 20  # open upload slots per user
MAX_ATTACHMENTS = 10  # files attached by one message


class FileTooLarge(InvalidField):
    """The announced size is over ``max_bytes`` (REST: 413 ``too_large``)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"a file may have at most {max_bytes} bytes", field="size")
        self.max_bytes = max_bytes


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FileService:
    """Files of one node: ``records`` and ``blobs`` (``served``: the same blob store when
    the REST app serves its URLs itself, else None), with the limits."""

    def __init__(
        self,
        records: FileStore,
        blobs: BlobStore,
        *,
        served: ServedBlobs | None = None,
        max_bytes: int = 25 * 1024 * 1024,
        url_ttl: float = 300.0,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.records = records
        self.blobs = blobs
        self.served = served
        self.max_bytes = max_bytes
        self.url_ttl = max(1, int(url_ttl))
        self.max_pending = max_pending
        self.clock = clock

    async def create_slot(
        self, owner: str, name: str, size: int, content_type: str
    ) -> tuple[FileRecord, Upload, int]:
        """A new pending file of ``owner`` and how to upload it: ``(record, upload, the
        upload URL's expiry in ms)``. ``InvalidField`` (name, size, content_type),
        :class:`FileTooLarge`, ``LimitExceeded`` (reason ``pending_files``) when
        ``owner`` has ``max_pending`` open slots."""
        name = check_file_name(name)
        content_type = check_content_type(content_type)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidField("size must be an integer >= 0", field="size")
        if size > self.max_bytes:
            raise FileTooLarge(self.max_bytes)
        if await self.records.count_pending(owner) >= self.max_pending:
            raise LimitExceeded(
                f"at most {self.max_pending} uploads may be open at once: complete them or "
                f"let them lapse",
                reason="pending_files",
            )
        now = self.clock()
        ttl_ms = self.url_ttl * 1000
        record = FileRecord(
            id=new_file_id(),
            owner=owner,
            name=name,
            size=size,
            content_type=content_type,
            status="pending",
            created_ms=now,
            expires_ms=now + 2 * ttl_ms,
        )
        record = await self.records.create(record)
        upload = await self.blobs.presign_put(record.id, size, content_type, self.url_ttl)
        return record, upload, now + ttl_ms

    async def complete(self, owner: str, file_id: str) -> FileRecord:
        """Mark ``owner``'s uploaded file ready (idempotent). ``NotFound`` (reason
        ``file``); ``Conflict`` reason ``not_uploaded`` (nothing stored yet), ``size``
        (the stored size is not the announced one) or ``expired``."""
        check_file_id(file_id)
        record = await self.records.get(file_id)
        if record is None or record.owner != owner:
            raise NotFound(f"no file {file_id!r} of yours", reason="file")
        if record.status == "ready":
            return record
        stored = await self.blobs.head(file_id)
        if stored is None:
            raise Conflict(
                f"file {file_id!r} is not uploaded yet: PUT it to its upload URL first",
                reason="not_uploaded",
            )
        return await self.records.mark_ready(file_id, owner, stored)

    async def get(self, file_id: str) -> FileRecord | None:
        check_file_id(file_id)
        return await self.records.get(file_id)

    async def download_url(self, record: FileRecord) -> tuple[str, int] | None:
        """A fresh download URL of a ready file and its expiry (ms); None while pending."""
        if record.status != "ready":
            return None
        url = await self.blobs.presign_get(
            record.id, record.name, record.content_type, self.url_ttl
        )
        return url, self.clock() + self.url_ttl * 1000

    async def attach(self, owner: str, file_ids: Sequence[str], channel: str) -> list[FileRecord]:
        """Attach ``owner``'s ready files to ``channel`` (a message posted there names
        them); the attached records, in order. All are checked before any is attached
        (``NotFound`` reason ``file``, ``Conflict`` reason ``not_ready`` or ``attached``,
        ``LimitExceeded`` reason ``attachments``); a retry for the same channel succeeds.
        Not atomic: if a store fails midway, the first files are attached (a retry
        finishes the job)."""
        if len(file_ids) > MAX_ATTACHMENTS:
            raise LimitExceeded(
                f"at most {MAX_ATTACHMENTS} files per message", reason="attachments"
            )
        ids = list(dict.fromkeys(check_file_id(f) for f in file_ids))
        for file_id in ids:
            record = await self.records.get(file_id)
            if record is None or record.owner != owner:
                raise NotFound(f"no file {file_id!r} of yours", reason="file")
            if record.status != "ready":
                raise Conflict(f"file {file_id!r} is not uploaded yet", reason="not_ready")
            if record.channel not in (None, channel):
                raise Conflict(
                    f"file {file_id!r} is attached to another channel", reason="attached"
                )
        return [await self.records.attach(file_id, owner, channel) for file_id in ids]
