"""MD5 and SHA-256 of a package, computed chunk by chunk as it streams
(BR-OTA-003): a 500 MB upload never sits in memory to be hashed.

MD5 is kept because the PRD publishes `checksum_md5` (and S3 ETags of single
PUTs are MD5s); it is an integrity check only. SHA-256 is the one that is
signed into the OTA manifest and verified by vehicles.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from v2c.contract.errors import FirmwareChecksumMismatch, InvalidField

_HEX: Final = re.compile(r"[0-9a-f]+")
MD5_HEX_LENGTH: Final = 32
SHA256_HEX_LENGTH: Final = 64


@dataclass(frozen=True, slots=True)
class Digest:
    """What a finished stream hashed to."""

    size: int
    md5: str
    sha256: str


class StreamingDigest:
    """Feed chunks with `update`; read `size` at any time and `digest()` at the end."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        # hashlib releases the GIL for chunks above 2 KiB: another request's
        # thread keeps running while a large part is hashed.
        self._md5.update(chunk)
        self._sha256.update(chunk)
        self.size += len(chunk)

    def digest(self) -> Digest:
        return Digest(self.size, self._md5.hexdigest(), self._sha256.hexdigest())


def normalize_checksum(field: str, value: str | None, length: int) -> str | None:
    """A provided checksum as lowercase hex, None when absent; a malformed one
    is `InvalidField` (400): it cannot match anything, so it is a bad request,
    not a mismatch."""
    if value is None:
        return None
    text = value.strip().lower()
    if not text:
        return None
    if len(text) != length or _HEX.fullmatch(text) is None:
        raise InvalidField(field, f"expected {length} hexadecimal characters, got {value!r}")
    return text


def verify_checksums(digest: Digest, md5: str | None, sha256: str | None) -> None:
    """`FirmwareChecksumMismatch` (422) unless each provided checksum (already
    normalized) equals the computed one. SHA-256 is reported first: it is the
    one vehicles check."""
    if sha256 is not None and sha256 != digest.sha256:
        raise FirmwareChecksumMismatch(
            f"SHA256 checksum mismatch: the uploaded file hashes to {digest.sha256}, "
            f"the request says {sha256}"
        )
    if md5 is not None and md5 != digest.md5:
        raise FirmwareChecksumMismatch(
            f"MD5 checksum mismatch: the uploaded file hashes to {digest.md5}, "
            f"the request says {md5}"
        )
