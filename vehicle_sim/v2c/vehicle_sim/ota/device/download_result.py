"""What a download is asked for and what it answers: the downloader's values.

Kept apart from `download` (the HTTP Range machinery) so the runtime's spec,
the download port and the benchmarks can name a download's limits and its
outcome without the client code around them.

What a call ends with (`DownloadResult.outcome`), and what the agent does:

============  ===============================================  ==========================
outcome       when                                             agent
============  ===============================================  ==========================
COMPLETED     all bytes on disk and the SHA-256 matched;       on_download_finished
              `path` is `<dest_dir>/<update_id>.swu`
PAUSED        the link failed `attempts` times in a row with   on_download_paused, then
              no byte gained (reset, refused, stalled 30 s,    `download` again when the
              cut mid-body); the partial file is kept          link is back (resumes)
URL_EXPIRED   403 (the presigned URL expired); partial kept    ask for a new URL, then
                                                               `download` again (resumes)
FAILED        `reason`: S3_UNAVAILABLE (5xx/429 `attempts`     on_download_finished(
              times in a row, 404, other 4xx),                 failure=reason)
              DOWNLOAD_TIMEOUT (the overall timeout, or the
              minimum progress not met; partial
              kept), CHECKSUM_MISMATCH (hash, or the server's
              object is not the signed size: everything
              deleted), INSUFFICIENT_STORAGE (disk full)
============  ===============================================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from v2c.contract.errors import ValidationFailed
from v2c.vehicle_sim.backoff import BackoffPolicy
from v2c.vehicle_sim.ota.agent.effects import Reason
from v2c.vehicle_sim.ota.device.chunking import ChunkPolicy
from v2c.vehicle_sim.ota.device.progress import MinimumProgress


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    """Every limit of the downloader (the spec's figures as defaults)."""

    chunks: ChunkPolicy = field(default_factory=ChunkPolicy)
    attempts: int = 3  # failed requests in a row (no byte gained): then PAUSED / FAILED
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(max_s=30.0))
    overall_timeout_s: float = 3600.0  # the FMEA's "Update Agent [Timeout: 3600s]"
    connect_timeout_s: float = 10.0
    stall_timeout_s: float = 30.0  # the FMEA's "connection timeout: 30s": no byte for this long
    # At least this many bytes in every window of transfer, else DOWNLOAD_TIMEOUT
    # (0: no such rule); see `progress`.
    min_progress_bytes: int = 4096
    min_progress_window_s: float = 60.0
    fsync: bool = True  # a simulation of many vehicles may trade durability for speed

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValidationFailed("attempts must be at least 1")
        if min(self.overall_timeout_s, self.connect_timeout_s, self.stall_timeout_s) <= 0:
            raise ValidationFailed("timeouts must be positive")
        MinimumProgress(self.min_progress_bytes, self.min_progress_window_s)  # validates

    @property
    def min_progress(self) -> MinimumProgress:
        return MinimumProgress(self.min_progress_bytes, self.min_progress_window_s)


class DownloadOutcome(StrEnum):
    COMPLETED = "completed"
    PAUSED = "paused"  # the link is down: call `download` again later, it resumes
    URL_EXPIRED = "url_expired"  # 403: get a new presigned URL, then `download` again
    FAILED = "failed"  # for good: see `reason`


@dataclass(frozen=True, slots=True)
class DownloadProgress:
    """Bytes committed to disk so far (after each chunk)."""

    update_id: str
    bytes_downloaded: int
    expected_size: int
    chunk_size: int  # the size chosen for the next chunk
    throughput_bps: float  # of the chunk just committed, bytes per second

    @property
    def percent(self) -> int:
        return self.bytes_downloaded * 100 // self.expected_size


@dataclass(frozen=True, slots=True)
class DownloadResult:
    outcome: DownloadOutcome
    update_id: str
    bytes_downloaded: int  # committed on disk: the resume offset, or the size when COMPLETED
    expected_size: int
    path: Path | None = None  # the verified package (COMPLETED only)
    reason: Reason | None = None  # OTAStatus.Reason (FAILED only)
    detail: str = ""
    attempts: int = 0  # failed requests in a row at the end (FAILED S3_UNAVAILABLE: `attempts`)
    resumed_from: int = 0  # the offset this call started at
    requests: int = 0  # HTTP requests this call made
    bytes_fetched: int = 0  # body bytes received this call (dropped ones included)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome is DownloadOutcome.COMPLETED

    @property
    def percent(self) -> int:
        return self.bytes_downloaded * 100 // self.expected_size


ProgressCallback = Callable[[DownloadProgress], None]
