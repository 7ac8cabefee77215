"""The vehicle's resumable Range downloader against a real HTTP server (issue #7).

Every fault comes from outside the downloader: the loopback file server
(`http_fileserver`) answers 503/403/404/416, trickles, cuts mid-body, serves
wrong or extra bytes, ignores Range; `TcpProxy` resets the link. Sleeps are
injected (recorded, never waited); the clock is real unless a test steps it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from faults import TcpProxy
from http_fileserver import FileServer, write_package

from v2c.infra.net import free_port
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.device.chunking import KIB, MIB
from v2c.vehicle_sim.ota.device.download import (
    DownloadConfig,
    DownloadOutcome,
    DownloadProgress,
    DownloadResult,
    RangeDownloader,
    discard_download,
)
from v2c.vehicle_sim.ota.device.partial import PartialDownload

FIFTY_MB = 52_428_800
TWENTY_PERCENT = 10_485_760
GRANULE = 64 * KIB
SMALL = 3 * MIB + 12_345  # not a granule multiple: the last chunk is short
UPDATE_ID = "ota-2025-001"


@dataclass(frozen=True)
class Package:
    path: Path
    size: int
    sha256: str


@dataclass
class Sleeps:
    """An injected sleep: records the delays, waits for none, may act (heal a link)."""

    action: Callable[[], None] | None = None
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.action is not None:
            self.action()


class StepClock:
    """Advances `step` seconds at every reading: deterministic chunk timings."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Package:
    path = tmp_path_factory.mktemp("pkg") / "big.swu"
    return Package(path, FIFTY_MB, write_package(path, FIFTY_MB, seed=50))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Package:
    path = tmp_path_factory.mktemp("pkg") / "small.swu"
    return Package(path, SMALL, write_package(path, SMALL, seed=3))


@pytest.fixture
def big_server(big: Package) -> Iterator[FileServer]:
    with FileServer(big.path) as server:
        yield server


@pytest.fixture
def server(small: Package) -> Iterator[FileServer]:
    with FileServer(small.path) as server:
        yield server


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "updates"


def downloader(
    sleeps: Sleeps | None = None, clock: Callable[[], float] | None = None, **config: Any
) -> RangeDownloader:
    # fsync costs seconds on a busy shared disk and no test can observe it (no
    # power cut here); the acceptance test keeps it on.
    config.setdefault("fsync", False)
    kwargs: dict[str, Any] = {"sleep": sleeps or Sleeps(), "random": lambda: 0.0}
    if clock is not None:
        kwargs["clock"] = clock
    return RangeDownloader(DownloadConfig(**config), **kwargs)


def fetch(
    rd: RangeDownloader,
    url: str,
    dest: Path,
    package: Package,
    progress: Callable[[DownloadProgress], None] | None = None,
    update_id: str = UPDATE_ID,
) -> DownloadResult:
    return asyncio.run(rd.download(url, dest, update_id, package.size, package.sha256, progress))


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            hasher.update(block)
    return hasher.hexdigest()


def saved_offset(dest: Path, package: Package, update_id: str = UPDATE_ID) -> int:
    """The offset the state on disk vouches for (what a new process resumes from)."""
    return PartialDownload(dest, update_id, package.size, package.sha256).committed_offset()


def range_ends(server: FileServer) -> list[int]:
    return [int(r.range.rsplit("-", 1)[1]) for r in server.requests if r.range]


def pause_at(server: FileServer, rd: RangeDownloader, dest: Path, package: Package, at: int) -> int:
    """Given: a download that lost its link for good at byte `at` (PAUSED)."""
    server.faults.cut_after = at
    result = fetch(rd, server.url, dest, package)
    server.faults.clear()
    assert result.outcome is DownloadOutcome.PAUSED
    return result.bytes_downloaded


# -- the acceptance scenario --------------------------------------------------------


def test_connection_lost_at_20_percent_resumes_at_exactly_byte_10485760(
    big_server: FileServer, big: Package, dest: Path
) -> None:
    # Given a link that drops every response right after byte 10485760
    big_server.faults.cut_after = TWENTY_PERCENT
    sleeps, progress = Sleeps(), list[DownloadProgress]()
    first = fetch(downloader(sleeps, fsync=True), big_server.url, dest, big, progress.append)

    # Then the download pauses with exactly 20 % on disk, durably
    assert first.outcome is DownloadOutcome.PAUSED
    assert (first.bytes_downloaded, first.percent) == (TWENTY_PERCENT, 20)
    assert saved_offset(dest, big) == TWENTY_PERCENT
    assert (dest / f"{UPDATE_ID}.part").stat().st_size == TWENTY_PERCENT
    assert progress[-1].bytes_downloaded == TWENTY_PERCENT
    assert sleeps.delays == [2.0, 4.0]  # attempts 2 and 3, the spec's backoff; then PAUSED
    assert first.attempts == 3

    # When the link is back and a new process (a new downloader) resumes
    big_server.faults.clear()
    seen = len(big_server.requests)
    second = fetch(downloader(fsync=True), big_server.url, dest, big)

    # Then its first request is the spec's: chunk 11, from byte 10485760; then the rest
    assert big_server.requests[seen].range == "bytes=10485760-11534335"
    assert big_server.requests[seen].status == 206
    assert [r.range for r in big_server.requests[seen + 1 :]] == ["bytes=11534336-52428799"]
    assert second.outcome is DownloadOutcome.COMPLETED
    assert second.resumed_from == TWENTY_PERCENT
    assert second.bytes_fetched == FIFTY_MB - TWENTY_PERCENT  # no byte fetched twice
    assert second.path == dest / f"{UPDATE_ID}.swu"
    assert sha256_of(second.path) == big.sha256
    assert sorted(p.name for p in dest.iterdir()) == [f"{UPDATE_ID}.swu"]
    assert max(range_ends(big_server)) == FIFTY_MB - 1  # never asked past the signed size


def test_a_proxy_cut_mid_transfer_pauses_and_the_download_resumes_after_heal(
    big_server: FileServer, big: Package, dest: Path
) -> None:
    with TcpProxy("127.0.0.1", big_server.port) as proxy:
        url = big_server.url_via(proxy.port)
        cut_at: list[int] = []

        def cut_at_30_percent(p: DownloadProgress) -> None:
            if p.percent >= 30 and not cut_at:
                cut_at.append(p.bytes_downloaded)
                proxy.cut()

        first = fetch(downloader(), url, dest, big, cut_at_30_percent)
        assert first.outcome is DownloadOutcome.PAUSED
        # What was in flight when the link broke is kept, in whole granules.
        assert cut_at[0] <= first.bytes_downloaded == saved_offset(dest, big)
        assert first.bytes_downloaded % GRANULE == 0
        assert 30 <= first.percent < 100

        proxy.heal()
        second = fetch(downloader(), url, dest, big)

    assert second.outcome is DownloadOutcome.COMPLETED
    assert second.resumed_from == first.bytes_downloaded
    assert second.path is not None
    assert sha256_of(second.path) == big.sha256


def test_a_brief_outage_is_bridged_by_a_retry_without_pausing(
    big_server: FileServer, big: Package, dest: Path
) -> None:
    with TcpProxy("127.0.0.1", big_server.port) as proxy:
        sleeps = Sleeps(action=proxy.heal)  # the link returns during the backoff
        cut: list[int] = []

        def cut_once(p: DownloadProgress) -> None:
            if p.percent >= 40 and not cut:
                cut.append(p.bytes_downloaded)
                proxy.cut()

        result = fetch(downloader(sleeps), big_server.url_via(proxy.port), dest, big, cut_once)

    assert result.outcome is DownloadOutcome.COMPLETED
    assert sleeps.delays == [2.0]
    assert result.path is not None
    assert sha256_of(result.path) == big.sha256


def test_a_stalled_link_is_a_lost_link_after_the_stall_timeout(
    big_server: FileServer, big: Package, dest: Path
) -> None:
    with TcpProxy("127.0.0.1", big_server.port) as proxy:
        stalled: list[int] = []

        def blackhole_at_20_percent(p: DownloadProgress) -> None:
            if p.percent >= 20 and not stalled:
                stalled.append(p.bytes_downloaded)
                proxy.blackhole()  # a tunnel: the socket stays open, nothing flows

        result = fetch(
            downloader(stall_timeout_s=0.2, connect_timeout_s=0.2),
            big_server.url_via(proxy.port),
            dest,
            big,
            blackhole_at_20_percent,
        )
    assert result.outcome is DownloadOutcome.PAUSED
    assert stalled[0] <= result.bytes_downloaded == saved_offset(dest, big)
    assert result.bytes_downloaded < FIFTY_MB
    assert "Timeout" in result.detail


def test_nobody_listening_pauses_and_a_malformed_url_fails(small: Package, dest: Path) -> None:
    refused = fetch(downloader(), f"http://127.0.0.1:{free_port()}/pkg.swu", dest, small)
    assert refused.outcome is DownloadOutcome.PAUSED
    assert refused.bytes_downloaded == 0
    malformed = fetch(downloader(), "not a url", dest, small)
    assert (malformed.outcome, malformed.reason) == (
        DownloadOutcome.FAILED,
        OTAStatus.S3_UNAVAILABLE,
    )
    assert "invalid download URL" in malformed.detail


# -- S3 answers --------------------------------------------------------------------


def test_503_twice_then_ok_succeeds_after_backing_off(
    server: FileServer, small: Package, dest: Path
) -> None:
    server.faults.fail_next = 2
    sleeps = Sleeps()
    result = fetch(downloader(sleeps), server.url, dest, small)
    assert result.outcome is DownloadOutcome.COMPLETED
    assert sleeps.delays == [2.0, 4.0]
    assert [r.status for r in server.requests[:3]] == [503, 503, 206]
    assert result.path is not None
    assert sha256_of(result.path) == small.sha256


def test_503_always_fails_s3_unavailable_after_3_attempts(
    server: FileServer, small: Package, dest: Path
) -> None:
    server.faults.always_status = 503
    sleeps = Sleeps()
    result = fetch(downloader(sleeps), server.url, dest, small)
    assert result.outcome is DownloadOutcome.FAILED
    assert result.reason == OTAStatus.S3_UNAVAILABLE
    assert (result.attempts, result.requests, len(server.requests)) == (3, 3, 3)
    assert sleeps.delays == [2.0, 4.0]


def test_retry_after_is_honoured(server: FileServer, small: Package, dest: Path) -> None:
    server.faults.fail_next, server.faults.retry_after = 1, "7"
    sleeps = Sleeps()
    assert fetch(downloader(sleeps), server.url, dest, small).ok
    assert sleeps.delays == [7.0]


def test_an_expired_url_is_its_own_outcome_and_a_new_url_resumes(
    server: FileServer, small: Package, dest: Path
) -> None:
    offset = pause_at(server, downloader(), dest, small, 2 * MIB)
    server.faults.always_status = 403
    expired = fetch(downloader(), server.url, dest, small)
    assert expired.outcome is DownloadOutcome.URL_EXPIRED
    assert expired.bytes_downloaded == offset == 2 * MIB  # the partial file is kept

    with FileServer(small.path, url_path="/new/presigned?X-Amz-Signature=abc%2Fdef") as other:
        resumed = fetch(downloader(), other.url, dest, small)
        assert other.requests[0].range_start == 2 * MIB
    assert resumed.ok
    assert resumed.resumed_from == 2 * MIB
    assert resumed.path is not None
    assert sha256_of(resumed.path) == small.sha256


def test_a_missing_object_fails_at_once(server: FileServer, small: Package, dest: Path) -> None:
    sleeps = Sleeps()
    result = fetch(downloader(sleeps), server.url + ".gone", dest, small)
    assert (result.outcome, result.reason) == (DownloadOutcome.FAILED, OTAStatus.S3_UNAVAILABLE)
    assert "404" in result.detail
    assert (result.requests, sleeps.delays) == (1, [])


# -- integrity -------------------------------------------------------------------


def test_checksum_mismatch_deletes_the_file(server: FileServer, small: Package, dest: Path) -> None:
    server.faults.corrupt_at = 1_234_567
    result = fetch(downloader(), server.url, dest, small)
    assert (result.outcome, result.reason) == (DownloadOutcome.FAILED, OTAStatus.CHECKSUM_MISMATCH)
    assert "SHA-256" in result.detail
    assert list(dest.iterdir()) == []  # no .part, no state, no package


@pytest.mark.parametrize(
    ("extra_object_bytes", "extra_body_bytes", "ignore_range"),
    [
        (4096, 0, False),  # the object is bigger than the signed package (Content-Range)
        (4096, 0, True),  # ... and the server ignores Range (Content-Length of a 200)
        (0, 1000, False),  # a 206 carrying more than the asked range
    ],
    ids=["bigger-object", "bigger-object-200", "longer-body"],
)
def test_a_server_offering_more_than_the_signed_size_is_refused_before_writing(
    small: Package,
    dest: Path,
    tmp_path: Path,
    extra_object_bytes: int,
    extra_body_bytes: int,
    ignore_range: bool,
) -> None:
    bigger = tmp_path / "bigger.swu"
    bigger.write_bytes(small.path.read_bytes() + b"\0" * extra_object_bytes)
    with FileServer(bigger) as server:
        server.faults.extra_bytes, server.faults.ignore_range = extra_body_bytes, ignore_range
        result = fetch(downloader(), server.url, dest, small)
    assert (result.outcome, result.reason) == (DownloadOutcome.FAILED, OTAStatus.CHECKSUM_MISMATCH)
    assert result.bytes_fetched == 0  # refused on the headers: nothing read, nothing written
    assert list(dest.iterdir()) == []


def test_an_object_shorter_than_the_resume_offset_416_fails_and_deletes(
    server: FileServer, small: Package, dest: Path, tmp_path: Path
) -> None:
    pause_at(server, downloader(), dest, small, 2 * MIB)
    shorter = tmp_path / "shorter.swu"
    shorter.write_bytes(small.path.read_bytes()[: MIB + 5])
    with FileServer(shorter) as other:
        result = fetch(downloader(), other.url, dest, small)
        assert other.requests[0].status == 416
    assert (result.outcome, result.reason) == (DownloadOutcome.FAILED, OTAStatus.CHECKSUM_MISMATCH)
    assert list(dest.iterdir()) == []


def test_a_server_ignoring_range_is_read_through_once(
    server: FileServer, small: Package, dest: Path
) -> None:
    pause_at(server, downloader(), dest, small, MIB)
    server.faults.ignore_range = True
    seen = len(server.requests)
    progress = list[DownloadProgress]()
    result = fetch(downloader(), server.url, dest, small, progress.append)
    assert result.ok
    assert result.resumed_from == MIB
    assert [r.status for r in server.requests[seen:]] == [200]  # one request, whole object
    assert result.bytes_fetched == SMALL  # the first MiB was read again and dropped
    steps = [MIB] + [p.bytes_downloaded for p in progress]
    assert max(b - a for a, b in itertools.pairwise(steps)) <= SMALL // 10
    assert result.path is not None
    assert sha256_of(result.path) == small.sha256


def test_a_retry_continues_at_the_first_byte_not_received_not_at_the_commit(
    server: FileServer, small: Package, dest: Path
) -> None:
    # Given a link cut once mid-granule, 1000 bytes past 2 MiB
    cut = 2 * MIB + 1000
    server.faults.cut_after, server.faults.cut_times = cut, 1
    sleeps, progress = Sleeps(), list[DownloadProgress]()
    result = fetch(downloader(sleeps), server.url, dest, small, progress.append)

    # Then the complete granules were committed at the cut, the retry asked
    # for the very next byte (the running hash is there), and nothing came twice
    assert result.ok
    assert 2 * MIB in [p.bytes_downloaded for p in progress]
    assert server.requests[-1].range == f"bytes={cut}-{SMALL - 1}"
    assert sleeps.delays == [2.0]
    assert result.bytes_fetched == SMALL
    assert result.path is not None
    assert sha256_of(result.path) == small.sha256


def test_a_crash_after_uncommitted_writes_resumes_at_the_commit_and_verifies(
    server: FileServer, small: Package, dest: Path
) -> None:
    # Given a process that dies at 30 % (cancelled from its progress report)
    committed: list[int] = []

    async def dies_at_30_percent() -> None:
        task = asyncio.current_task()
        assert task is not None

        def die(p: DownloadProgress) -> None:
            if p.percent >= 30 and not committed:
                committed.append(p.bytes_downloaded)
                task.cancel()

        await downloader().download(server.url, dest, UPDATE_ID, small.size, small.sha256, die)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(dies_at_30_percent())
    # ... after writing bytes it never committed (granules past the last commit)
    with (dest / f"{UPDATE_ID}.part").open("ab") as torn:
        torn.write(b"\xff" * 100_000)

    # When a new process resumes
    seen = len(server.requests)
    result = fetch(downloader(), server.url, dest, small)

    # Then it starts at the commit, re-hashes the prefix and the package verifies
    assert result.ok, result.detail
    assert result.resumed_from == committed[0]
    assert server.requests[seen].range_start == committed[0]
    assert result.bytes_fetched == SMALL - committed[0]
    assert result.path is not None
    assert sha256_of(result.path) == small.sha256


def test_a_partial_file_corrupted_on_disk_fails_the_digest_and_is_deleted(
    server: FileServer, small: Package, dest: Path
) -> None:
    # Given a paused download whose committed prefix rotted on disk (one bit)
    pause_at(server, downloader(), dest, small, 2 * MIB)
    with (dest / f"{UPDATE_ID}.part").open("r+b") as part:
        part.seek(MIB)
        byte = part.read(1)
        part.seek(MIB)
        part.write(bytes([byte[0] ^ 0x01]))

    # When it resumes, the digest of prefix + rest does not match: detected, all deleted
    result = fetch(downloader(), server.url, dest, small)
    assert (result.outcome, result.reason) == (DownloadOutcome.FAILED, OTAStatus.CHECKSUM_MISMATCH)
    assert result.resumed_from == 2 * MIB
    assert list(dest.iterdir()) == []

    # And the next attempt starts over from byte 0 and succeeds
    again = fetch(downloader(), server.url, dest, small)
    assert again.ok
    assert again.resumed_from == 0
    assert again.path is not None
    assert sha256_of(again.path) == small.sha256


def test_a_partial_file_of_another_package_is_not_resumed(
    server: FileServer, small: Package, dest: Path, tmp_path: Path
) -> None:
    pause_at(server, downloader(), dest, small, 2 * MIB)
    other_path = tmp_path / "other.swu"
    other = Package(other_path, SMALL, write_package(other_path, SMALL, seed=99))
    with FileServer(other_path) as other_server:
        result = fetch(downloader(), other_server.url, dest, other)
        assert other_server.requests[0].range_start == 0
    assert result.ok
    assert result.resumed_from == 0
    assert result.path is not None
    assert sha256_of(result.path) == other.sha256


def test_a_finished_package_is_not_downloaded_again_and_discard_removes_it(
    server: FileServer, small: Package, dest: Path
) -> None:
    assert fetch(downloader(), server.url, dest, small).ok
    again = fetch(downloader(), server.url, dest, small)
    assert again.ok
    assert again.requests == 0
    discard_download(dest, UPDATE_ID)
    assert list(dest.iterdir()) == []


# -- time ---------------------------------------------------------------------------


def test_a_slow_server_runs_into_the_overall_timeout(
    server: FileServer, small: Package, dest: Path
) -> None:
    # 3 MiB at 256 KB/s takes ~12 s; the overall timeout is 0.5 s (real clock).
    server.faults.throttle_bps = 256_000
    result = fetch(downloader(overall_timeout_s=0.5), server.url, dest, small)
    assert (result.outcome, result.reason) == (DownloadOutcome.FAILED, OTAStatus.DOWNLOAD_TIMEOUT)
    assert result.bytes_downloaded < SMALL
    assert result.bytes_downloaded % GRANULE == 0
    assert saved_offset(dest, small) == result.bytes_downloaded  # kept: a retry resumes from it


def test_the_timeout_also_bounds_the_backoff(
    server: FileServer, small: Package, dest: Path
) -> None:
    server.faults.always_status = 503
    sleeps = Sleeps()
    result = fetch(downloader(sleeps, overall_timeout_s=3.0), server.url, dest, small)
    assert result.reason == OTAStatus.DOWNLOAD_TIMEOUT  # 2 s fits, 2 + 4 s does not
    assert sleeps.delays == [2.0]


def test_a_trickling_server_fails_download_timeout_by_the_minimum_progress_rule(
    server: FileServer, small: Package, dest: Path
) -> None:
    # 64 bytes every 20 ms: never silent long enough for the stall timeout
    # (30 s), hopeless for the package. The overall deadline is far away
    # (600 s); the minimum-progress rule asks 64 KiB per 0.5 s (real clock).
    server.faults.trickle_bytes = 64
    server.faults.trickle_interval_s = 0.02
    rd = downloader(overall_timeout_s=600.0, min_progress_bytes=64 * KIB, min_progress_window_s=0.5)
    result = fetch(rd, server.url, dest, small)
    assert (result.outcome, result.reason) == (DownloadOutcome.FAILED, OTAStatus.DOWNLOAD_TIMEOUT)
    assert "minimum progress" in result.detail  # the rule, not the overall deadline
    assert 0 < result.bytes_fetched < 64 * KIB  # it did trickle; it never reached the minimum
    assert result.requests == 1  # no retry: a trickle is not a lost link
    assert result.bytes_downloaded == 0  # not one complete 64 KiB granule arrived


def test_the_same_rule_lets_a_normal_download_through(
    server: FileServer, small: Package, dest: Path
) -> None:
    rd = downloader(overall_timeout_s=600.0, min_progress_bytes=64 * KIB, min_progress_window_s=0.5)
    result = fetch(rd, server.url, dest, small)
    assert result.ok
    assert result.path is not None
    assert sha256_of(result.path) == small.sha256


def test_retry_backoff_is_not_counted_as_slowness(
    server: FileServer, small: Package, dest: Path
) -> None:
    # A clock that moves only while the downloader sleeps: two 503s cost
    # 2 + 4 s of backoff, more than the 5 s window, and not a byte arrived in
    # them; the transfer itself takes no time on this clock. The download
    # must complete: waiting out the server's 503s is not a trickle.
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    server.faults.fail_next = 2
    rd = RangeDownloader(
        DownloadConfig(fsync=False, min_progress_bytes=1, min_progress_window_s=5.0),
        clock=lambda: now[0],
        sleep=sleep,
        random=lambda: 0.0,
    )
    result = fetch(rd, server.url, dest, small)
    assert now[0] == 6.0
    assert result.ok, result.detail


def test_a_stepped_clock_times_out_deterministically(
    big_server: FileServer, big: Package, dest: Path
) -> None:
    clock = StepClock(1.0)  # every reading one second later
    result = fetch(downloader(clock=clock, overall_timeout_s=40.0), big_server.url, dest, big)
    assert result.reason == OTAStatus.DOWNLOAD_TIMEOUT
    assert 0 < result.bytes_downloaded < FIFTY_MB


# -- chunks, progress, memory -------------------------------------------------------


def test_chunks_start_at_1_mib_grow_on_a_fast_link_and_report_every_10_percent(
    big_server: FileServer, big: Package, dest: Path
) -> None:
    progress = list[DownloadProgress]()
    clock = StepClock(0.001)  # every chunk "takes" a few ms: a fast link
    result = fetch(downloader(clock=clock), big_server.url, dest, big, progress.append)
    assert result.ok
    # Two requests: the first chunk (the spec's 1 MiB), then the rest in one stream.
    assert [r.range for r in big_server.requests] == ["bytes=0-1048575", "bytes=1048576-52428799"]
    assert result.requests == 2
    # Committed and reported chunk by chunk: x2, then capped at 10 %.
    offsets = [0] + [p.bytes_downloaded for p in progress]
    sizes = [b - a for a, b in itertools.pairwise(offsets)]
    assert sizes[:5] == [MIB, 2 * MIB, 4 * MIB, 5 * MIB, 5 * MIB]
    assert offsets[-1] == FIFTY_MB
    assert max(sizes) <= FIFTY_MB // 10


def test_memory_is_bounded_by_the_chunk_not_the_package(
    big_server: FileServer, big: Package, dest: Path
) -> None:
    rd = downloader()
    tracemalloc.start()
    try:
        result = fetch(rd, big_server.url, dest, big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok
    assert peak < 2 * MIB, f"peak {peak} bytes for a {FIFTY_MB}-byte package"


def test_many_vehicles_download_concurrently_over_one_session(
    server: FileServer, small: Package, tmp_path: Path
) -> None:
    async def fleet(n: int) -> list[DownloadResult]:
        async with aiohttp.ClientSession() as session:
            rd = RangeDownloader(DownloadConfig(fsync=False), session=session)
            return await asyncio.gather(
                *(
                    rd.download(server.url, tmp_path / f"v{i}", UPDATE_ID, SMALL, small.sha256)
                    for i in range(n)
                )
            )

    results = asyncio.run(fleet(20))
    assert all(r.ok for r in results)
    assert {sha256_of(r.path) for r in results if r.path} == {small.sha256}
