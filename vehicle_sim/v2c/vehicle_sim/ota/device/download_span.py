"""How one Range request of the downloader ended, from its status and headers: pure.

`body_span` reads an answer's status line and headers (nothing of the body)
and says which bytes of the package the body carries, or raises how the
request ended: the link or the server failing (retried), the URL expired,
or a server whose object is not the signed package (CHECKSUM_MISMATCH,
before a byte of the body is read). `download` does the I/O around it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from v2c.contract.errors import TransientError, V2CError
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.agent.effects import Reason

_CONTENT_RANGE: Final = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE: Final = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


class LinkLost(TransientError):
    reason = "download_link_lost"


class ServerUnavailable(TransientError):
    reason = "download_server_unavailable"

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UrlExpired(V2CError):
    reason = "download_url_expired"


class DownloadTimeout(V2CError):
    reason = "download_timeout"


class Fatal(V2CError):
    """The download cannot succeed from this server: FAILED with `ota_reason`."""

    reason = "download_failed"

    def __init__(self, ota_reason: Reason, message: str) -> None:
        super().__init__(message)
        self.ota_reason = ota_reason


def mismatch(message: str) -> Fatal:
    return Fatal(OTAStatus.CHECKSUM_MISMATCH, message)


def body_span(
    status: int,
    headers: Mapping[str, str],
    content_length: int | None,
    start: int,
    end: int,
    total: int,
) -> tuple[int, int]:
    """Which bytes [first, last + 1) of a `total`-byte package the body of an
    answer to `Range: bytes=start-(end - 1)` carries."""
    if status == 206:
        match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
        if match is None:
            raise LinkLost("206 without a usable Content-Range")
        first, last, size = int(match[1]), int(match[2]), match[3]
        if size != "*" and int(size) != total:
            raise mismatch(f"the server's object is {size} bytes, signed {total}")
        if first != start or last < first or last >= end:
            raise mismatch(f"asked bytes {start}-{end - 1}, got {first}-{last}")
        if content_length is not None and content_length != last - first + 1:
            raise mismatch(f"Content-Length {content_length} for {last - first + 1} bytes")
        return first, last + 1
    if status == 200:  # Range ignored: the whole object, from byte 0
        if content_length is not None and content_length != total:
            raise mismatch(f"the server's object is {content_length} bytes, signed {total}")
        return 0, total
    if status == 403:
        raise UrlExpired("403: the download URL expired or is not valid")
    if status == 416:
        match = _UNSATISFIED_RANGE.match(headers.get("Content-Range", ""))
        size = match[1] if match else "fewer"
        raise mismatch(f"416: the server's object has {size} bytes, signed {total}")
    if status == 429 or status >= 500:
        raise ServerUnavailable(f"HTTP {status}", retry_after(headers))
    raise Fatal(OTAStatus.S3_UNAVAILABLE, f"HTTP {status}")


def retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
