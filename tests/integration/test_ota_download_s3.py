"""The OTA downloader against a real (moto) S3 presigned GET URL: S3's own
Range answers, and a resume with a *new* presigned URL after a cancel."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from v2c.vehicle_sim.ota.device.chunking import MIB
from v2c.vehicle_sim.ota.device.download import (
    DownloadConfig,
    DownloadOutcome,
    DownloadProgress,
    DownloadResult,
    RangeDownloader,
)

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


SIZE = 3 * MIB + 4321
KEY = "firmware/ecu-main-2.5.1.swu"
UPDATE_ID = "ota-2025-001"


@pytest.fixture
def s3_package(aws_stack: AwsStack) -> tuple[AwsStack, bytes]:
    body = random.Random(251).randbytes(SIZE)
    aws_stack.aws.client("s3").put_object(
        Bucket=aws_stack.names.firmware_bucket, Key=KEY, Body=body
    )
    return aws_stack, body


def presigned(stack: AwsStack, expires_s: int) -> str:
    url = stack.aws.client("s3").generate_presigned_url(
        "get_object",
        Params={"Bucket": stack.names.firmware_bucket, "Key": KEY},
        ExpiresIn=expires_s,
    )
    return str(url)


def test_a_presigned_s3_url_downloads_with_range_requests_and_verifies(
    s3_package: tuple[AwsStack, bytes], tmp_path: Path
) -> None:
    stack, body = s3_package
    progress: list[DownloadProgress] = []
    rd = RangeDownloader(DownloadConfig(fsync=False))
    result = asyncio.run(
        rd.download(
            presigned(stack, 3600),
            tmp_path,
            UPDATE_ID,
            SIZE,
            hashlib.sha256(body).digest(),
            progress.append,
        )
    )
    assert result.outcome is DownloadOutcome.COMPLETED, result.detail
    # Two Range requests (206 each): the first chunk, then the rest as one
    # stream; a commit and a progress report per chunk.
    assert result.requests == 2 < len(progress)
    assert result.bytes_fetched == SIZE
    assert result.path is not None
    assert result.path.read_bytes() == body


def test_a_cancelled_download_resumes_with_a_new_presigned_url(
    s3_package: tuple[AwsStack, bytes], tmp_path: Path
) -> None:
    stack, body = s3_package
    sha = hashlib.sha256(body).hexdigest()
    rd = RangeDownloader(DownloadConfig(fsync=False))
    committed: list[int] = []

    async def cancelled_at_30_percent() -> None:
        task = asyncio.current_task()
        assert task is not None

        def cancel(p: DownloadProgress) -> None:
            if p.percent >= 30 and not committed:
                committed.append(p.bytes_downloaded)
                task.cancel()  # the agent's CancelDownload, or the process dying

        await rd.download(presigned(stack, 3600), tmp_path, UPDATE_ID, SIZE, sha, cancel)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled_at_30_percent())

    async def resume() -> DownloadResult:
        # The cloud re-sent the notification with a freshly signed URL.
        return await rd.download(presigned(stack, 600), tmp_path, UPDATE_ID, SIZE, sha)

    result = asyncio.run(resume())
    assert result.ok, result.detail
    assert result.resumed_from == committed[0]
    assert result.bytes_fetched == SIZE - committed[0]
    assert result.path is not None
    assert result.path.read_bytes() == body
