"""The idle-fleet phase of `v2c bench fleet`: N vehicles connected and idle in
this one process, over plain TCP or mutual TLS, and what each one costs.

Plain TCP: `stack_fleet(..., tls=False)` against a private mosquitto
(`bench_broker`). mTLS: the stack's vehicle listener as `v2c stack up`
configures it (fleet CA, `require_certificate`, CN = user name = client id),
on a private mosquitto, and one client certificate per vehicle (CN = VIN)
issued by the fleet CA of a PKI directory kept between runs (issuing 10,000
EC certificates takes a minute and a half here; `ensure_vehicle_certs`
reuses those still valid). No registry, no ACL: neither is per-connection
memory on the vehicles' side.

Also the process facts the fleet and rollout benches share: resident
memory, the broker's ESTABLISHED sockets, the open-files limit.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from v2c.contract.keyset import TrustedKeySet
from v2c.infra.bench.common import JsonDict, bench_broker, per_second, process_cpu_s
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.fleet_provisioning import ensure_vehicle_certs, stack_fleet
from v2c.infra.local.mosquitto_config import BrokerTls, MosquittoConfig
from v2c.infra.pki.authority import CertPaths, PkiPaths, init_pki
from v2c.infra.settings import MqttSettings, StackSettings
from v2c.vehicle_sim.fleet.identity import fleet_members
from v2c.vehicle_sim.fleet.simulator import FleetSimulator, FleetVehicle
from v2c.vehicle_sim.mqtt_async import MqttTarget

MIB: Final = 1024 * 1024
LOOPBACK: Final = "127.0.0.1"
DEFAULT_PKI_DIR: Final = Path(tempfile.gettempdir()) / "v2c-bench-fleet-pki"


@dataclass(frozen=True)
class IdleParams:
    idle_s: float
    connect_concurrency: int
    connect_timeout_s: float
    tls: bool = False
    pki_dir: Path = DEFAULT_PKI_DIR


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


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def mib(value: int | None) -> float | None:
    return None if value is None else round(value / MIB, 1)


# -- the broker and the fleet ---------------------------------------------------
@contextmanager
def tls_broker(pki: PkiPaths) -> Iterator[MosquittoBroker]:
    """A private mosquitto with the stack's vehicle listener: mTLS, CN = client id."""
    with tempfile.TemporaryDirectory(prefix="v2c-bench-tls-") as folder:
        tls = BrokerTls(pki.ca_cert, pki.server.cert, pki.server.key, use_username_as_clientid=True)
        config = MosquittoConfig(
            data_dir=Path(folder),
            persistence=False,
            connection_messages=False,
            tls=tls,
            allow_anonymous=False,
        )
        with MosquittoBroker(config) as broker:
            yield broker


def vehicle_certs(size: int, pki_dir: Path) -> dict[str, CertPaths]:
    """Each of `size` vehicles' certificate (issued now if missing or stale)."""
    init_pki(pki_dir)
    certs, _issued = ensure_vehicle_certs(pki_dir, [m.vehicle_id for m in fleet_members(size)])
    return certs


def mtls_vehicles(size: int, port: int, certs: dict[str, CertPaths]) -> list[FleetVehicle]:
    """Where each vehicle connects, with its own certificate."""
    return [
        FleetVehicle(
            m,
            MqttTarget(
                LOOPBACK,
                port,
                ca_file=certs[m.vehicle_id].ca,
                cert_file=certs[m.vehicle_id].cert,
                key_file=certs[m.vehicle_id].key,
            ),
        )
        for m in fleet_members(size)
    ]


@contextmanager
def _broker(params: IdleParams) -> Iterator[MosquittoBroker]:
    if not params.tls:
        with bench_broker() as broker:
            yield broker
        return
    with tls_broker(init_pki(params.pki_dir)) as broker:
        yield broker


async def idle_fleet(size: int, params: IdleParams, trusted: TrustedKeySet) -> JsonDict:
    """One size: connect, measure memory and idle CPU, disconnect (a fresh broker)."""
    with _broker(params) as broker, tempfile.TemporaryDirectory(prefix="v2c-bfleet-") as base:
        certs: dict[str, CertPaths] = {}
        began = time.perf_counter()
        if params.tls:  # certificates first, outside the memory and connect figures
            certs = await asyncio.to_thread(vehicle_certs, size, params.pki_dir)
        certs_s = time.perf_counter() - began
        gc.collect()
        rss_before = rss_bytes()
        broker_rss_before = rss_bytes(broker.pid) if broker.pid else None
        if params.tls:
            fleet = FleetSimulator(
                mtls_vehicles(size, broker.port, certs),
                trusted,
                base_dir=Path(base),
                connect_concurrency=params.connect_concurrency,
            )
        else:
            settings = StackSettings(mqtt=MqttSettings(host=LOOPBACK, port=broker.port))
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
            cpu0, broker0, wall0 = self_cpu_s(), process_cpu_s(broker.pid), time.perf_counter()
            await asyncio.sleep(params.idle_s)
            wall = time.perf_counter() - wall0
            cpu, broker1 = self_cpu_s() - cpu0, process_cpu_s(broker.pid)
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
        "transport": "mtls" if params.tls else "tcp",
        "connected": connected,
        "broker_established": broker_side,
        "connected_after_idle": still,
        "all_connected": connected == size and not limit_hit,
        "limit": limit_hit or None,
        "cert_seconds": round(certs_s, 3),
        "boot_seconds": round(booted - began, 3),
        "connect_seconds": round(connected_at - booted, 3),
        "connects_per_s": per_second(connected, connected_at - booted),
        "rss_before_mib": mib(rss_before),
        "rss_after_mib": mib(rss_after),
        "kib_per_vehicle": round(grown / connected / 1024, 1) if grown and connected else None,
        "broker_kib_per_vehicle": (
            round(broker_grown / connected / 1024, 1) if broker_grown and connected else None
        ),
        "idle_seconds": round(wall, 2),
        # No idle phase (`idle_s` 0): no idle CPU, rather than a ratio of two instants.
        "idle_cpu_percent": round(cpu / wall * 100, 2) if params.idle_s > 0 else None,
        "broker_idle_cpu_percent": (
            round((broker1 - broker0) / wall * 100, 2)
            if broker0 is not None and broker1 is not None and params.idle_s > 0
            else None
        ),
        "errors": summary.errors,
    }
