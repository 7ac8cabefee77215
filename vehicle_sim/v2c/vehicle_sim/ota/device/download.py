"""The vehicle's package downloader: resumable HTTP Range requests over asyncio.

`await RangeDownloader(config).download(url, dest_dir, update_id,
expected_size, expected_sha256, progress_cb)` fetches the package and
persists it in adaptive chunks (`chunking`: 1 MiB to start, then sized to
the measured throughput, at most a tenth of the package), committing each
complete chunk's end offset (`partial`), so a lost connection or a process
restart resumes at the last committed byte with a *new* call, even with a
new presigned URL. A chunk cut short keeps its complete granules (64 KiB):
the resume offset is always a granule boundary, never a byte the disk does
not hold.

Requests and chunks: the first request of a call asks for one chunk (the
spec's `Range: bytes=0-1048575`, or `bytes=10485760-11534335` resuming at
20 %); once bytes have arrived, the next request asks for the rest of the
package, and its body is committed chunk by chunk as it streams. A request
costs a round trip and a server-side lookup (S3 also bills it), while a
commit costs a `pwrite`; so the chunk size paces commits and progress
reports, not requests. A request that fails is retried from the first byte
not yet received (the hash is at that byte), not from the last commit.

What a call ends with, and what the agent does then: `download_result`;
what one answer's status and headers mean: `download_span`.

Retries: connection failures and 5xx/429 answers are retried with
exponential backoff and jitter (2 s, 4 s, ..., the spec's "attempt 2, wait
2 s"; a `Retry-After` is honoured up to the cap), `attempts` in a row
before giving up; a request that committed bytes resets the count.

Minimum progress (`progress`): a server that sends a byte now and then
never trips the stall timeout, so a call also fails DOWNLOAD_TIMEOUT when
fewer than `min_progress_bytes` arrived during the last
`min_progress_window_s` of transfer (retry backoff does not count), checked
with the deadline before every request and after every read: a trickle
frees the vehicle's update slot within the window plus the stall timeout,
not at the overall deadline.

Never more than the signed size: every request asks for bytes below
`expected_size`; a `Content-Range`/`Content-Length` naming another size, or
a body longer than asked, stops the download (CHECKSUM_MISMATCH) before
anything beyond the request is written. A server that ignores `Range` (200
and the whole object) is read through once, committing chunk by chunk
(bytes already on disk are read and dropped).

Memory is bounded by aiohttp's read buffer and one read (`READ_SIZE`), not
by the chunk or the package: data is hashed and written as it arrives,
straight from the bytes aiohttp hands over (no copy in between), and the
digest is complete when the last byte is written (no re-read at the end).
The clock, the sleep and the random source are injected; file work that
blocks (opening, re-hashing a prefix on resume, fsync) runs in a worker
thread so thousands of vehicles can share one event loop and one
`aiohttp.ClientSession`.
"""

from __future__ import annotations

import asyncio
import errno
import random as _random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import aiohttp
from yarl import URL

from v2c.contract.errors import V2CError, ValidationFailed
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.agent.effects import Reason
from v2c.vehicle_sim.ota.device.chunking import (
    align_down,
    chunk_end,
    granule_for,
    next_chunk_size,
)
from v2c.vehicle_sim.ota.device.download_result import (
    DownloadConfig,
    DownloadOutcome,
    DownloadProgress,
    DownloadResult,
    ProgressCallback,
)
from v2c.vehicle_sim.ota.device.download_span import (
    DownloadTimeout,
    Fatal,
    LinkLost,
    ServerUnavailable,
    UrlExpired,
    body_span,
    mismatch,
)
from v2c.vehicle_sim.ota.device.partial import PartialDownload, package_path
from v2c.vehicle_sim.ota.device.progress import ProgressWindow

__all__ = [
    "DownloadConfig",
    "DownloadOutcome",
    "DownloadProgress",
    "DownloadResult",
    "ProgressCallback",
    "RangeDownloader",
    "discard_download",
    "package_path",
]

T = TypeVar("T")
# asyncio reads a socket 256 KiB at a time: one such piece per read, no re-slicing.
READ_SIZE: Final = 256 * 1024
# The network failing (aiohttp wraps socket errors; a bare reset can still leak through).
# A local disk error is not among them: it must not pass for a lost link.
_LINK_ERRORS: Final = (aiohttp.ClientError, TimeoutError, ConnectionError)


def discard_download(dest_dir: Path, update_id: str) -> None:
    """Delete the partial or finished package of `update_id` (`DiscardPackage`)."""
    PartialDownload(Path(dest_dir), update_id, 0, "", fsync=False).discard()


@dataclass(eq=False)
class _Run:
    """One `download` call's moving parts."""

    url: URL
    partial: PartialDownload
    file: IO[bytes]
    hasher: Any
    offset: int  # committed bytes: what a resume starts from
    granule: int
    chunk_size: int
    deadline: float
    started: float
    progress_cb: ProgressCallback | None
    window: ProgressWindow
    resumed_from: int = 0
    written: int = 0  # bytes written and hashed (>= offset): where the next request starts
    requests: int = 0
    bytes_fetched: int = 0
    unrecorded: int = 0  # received, not yet in `window` (added at the next clock reading)
    idle_s: float = 0.0  # time spent in retry backoff: not the server's slowness

    @property
    def total(self) -> int:
        return self.partial.expected_size


class RangeDownloader:
    """Downloads packages with resumable Range requests (one call per attempt).

    Stateless between calls apart from its configuration: everything a
    resume needs is on disk. Many `download` calls may run concurrently on
    one event loop (different update ids or directories); pass one shared
    `session` for them, else each call opens and closes its own.
    """

    def __init__(
        self,
        config: DownloadConfig | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.config = config or DownloadConfig()
        self._session = session
        self._clock = clock
        self._sleep = sleep
        self._random = random

    async def download(
        self,
        url: str,
        dest_dir: Path,
        update_id: str,
        expected_size: int,
        expected_sha256: bytes | str,
        progress_cb: ProgressCallback | None = None,
    ) -> DownloadResult:
        """Fetch (or resume) `update_id`'s package into `dest_dir`; see the module doc."""
        if expected_size < 1:
            raise ValidationFailed("expected_size must be positive")
        sha_hex = _sha_hex(expected_sha256)
        partial = PartialDownload(
            Path(dest_dir), update_id, expected_size, sha_hex, fsync=self.config.fsync
        )
        started = self._clock()
        opened = await _blocking(partial.prepare, on_cancel=_close_opened)
        if opened is None:  # finished before (a restart after the rename)
            return DownloadResult(
                DownloadOutcome.COMPLETED,
                update_id,
                expected_size,
                expected_size,
                path=partial.package_path,
                resumed_from=expected_size,
            )
        f, offset, hasher = opened
        run = _Run(
            url=URL(url, encoded=True),  # a presigned URL must reach S3 byte for byte
            partial=partial,
            file=f,
            hasher=hasher,
            offset=offset,
            granule=granule_for(self.config.chunks, expected_size),
            chunk_size=self.config.chunks.initial,
            deadline=started + self.config.overall_timeout_s,
            started=started,
            progress_cb=progress_cb,
            window=ProgressWindow(self.config.min_progress, started),
            resumed_from=offset,
            written=offset,
        )
        try:
            if self._session is not None:
                return await self._drive(run, self._session)
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                return await self._drive(run, session)
        finally:
            if not f.closed:
                f.close()

    # -- the retry loop --------------------------------------------------------
    async def _drive(self, run: _Run, session: aiohttp.ClientSession) -> DownloadResult:
        failures = 0
        try:
            while run.offset < run.total:
                self._check_deadline(run)
                before = run.offset
                try:
                    await self._fetch(run, session)
                    failures = 0
                except (LinkLost, ServerUnavailable) as exc:
                    failures = 1 if run.offset > before else failures + 1
                    if failures >= self.config.attempts:
                        return self._gave_up(run, exc, failures)
                    await self._back_off(run, failures, exc)
            return await self._verify(run)
        except Fatal as exc:
            if exc.ota_reason == OTAStatus.CHECKSUM_MISMATCH:
                run.file.close()
                await _blocking(run.partial.discard)
                run.offset = 0
            return self._result(run, DownloadOutcome.FAILED, exc.ota_reason, exc.detail, failures)
        except DownloadTimeout as exc:
            return self._result(
                run, DownloadOutcome.FAILED, OTAStatus.DOWNLOAD_TIMEOUT, exc.detail, failures
            )
        except UrlExpired as exc:
            return self._result(run, DownloadOutcome.URL_EXPIRED, None, exc.detail, failures)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return self._result(
                run, DownloadOutcome.FAILED, OTAStatus.INSUFFICIENT_STORAGE, str(exc), failures
            )

    def _gave_up(self, run: _Run, exc: V2CError, failures: int) -> DownloadResult:
        if isinstance(exc, LinkLost):
            return self._result(run, DownloadOutcome.PAUSED, None, exc.detail, failures)
        return self._result(
            run, DownloadOutcome.FAILED, OTAStatus.S3_UNAVAILABLE, exc.detail, failures
        )

    async def _back_off(self, run: _Run, failures: int, exc: V2CError) -> None:
        delay = self.config.backoff.delay(failures, None, self._random)
        if isinstance(exc, ServerUnavailable) and exc.retry_after_s is not None:
            delay = max(delay, min(exc.retry_after_s, self.config.backoff.max_s))
        if self._clock() + delay >= run.deadline:
            raise DownloadTimeout(f"no time left for retry {failures + 1} ({exc.detail})")
        await self._sleep(delay)
        run.idle_s += delay

    def _check_deadline(self, run: _Run) -> None:
        """The overall deadline and the minimum progress, on one clock reading."""
        now = self._clock()
        if now >= run.deadline:
            raise DownloadTimeout(
                f"{run.offset} of {run.total} bytes after {self.config.overall_timeout_s:g} s"
            )
        transfer_time = now - run.idle_s
        run.window.add(transfer_time, run.unrecorded)
        run.unrecorded = 0
        shortfall = run.window.shortfall(transfer_time)
        if shortfall is not None:
            raise DownloadTimeout(f"{shortfall}; {run.offset} of {run.total} bytes on disk")

    # -- one request -------------------------------------------------------------
    async def _fetch(self, run: _Run, session: aiohttp.ClientSession) -> None:
        """Request the next chunk and take what arrives; raises how it ended badly."""
        start = run.written
        if start == run.resumed_from:  # nothing arrived yet in this call: one chunk
            end = chunk_end(start, run.chunk_size, run.total, run.granule)
        else:  # the rest, committed chunk by chunk as it streams
            end = run.total
        headers = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        timeout = aiohttp.ClientTimeout(
            sock_connect=self.config.connect_timeout_s, sock_read=self.config.stall_timeout_s
        )
        run.requests += 1
        try:
            async with session.get(
                run.url, headers=headers, timeout=timeout, auto_decompress=False
            ) as response:
                stream_start, stream_end = body_span(
                    response.status,
                    response.headers,
                    response.content_length,
                    start,
                    end,
                    run.total,
                )
                await self._receive(run, response, stream_start, stream_end)
        except aiohttp.InvalidURL as exc:
            raise Fatal(OTAStatus.S3_UNAVAILABLE, f"invalid download URL: {exc}") from exc
        except _LINK_ERRORS as exc:
            raise LinkLost(f"{type(exc).__name__}: {exc}") from exc

    async def _receive(
        self, run: _Run, response: aiohttp.ClientResponse, position: int, stream_end: int
    ) -> None:
        """Hash and write the body as it arrives; commit at chunk ends, and the
        complete granules when the link fails or time runs out."""
        commit_at = self._next_commit(run, stream_end)
        chunk_started, chunk_from = self._clock(), run.offset
        try:
            while position < stream_end:
                self._check_deadline(run)
                piece = await response.content.read(min(READ_SIZE, stream_end - position))
                if not piece:
                    raise LinkLost(f"the body ended at byte {position} of {stream_end}")
                run.bytes_fetched += len(piece)
                run.unrecorded += len(piece)
                view = memoryview(piece)
                if position < run.written:  # a 200 body: drop what is already on disk
                    skip = min(len(view), run.written - position)
                    view, position = view[skip:], position + skip
                position += len(view)
                while view:  # up to the commit point, commit, go on
                    take = min(len(view), commit_at - run.written)
                    self._write(run, view[:take])
                    view = view[take:]
                    if run.written == commit_at:
                        await self._commit(run, commit_at, chunk_from, chunk_started)
                        chunk_started, chunk_from = self._clock(), run.offset
                        commit_at = self._next_commit(run, stream_end)
            await _refuse_extra(response)
        except (LinkLost, DownloadTimeout, *_LINK_ERRORS):
            keep = align_down(run.written, run.granule)  # the complete granules
            if keep > run.offset:
                await self._commit(run, keep, chunk_from, chunk_started)
            raise

    def _next_commit(self, run: _Run, stream_end: int) -> int:
        """The end of the chunk being received: a chunk end, or the request's end."""
        if run.written >= run.total:
            return run.total
        return min(stream_end, chunk_end(run.written, run.chunk_size, run.total, run.granule))

    @staticmethod
    def _write(run: _Run, data: memoryview) -> None:
        run.hasher.update(data)
        run.file.write(data)
        run.written += len(data)

    async def _commit(self, run: _Run, upto: int, chunk_from: int, chunk_started: float) -> None:
        """Record `upto` (<= written) as committed; size the next chunk; report."""
        if self.config.fsync:  # seconds on a busy disk: not on the event loop
            await _blocking(run.partial.commit, run.file, upto)
        else:  # a flush and one small pwrite (the first commit creates the state file)
            run.partial.commit(run.file, upto)
        gained, elapsed = upto - chunk_from, self._clock() - chunk_started
        run.offset = upto
        run.chunk_size = next_chunk_size(self.config.chunks, run.chunk_size, gained, elapsed)
        if run.progress_cb is not None:
            run.progress_cb(
                DownloadProgress(
                    run.partial.update_id,
                    run.offset,
                    run.total,
                    run.chunk_size,
                    gained / elapsed if elapsed > 0 else float("inf"),
                )
            )

    async def _verify(self, run: _Run) -> DownloadResult:
        digest = run.hasher.hexdigest()
        if digest != run.partial.sha256_hex:
            raise mismatch(f"SHA-256 {digest} != signed {run.partial.sha256_hex}")
        if self.config.fsync:
            path = await _blocking(run.partial.finish, run.file)
        else:  # a flush, a rename and an unlink
            path = run.partial.finish(run.file)
        return self._result(run, DownloadOutcome.COMPLETED, None, "", 0, path)

    def _result(
        self,
        run: _Run,
        outcome: DownloadOutcome,
        reason: Reason | None,
        detail: str,
        failures: int,
        path: Path | None = None,
    ) -> DownloadResult:
        return DownloadResult(
            outcome,
            run.partial.update_id,
            run.offset,
            run.total,
            path=path,
            reason=reason,
            detail=detail,
            attempts=failures,
            resumed_from=run.resumed_from,
            requests=run.requests,
            bytes_fetched=run.bytes_fetched,
            elapsed_s=self._clock() - run.started,
        )


async def _blocking(
    fn: Callable[..., T], *args: Any, on_cancel: Callable[[T], None] | None = None
) -> T:
    """Run blocking file work (fsync, hashing) in a worker thread.

    A cancelled download (`CancelDownload`, a shutdown) waits for the thread
    to finish before the cancel goes on: the thread is using the open
    `.part` file, which the caller closes next. `on_cancel` disposes of a
    result nobody will receive (an opened file).
    """
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        if on_cancel is not None and not future.cancelled() and future.exception() is None:
            on_cancel(future.result())
        raise


def _close_opened(opened: tuple[IO[bytes], int, Any] | None) -> None:
    if opened is not None:
        opened[0].close()


async def _refuse_extra(response: aiohttp.ClientResponse) -> None:
    """A body longer than it said (or than asked, when chunked) is not the signed package."""
    if not response.content.at_eof() and await response.content.read(1):
        raise mismatch("the server sent more bytes than asked for")


def _sha_hex(expected: bytes | str) -> str:
    text = expected.hex() if isinstance(expected, bytes) else expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValidationFailed("expected_sha256 must be 32 bytes or 64 hex digits")
    return text
