"""What the downloader makes of an answer's status and headers (pure: no HTTP)."""

from __future__ import annotations

import pytest

from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.device.download_span import (
    Fatal,
    LinkLost,
    ServerUnavailable,
    UrlExpired,
    body_span,
)

TOTAL = 52_428_800


def test_a_206_carrying_the_asked_range_is_taken() -> None:
    headers = {"Content-Range": f"bytes 10485760-52428799/{TOTAL}"}
    span = body_span(206, headers, 41_943_040, 10_485_760, TOTAL, TOTAL)
    assert span == (10_485_760, TOTAL)


def test_a_206_may_carry_less_than_asked_but_never_more_nor_elsewhere() -> None:
    shorter = {"Content-Range": f"bytes 0-1048575/{TOTAL}"}
    assert body_span(206, shorter, None, 0, TOTAL, TOTAL) == (0, 1_048_576)
    with pytest.raises(Fatal) as elsewhere:
        body_span(206, {"Content-Range": f"bytes 5-9/{TOTAL}"}, None, 0, 10, TOTAL)
    assert elsewhere.value.ota_reason == OTAStatus.CHECKSUM_MISMATCH


@pytest.mark.parametrize(
    ("status", "headers", "length"),
    [
        (206, {"Content-Range": "bytes 0-9/999"}, 10),  # another object size
        (206, {"Content-Range": f"bytes 0-9/{TOTAL}"}, 11),  # a body longer than its range
        (200, {}, TOTAL + 1),  # Range ignored, and the object is not the signed size
        (416, {"Content-Range": "bytes */1000"}, None),  # the object ends before the offset
    ],
    ids=["other-size", "longer-body", "bigger-200", "416"],
)
def test_an_object_that_is_not_the_signed_package_is_refused_on_the_headers(
    status: int, headers: dict[str, str], length: int | None
) -> None:
    with pytest.raises(Fatal) as refused:
        body_span(status, headers, length, 0, 10, TOTAL)
    assert refused.value.ota_reason == OTAStatus.CHECKSUM_MISMATCH


def test_a_200_is_the_whole_object_from_byte_0() -> None:
    assert body_span(200, {}, TOTAL, 10_485_760, TOTAL, TOTAL) == (0, TOTAL)


def test_server_trouble_is_retried_expiry_asks_for_a_url_the_rest_fails() -> None:
    with pytest.raises(ServerUnavailable) as busy:
        body_span(503, {"Retry-After": "7"}, None, 0, 10, TOTAL)
    assert busy.value.retry_after_s == 7.0
    with pytest.raises(ServerUnavailable):
        body_span(429, {"Retry-After": "soon"}, None, 0, 10, TOTAL)
    with pytest.raises(UrlExpired):
        body_span(403, {}, None, 0, 10, TOTAL)
    with pytest.raises(LinkLost):  # a 206 nobody can place: a broken answer, try again
        body_span(206, {}, None, 0, 10, TOTAL)
    with pytest.raises(Fatal) as missing:
        body_span(404, {}, None, 0, 10, TOTAL)
    assert missing.value.ota_reason == OTAStatus.S3_UNAVAILABLE
