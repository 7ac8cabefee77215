"""Reading a package once, in bounded memory: hashing, the size cap, the
format signature and (optionally) the multipart upload, in one pass.

The same loop serves both ways in: the local adapter's request stream
(written to S3 part by part) and a staged S3 object read back for hashing
(nothing written). Memory is one part buffer plus one read chunk, whatever
the package size; the cap stops the read at `limit + 1` bytes, so an
oversized or endless stream costs at most that much transfer.

`before_commit` runs after the last byte and before anything becomes
visible (checksum verification, the idempotency decision): if it raises,
the multipart upload is aborted and nothing is left in the bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from v2c.contract.errors import InvalidField, V2CError
from v2c.handlers.ota.firmware.formats import SNIFF_BYTES, FirmwareFormat, check_signature
from v2c.handlers.ota.firmware.hashing import Digest, StreamingDigest

logger = logging.getLogger(__name__)

READ_SIZE: Final = 1024 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class PartWriter(Protocol):
    def upload_part(self, data: bytes | bytearray) -> None: ...
    def complete(self) -> str | None: ...
    def abort(self) -> None: ...


class PackageSink(Protocol):
    """Where the bytes go: small packages in one PUT, others multipart."""

    def start_multipart(self, key: str) -> PartWriter: ...
    def put(self, key: str, data: bytes | bytearray) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Ingested:
    digest: Digest
    version_id: str | None  # of the stored object; None when nothing was written


def too_large(limit: int) -> InvalidField:
    mib = limit / (1024 * 1024)
    shown = f"{mib:g} MB" if mib >= 1 else f"{limit} bytes"
    return InvalidField(
        "file", f"file size exceeds the maximum limit of {shown} ({limit} bytes, BR-OTA-001)"
    )


def ingest(
    stream: Readable,
    fmt: FirmwareFormat,
    *,
    limit: int,
    part_size: int,
    sink: PackageSink | None,
    key: str,
    before_commit: Callable[[Digest], None],
) -> Ingested:
    """Read `stream` to its end; store it at `key` in `sink` unless `sink` is
    None. Raises `InvalidField` (size, format, empty) or whatever
    `before_commit` raises, with nothing stored."""
    digest = StreamingDigest()
    head = b""
    buffer = bytearray()
    writer: PartWriter | None = None
    try:
        while True:
            want = min(READ_SIZE, limit + 1 - digest.size)
            if sink is not None:
                want = min(want, part_size - len(buffer))
            chunk = stream.read(want)
            if not chunk:
                break
            digest.update(chunk)
            if digest.size > limit:
                raise too_large(limit)
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
                if len(head) == SNIFF_BYTES:
                    check_signature(fmt, head)
            if sink is None:
                continue
            buffer += chunk
            if len(buffer) == part_size:
                writer = writer or sink.start_multipart(key)
                writer.upload_part(buffer)
                buffer = bytearray()  # a new buffer: botocore may still hold the old one
        if digest.size == 0:
            raise InvalidField("file", "the file is empty")
        if len(head) < SNIFF_BYTES:
            check_signature(fmt, head)
        done = digest.digest()
        before_commit(done)
        if sink is None:
            return Ingested(done, None)
        if writer is None:
            return Ingested(done, sink.put(key, buffer))
        if buffer:
            writer.upload_part(buffer)
        return Ingested(done, writer.complete())
    except BaseException:
        if writer is not None:
            _abort(writer, key)
        raise


def _abort(writer: PartWriter, key: str) -> None:
    try:
        writer.abort()
    except V2CError as exc:
        # Parts left behind are invisible and billed; the bucket's
        # AbortIncompleteMultipartUpload lifecycle rule is the backstop.
        logger.error("multipart upload not aborted", extra={"key": key, "error": exc.detail})
