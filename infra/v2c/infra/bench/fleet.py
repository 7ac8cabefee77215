"""`v2c bench fleet`: how many simulated vehicles one process holds, and what
the vehicles' downloader costs beside a plain HTTP GET of the same object.

Measured in one run:

* idle fleet (`fleet_idle`), for each size: N `FleetSimulator` vehicles (one
  gmqtt session each) against a private mosquitto, in this one process,
  over plain TCP or, with `tls`, mutual TLS exactly as the stack's vehicle
  listener asks for it (a client certificate per vehicle, CN = VIN = client
  id; certificates issued once into a PKI directory kept between runs).
  Time to connect them all, vehicles connected as the vehicles see it
  (CONNACK) and as the broker's kernel sees it (ESTABLISHED sockets on its
  port), resident memory per vehicle (growth of VmRSS after `gc.collect()`,
  divided by the vehicles connected), and the CPU the process and the broker
  burn while the fleet sits idle. A fresh broker per size, so no size
  inherits sessions. No registry (`register=False`) and a locally generated
  trusted key: the idle phase needs no AWS, so moto's cost stays out of the
  numbers. The soft open-files limit is raised to the hard one first (one
  socket per vehicle here and one in the broker, which inherits it).
* downloads (`fleet_downloads`): one random package served with Range
  support by a separate aiohttp process; a plain streamed GET (to a file,
  SHA-256 on the fly) and `RangeDownloader` (the vehicles' downloader,
  fsync off as in a simulation), alone (`single_rounds` rounds) and K at
  once (`concurrent_rounds` rounds), alternating, each figure the median
  round, every result checked against the digest. The ratio
  downloader/plain at the same concurrency is the cost of what a vehicle
  does beyond a GET: the first chunk as its own Range request, the partial
  file and its committed offset per chunk, a worker-thread trip to open it.
  Two ratios: of the two medians, and the median of the ratios of rounds
  run back to back (`_paired`), which a machine whose load drifts during
  the run (a shared one) moves less.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.handlers.signing.software import SoftwareSigner
from v2c.infra.bench.common import JsonDict, fmt, make_report, ratio
from v2c.infra.bench.fleet_downloads import (
    DownloadParams,
    check_verified,
    paired_ratio,
    run_downloads,
)
from v2c.infra.bench.fleet_idle import (
    DEFAULT_PKI_DIR,
    IdleParams,
    established_sockets,
    idle_fleet,
    raise_fd_limit,
    rss_bytes,
)

__all__ = [
    "FleetBenchParams",
    "established_sockets",
    "raise_fd_limit",
    "rss_bytes",
    "run_fleet_bench",
    "table_rows",
]

MIB: Final = 1024 * 1024


@dataclass(frozen=True)
class FleetBenchParams:
    sizes: tuple[int, ...] = (1_000, 10_000)
    downloads: int = 100  # K concurrent downloads
    package_bytes: int = 8 * MIB
    # One MQTT keepalive period (60 s) and a little: every vehicle pings once inside it.
    idle_s: float = 65.0
    connect_concurrency: int = 64
    connect_timeout_s: float = 300.0
    tls: bool = False
    pki_dir: Path = DEFAULT_PKI_DIR
    single_rounds: int = 20
    concurrent_rounds: int = 5

    def __post_init__(self) -> None:
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError("fleet sizes must be positive")
        if self.downloads < 1:
            raise ValueError("downloads must be at least 1")
        if self.package_bytes < 1:
            raise ValueError("the package must have at least one byte")
        if self.idle_s < 0 or self.connect_timeout_s <= 0 or self.connect_concurrency < 1:
            raise ValueError("idle seconds, connect timeout and concurrency must be positive")
        if self.single_rounds < 1 or self.concurrent_rounds < 1:
            raise ValueError("download rounds must be at least 1")


def _trusted() -> TrustedKeySet:
    signer = SoftwareSigner.generate(key_id="bench-fleet")
    since = datetime(2020, 1, 1, tzinfo=UTC)
    return TrustedKeySet([TrustedKey(signer.key_id, signer.public_key(), since)])


async def _run(params: FleetBenchParams) -> tuple[list[JsonDict], JsonDict]:
    trusted = _trusted()
    idle_params = IdleParams(
        idle_s=params.idle_s,
        connect_concurrency=params.connect_concurrency,
        connect_timeout_s=params.connect_timeout_s,
        tls=params.tls,
        pki_dir=params.pki_dir,
    )
    idle = [await idle_fleet(size, idle_params, trusted) for size in params.sizes]
    download_params = DownloadParams(
        package_bytes=params.package_bytes,
        concurrency=params.downloads,
        single_rounds=params.single_rounds,
        concurrent_rounds=params.concurrent_rounds,
    )
    return idle, await run_downloads(download_params)


def run_fleet_bench(params: FleetBenchParams) -> JsonDict:
    started = time.time()
    soft, hard = raise_fd_limit()
    idle, downloads = asyncio.run(_run(params))
    check_verified(downloads)
    ratios: JsonDict = {}
    for kind in ("single", "concurrent"):
        ranged, plain = downloads[f"range_downloader_{kind}"], downloads[f"plain_get_{kind}"]
        ratios[f"downloader_vs_plain_{kind}"] = ratio(ranged["mib_per_s"], plain["mib_per_s"])
        ratios[f"downloader_vs_plain_{kind}_paired"] = paired_ratio(
            ranged["rounds_mib_per_s"], plain["rounds_mib_per_s"]
        )
    return make_report(
        "fleet",
        {
            "sizes": list(params.sizes),
            "transport": "mtls" if params.tls else "tcp",
            "downloads": params.downloads,
            "package_bytes": params.package_bytes,
            "idle_s": params.idle_s,
            "connect_concurrency": params.connect_concurrency,
            "connect_timeout_s": params.connect_timeout_s,
            "single_rounds": params.single_rounds,
            "concurrent_rounds": params.concurrent_rounds,
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
        n = f"{f['vehicles']:,} ({f['transport']})"
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
                    f"{label} x{part['concurrency']} (median of {part['rounds']})",
                    f"{fmt(part['mib_per_s'], ' MiB/s')}, p50/p99 {part['p50_s']}/"
                    f"{part['p99_s']} s, {fmt(part['cpu_ms_per_mib'], ' ms CPU/MiB', 2)}",
                )
            )
    for kind in ("single", "concurrent"):
        rows.append(
            (
                f"downloader / plain, {kind} (medians; paired)",
                f"{fmt(q[f'downloader_vs_plain_{kind}'], '', 2)}; "
                f"{fmt(q[f'downloader_vs_plain_{kind}_paired'], '', 2)}",
            )
        )
    return rows
