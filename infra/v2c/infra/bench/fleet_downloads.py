"""The download phase of `v2c bench fleet`: the vehicles' `RangeDownloader`
beside a plain streamed GET of the same object, alone and K at once.

One random package served with Range support by a separate aiohttp process
(so the server does not share the clients' event loop). A plain GET streams
the body to a file with SHA-256 on the fly; `RangeDownloader` (fsync off, as
in a simulation) does everything a vehicle does: Range requests, the partial
file and its committed offset, the digest. Every result is checked against
the package's digest.

Fair by construction: both write into a directory that exists before the
clock starts (a vehicle's download directory exists; creating one per
download would charge the downloader a directory creation the plain GET
never pays), both share one `aiohttp.ClientSession`, and the two alternate
round by round (plain first in even rounds, the downloader first in odd
ones), so neither gets the quieter half of a shared machine. Each figure is
the median round: a single 8 MiB download takes ~15-40 ms on loopback, where
one scheduler hiccup moves a lone measurement by half.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp import web

from v2c.infra.bench.common import BenchError, JsonDict, per_second, percentile
from v2c.infra.bench.fleet_idle import self_cpu_s
from v2c.vehicle_sim.ota.device.download import DownloadConfig, RangeDownloader

MIB: Final = 1024 * 1024
READ_CHUNK: Final = 256 * 1024
LOOPBACK: Final = "127.0.0.1"
PHASES: Final = ("plain_get", "range_downloader")
KINDS: Final = ("single", "concurrent")

# One download: (its index, its existing directory) -> digest and size verified.
Download = Callable[[int, Path], Awaitable[bool]]


@dataclass(frozen=True)
class DownloadParams:
    package_bytes: int
    concurrency: int  # K
    single_rounds: int = 20
    concurrent_rounds: int = 5


def _serve(path: str, port: int) -> None:
    """The package server (a child process): one static route, Range included."""

    async def package(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/package.bin", package)
    web.run_app(app, host=LOOPBACK, port=port, print=None, handle_signals=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"the package server did not listen on port {port}")


async def plain_get(session: aiohttp.ClientSession, url: str, dest: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    async with session.get(url) as response:
        response.raise_for_status()
        with dest.open("wb") as out:
            async for chunk in response.content.iter_chunked(READ_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


def _write_package(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, MIB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Round:
    seconds: float  # wall, all K
    each: list[float]  # every download's seconds, sorted
    ok: int  # downloads whose digest matched
    cpu_s: float  # this process's CPU (the clients'; the server is another process)


async def _round(k: int, one: Download, root: Path) -> _Round:
    """K downloads at once into fresh directories."""
    shutil.rmtree(root, ignore_errors=True)
    for i in range(k):
        (root / str(i)).mkdir(parents=True)
    seconds: list[float] = []

    async def timed(i: int) -> bool:
        began = time.perf_counter()
        ok = await one(i, root / str(i))
        seconds.append(time.perf_counter() - began)
        return ok

    cpu0, began = self_cpu_s(), time.perf_counter()
    oks = await asyncio.gather(*(timed(i) for i in range(k)))
    took, cpu = time.perf_counter() - began, self_cpu_s() - cpu0
    shutil.rmtree(root)
    return _Round(took, sorted(seconds), sum(oks), cpu)


def _summary(k: int, size: int, rounds: list[_Round]) -> JsonDict:
    """The median round's figures (by wall time), every round's MiB/s, all verified.

    `cpu_ms_per_mib` (the median round's by CPU) is what the clients' side
    burns per MiB whatever else runs on the machine: the steadier figure
    when the wall-clock ones swing with the load.
    """
    mib = k * size / MIB
    median = sorted(rounds, key=lambda r: r.seconds)[len(rounds) // 2]
    cpu = sorted(r.cpu_s for r in rounds)[len(rounds) // 2]
    return {
        "concurrency": k,
        "rounds": len(rounds),
        "seconds": round(median.seconds, 4),
        "mib_per_s": per_second(mib, median.seconds),
        "p50_s": round(percentile(median.each, 50), 4),
        "p99_s": round(percentile(median.each, 99), 4),
        "rounds_mib_per_s": [per_second(mib, r.seconds) for r in rounds],
        "cpu_ms_per_mib": round(cpu * 1000 / mib, 3),
        "downloads": k * len(rounds),
        "sha256_ok": sum(r.ok for r in rounds),
    }


async def _measure(
    params: DownloadParams, plain: Download, ranged: Download, root: Path
) -> JsonDict:
    size = params.package_bytes
    results: JsonDict = {"package_bytes": size, "server": "aiohttp FileResponse"}
    plans = (
        ("single", 1, params.single_rounds),
        ("concurrent", params.concurrency, params.concurrent_rounds),
    )
    for kind, k, rounds in plans:
        done: dict[str, list[_Round]] = {p: [] for p in PHASES}
        for n in range(rounds):
            order = PHASES if n % 2 == 0 else PHASES[::-1]
            for phase in order:
                one = plain if phase == "plain_get" else ranged
                done[phase].append(await _round(k, one, root / f"{phase}-{kind}"))
        for phase in PHASES:
            results[f"{phase}_{kind}"] = _summary(k, size, done[phase])
    return results


async def run_downloads(params: DownloadParams) -> JsonDict:
    with tempfile.TemporaryDirectory(prefix="v2c-bdl-") as folder:
        root = Path(folder)
        package = root / "package.bin"
        sha = _write_package(package, params.package_bytes)
        port = _free_port()
        server = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(str(package), port), daemon=True
        )
        server.start()
        try:
            _wait_listening(port)
            url = f"http://{LOOPBACK}:{port}/package.bin"
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as http:
                downloader = RangeDownloader(DownloadConfig(fsync=False), session=http)

                async def plain(_i: int, where: Path) -> bool:
                    got, n = await plain_get(http, url, where / "package.bin")
                    return got == sha and n == params.package_bytes

                async def ranged(i: int, where: Path) -> bool:
                    result = await downloader.download(
                        url, where, f"u{i}", params.package_bytes, sha
                    )
                    return result.ok

                # One GET of each first, discarded: the server's first request and
                # the page cache would otherwise be charged to whichever runs first.
                await _round(1, plain, root / "warm-up")
                await _round(1, ranged, root / "warm-up")
                return await _measure(params, plain, ranged, root)
        finally:
            server.terminate()
            server.join(10)


def paired_ratio(numerators: list[float | None], denominators: list[float | None]) -> float | None:
    """The median of round-by-round ratios (round i of each ran back to back)."""
    pairs = sorted(n / d for n, d in zip(numerators, denominators, strict=True) if n and d)
    return round(percentile(pairs, 50), 3) if pairs else None


def check_verified(downloads: JsonDict) -> None:
    for phase in PHASES:
        for kind in KINDS:
            part = downloads[f"{phase}_{kind}"]
            if part["sha256_ok"] != part["downloads"]:
                raise BenchError(f"{phase} {kind}: {part['sha256_ok']} of {part['downloads']} ok")
