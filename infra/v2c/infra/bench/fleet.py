"""`v2c bench fleet`: how many simulated vehicles one process holds, and what
the vehicles' downloader costs beside a plain HTTP GET of the same object.

Measured in one run:

* idle fleet, for each size: N `FleetSimulator` vehicles (one gmqtt session
  each, plain TCP) against a private mosquitto, in this one process: time to
  connect them all, vehicles connected as the vehicles see it (CONNACK) and
  as the broker's kernel sees it (ESTABLISHED sockets on its port), resident
  memory per vehicle, and the CPU the process and the broker burn while the
  fleet sits idle. A fresh broker per size, so no size inherits sessions.
  No registry (`register=False`) and a locally generated trusted key: the
  idle phase needs no AWS, so moto's cost stays out of the numbers.
* downloads: one random package served with Range support by a separate
  aiohttp process (so the server does not share the clients' event loop);
  a plain streamed GET (to a file, SHA-256 on the fly) alone and K at once,
  then `RangeDownloader` (the vehicles' downloader, fsync off as in a
  simulation) alone and K at once, every result checked against the digest.
  The ratio downloader/plain at the same concurrency is its overhead
  (chunked Range requests, the partial-file bookkeeping, the final verify).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import multiprocessing
import os
import resource
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp import web

from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.handlers.signing.software import SoftwareSigner
from v2c.infra.bench.common import (
    BenchError,
    JsonDict,
    bench_broker,
    fmt,
    make_report,
    per_second,
    percentile,
    process_cpu_s,
    ratio,
)
from v2c.infra.local.fleet_provisioning import stack_fleet
from v2c.infra.settings import MqttSettings, StackSettings
from v2c.vehicle_sim.ota.device.download import DownloadConfig, RangeDownloader

MIB: Final = 1024 * 1024
READ_CHUNK: Final = 256 * 1024
LOOPBACK: Final = "127.0.0.1"


@dataclass(frozen=True)
class FleetBenchParams:
    sizes: tuple[int, ...] = (1_000, 10_000)
    downloads: int = 100  # K concurrent downloads
    package_bytes: int = 8 * MIB
    # One MQTT keepalive period (60 s) and a little: every vehicle pings once inside it.
    idle_s: float = 65.0
    connect_concurrency: int = 64
    connect_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError("fleet sizes must be positive")
        if self.downloads < 1:
            raise ValueError("downloads must be at least 1")
        if self.package_bytes < 1:
            raise ValueError("the package must have at least one byte")
        if self.idle_s < 0 or self.connect_timeout_s <= 0 or self.connect_concurrency < 1:
            raise ValueError("idle seconds, connect timeout and concurrency must be positive")


# -- process facts ------------------------------------------------------------
def raise_fd_limit() -> tuple[int, int]:
    """Soft open-files limit up to the hard one (children, mosquitto too, inherit it):
    every vehicle holds one socket here and one in the broker."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident memory now (VmRSS), not the peak: memory per vehicle is a difference."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def established_sockets(pid: int | None) -> int:
    """ESTABLISHED TCP sockets process `pid` holds (the broker's side of each
    vehicle's connection): its socket inodes from /proc/<pid>/fd matched in
    /proc/net/tcp{,6}, so no other process's connection is counted; -1 when
    unreadable."""
    if pid is None:
        return -1
    try:
        links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
        inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
    except OSError:
        return -1
    # A set, not a count of lines: the kernel may repeat a line when the table
    # changes while it is read page by page.
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        established.update(i for i in map(_established_inode, lines) if i in inodes)
    return len(established)


def _established_inode(line: str) -> str:
    fields = line.split()
    return fields[9] if len(fields) > 9 and fields[3] == "01" else ""


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _trusted() -> TrustedKeySet:
    signer = SoftwareSigner.generate(key_id="bench-fleet")
    since = datetime(2020, 1, 1, tzinfo=UTC)
    return TrustedKeySet([TrustedKey(signer.key_id, signer.public_key(), since)])


# -- idle fleet ---------------------------------------------------------------
async def _idle_fleet(size: int, params: FleetBenchParams, trusted: TrustedKeySet) -> JsonDict:
    with bench_broker() as broker, tempfile.TemporaryDirectory(prefix="v2c-bfleet-") as base:
        settings = StackSettings(mqtt=MqttSettings(host=LOOPBACK, port=broker.port))
        gc.collect()
        rss_before = rss_bytes()
        broker_rss_before = rss_bytes(broker.pid) if broker.pid else None
        fleet = stack_fleet(
            settings,
            size,
            base_dir=Path(base),
            trusted=trusted,
            register=False,
            tls=False,
            connect_concurrency=params.connect_concurrency,
        )
        limit_hit = ""
        began = time.perf_counter()
        try:
            await fleet.start(connect=False)
            booted = time.perf_counter()
            try:
                await asyncio.wait_for(fleet.connect(), params.connect_timeout_s)
            except TimeoutError:
                limit_hit = f"not all connected within {params.connect_timeout_s:g} s"
            except OSError as exc:
                limit_hit = f"connect failed: {exc}"
            connected_at = time.perf_counter()
            gc.collect()
            summary = fleet.summary()
            rss_after = rss_bytes()
            broker_rss_after = rss_bytes(broker.pid) if broker.pid else None
            broker_side = established_sockets(broker.pid)
            cpu0, broker0, wall0 = _self_cpu_s(), process_cpu_s(broker.pid), time.perf_counter()
            await asyncio.sleep(params.idle_s)
            wall = time.perf_counter() - wall0
            cpu, broker1 = _self_cpu_s() - cpu0, process_cpu_s(broker.pid)
            still = fleet.summary().connected
        finally:
            await fleet.stop()
            fleet.cleanup()
    connected = summary.connected
    grown = None if rss_before is None or rss_after is None else rss_after - rss_before
    broker_grown = (
        None
        if broker_rss_before is None or broker_rss_after is None
        else broker_rss_after - broker_rss_before
    )
    return {
        "vehicles": size,
        "connected": connected,
        "broker_established": broker_side,
        "connected_after_idle": still,
        "all_connected": connected == size and not limit_hit,
        "limit": limit_hit or None,
        "boot_seconds": round(booted - began, 3),
        "connect_seconds": round(connected_at - booted, 3),
        "connects_per_s": per_second(connected, connected_at - booted),
        "rss_before_mib": _mib(rss_before),
        "rss_after_mib": _mib(rss_after),
        "kib_per_vehicle": round(grown / connected / 1024, 1) if grown and connected else None,
        "broker_kib_per_vehicle": (
            round(broker_grown / connected / 1024, 1) if broker_grown and connected else None
        ),
        "idle_seconds": round(wall, 2),
        "idle_cpu_percent": round(cpu / wall * 100, 2) if wall > 0 else None,
        "broker_idle_cpu_percent": (
            round((broker1 - broker0) / wall * 100, 2)
            if broker0 is not None and broker1 is not None and wall > 0
            else None
        ),
        "errors": summary.errors,
    }


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / MIB, 1)


# -- downloads ----------------------------------------------------------------
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


async def _plain_get(session: aiohttp.ClientSession, url: str, dest: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    async with session.get(url) as response:
        response.raise_for_status()
        with dest.open("wb") as out:
            async for chunk in response.content.iter_chunked(READ_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


async def _concurrently(k: int, one: Callable[[int], Awaitable[bool]], size: int) -> JsonDict:
    """K downloads at once: total throughput, per-download seconds, all verified."""
    seconds: list[float] = []

    async def timed(i: int) -> bool:
        began = time.perf_counter()
        ok = await one(i)
        seconds.append(time.perf_counter() - began)
        return ok

    began = time.perf_counter()
    oks = await asyncio.gather(*(timed(i) for i in range(k)))
    took = time.perf_counter() - began
    seconds.sort()
    return {
        "concurrency": k,
        "seconds": round(took, 3),
        "mib_per_s": per_second(k * size / MIB, took),
        "p50_s": round(percentile(seconds, 50), 3),
        "p99_s": round(percentile(seconds, 99), 3),
        "sha256_ok": sum(oks),
    }


async def _downloads(params: FleetBenchParams) -> JsonDict:
    size = params.package_bytes
    with tempfile.TemporaryDirectory(prefix="v2c-bdl-") as folder:
        root = Path(folder)
        package = root / "package.bin"
        digest = hashlib.sha256()
        with package.open("wb") as out:
            left = size
            while left:
                block = os.urandom(min(left, MIB))
                digest.update(block)
                out.write(block)
                left -= len(block)
        sha = digest.hexdigest()
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

                def fresh(name: str) -> Path:
                    target = root / name
                    shutil.rmtree(target, ignore_errors=True)
                    target.mkdir()
                    return target

                async def plain(i: int, where: Path) -> bool:
                    got, n = await _plain_get(http, url, where / f"{i}.bin")
                    return got == sha and n == size

                async def ranged(i: int, where: Path) -> bool:
                    result = await downloader.download(url, where / str(i), f"u{i}", size, sha)
                    return result.ok

                # One GET first, discarded: the server's first request and the
                # page cache would otherwise be charged to whichever phase runs first.
                await plain(0, fresh("warm-up"))
                results: JsonDict = {"package_bytes": size, "server": "aiohttp FileResponse"}
                for name, one in (("plain_get", plain), ("range_downloader", ranged)):
                    for kind, k in (("single", 1), ("concurrent", params.downloads)):
                        where = fresh(f"{name}-{kind}")
                        results[f"{name}_{kind}"] = await _concurrently(
                            k, functools.partial(one, where=where), size
                        )
                        shutil.rmtree(where)
        finally:
            server.terminate()
            server.join(10)
    return results


# -- the run ------------------------------------------------------------------
async def _run(params: FleetBenchParams) -> tuple[list[JsonDict], JsonDict]:
    trusted = _trusted()
    idle = [await _idle_fleet(size, params, trusted) for size in params.sizes]
    return idle, await _downloads(params)


def run_fleet_bench(params: FleetBenchParams) -> JsonDict:
    started = time.time()
    soft, hard = raise_fd_limit()
    idle, downloads = asyncio.run(_run(params))
    for phase in ("plain_get", "range_downloader"):
        for kind in ("single", "concurrent"):
            part = downloads[f"{phase}_{kind}"]
            if part["sha256_ok"] != part["concurrency"]:
                raise BenchError(f"{phase} {kind}: {part['sha256_ok']} of {part['concurrency']} ok")
    ratios = {
        "downloader_vs_plain_single": ratio(
            downloads["range_downloader_single"]["mib_per_s"],
            downloads["plain_get_single"]["mib_per_s"],
        ),
        "downloader_vs_plain_concurrent": ratio(
            downloads["range_downloader_concurrent"]["mib_per_s"],
            downloads["plain_get_concurrent"]["mib_per_s"],
        ),
    }
    return make_report(
        "fleet",
        {
            "sizes": list(params.sizes),
            "downloads": params.downloads,
            "package_bytes": params.package_bytes,
            "idle_s": params.idle_s,
            "connect_concurrency": params.connect_concurrency,
            "connect_timeout_s": params.connect_timeout_s,
            "fd_limit": [soft, hard],
        },
        {"idle_fleet": idle, "downloads": downloads},
        ratios,
        started_at=started,
    )


def table_rows(report: JsonDict) -> list[tuple[str, str]]:
    r, q = report["results"], report["ratios"]
    rows: list[tuple[str, str]] = []
    for f in r["idle_fleet"]:
        n = f"{f['vehicles']:,}"
        rows += [
            (
                f"{n}: connected / broker sockets",
                f"{f['connected']:,} / {f['broker_established']:,}",
            ),
            (f"{n}: connect time", fmt(f["connect_seconds"], " s", 2)),
            (f"{n}: memory per vehicle", fmt(f["kib_per_vehicle"], " KiB")),
            (f"{n}: broker memory per vehicle", fmt(f["broker_kib_per_vehicle"], " KiB")),
            (
                f"{n}: idle CPU (process / broker)",
                f"{fmt(f['idle_cpu_percent'], ' %')} / {fmt(f['broker_idle_cpu_percent'], ' %')}",
            ),
        ]
        if f["limit"]:
            rows.append((f"{n}: limit", str(f["limit"])))
    d = r["downloads"]
    for phase, label in (("plain_get", "plain GET"), ("range_downloader", "RangeDownloader")):
        for kind in ("single", "concurrent"):
            part = d[f"{phase}_{kind}"]
            rows.append(
                (
                    f"{label} x{part['concurrency']} (MiB/s, p50/p99 s)",
                    f"{fmt(part['mib_per_s'])} ({part['p50_s']}/{part['p99_s']})",
                )
            )
    rows += [
        ("downloader / plain, single", fmt(q["downloader_vs_plain_single"], "", 2)),
        ("downloader / plain, concurrent", fmt(q["downloader_vs_plain_concurrent"], "", 2)),
    ]
    return rows
