"""N simulated vehicles, in one process, on one event loop.

`FleetSimulator(vehicles, trusted, ...)` is the fleet of `v2c sim` and `v2c demo`.
What a stack must provide comes in ready-made (`v2c.infra.local.fleet_provisioning`
builds it): the vehicles, each with its broker target and, for mTLS, its
own certificate; the key set they trust; and a `registrar` that writes the
booted vehicles to the cloud's registry. The simulator then

1. builds one `Vehicle` per member, each in its own directory under
   `base_dir` (flash, agent state, downloads, telemetry buffer); a new flash
   is provisioned with `installed_version`, an existing one boots what it holds;
2. boots them all, then hands the versions they actually run to the registrar,
   so campaigns can target them;
3. connects each vehicle's one MQTT session (QoS 2 for OTA, QoS 1 for
   telemetry, persistent session), a bounded number at a time so a large
   fleet does not storm the broker.

Nothing runs in a thread per vehicle: the MQTT sessions are gmqtt protocol
objects, the downloads share one aiohttp session, the installer's disk work
uses the loop's small worker pool and its simulated waits are loop timers.
Faults come from a `FaultProfile` (deterministic per VIN); download faults
go through one shared `DownloadFaultProxy`.

`summary()` counts vehicles by the (state, reason) of their last report at
any moment; `stop()` disconnects everyone (the broker keeps their sessions)
and closes the shared clients.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from v2c.contract.keyset import TrustedKeySet
from v2c.vehicle_sim.fleet.identity import FleetMember
from v2c.vehicle_sim.fleet.summary import FleetSummary
from v2c.vehicle_sim.mqtt_async import MqttTarget
from v2c.vehicle_sim.ota.device.fault_proxy import DownloadFaultProxy, has_download_faults
from v2c.vehicle_sim.ota.device.faults import FaultProfile
from v2c.vehicle_sim.ota.device.runtime import VehicleRuntime
from v2c.vehicle_sim.ota.device.sim_time import SimTime
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig, VehicleSpec
from v2c.vehicle_sim.telemetry_publisher import PublisherConfig
from v2c.vehicle_sim.vehicle import FLEET_TELEMETRY, Vehicle

logger = logging.getLogger(__name__)

# asyncio's TLS transport allocates a read buffer per connection (256 KiB by
# default). Once a session is up it reads through one buffer per thread
# instead (`tls_memory.share_read_buffer`), so this size only bounds the
# connections still in their handshake; a TLS record is at most 16 KiB, so
# 32 KiB loses nothing but a few more read calls.
TLS_READ_BUFFER: Final = 32 * 1024


@dataclass(frozen=True, slots=True)
class FleetVehicle:
    """One member of the fleet and where it connects (with its certificate for mTLS)."""

    member: FleetMember
    target: MqttTarget


# Called (in a worker thread) with every member and the version it runs, after boot.
Registrar = Callable[[Sequence[tuple[FleetMember, str]]], object]


def shrink_tls_read_buffer(size: int) -> None:
    """Lower asyncio's per-connection TLS read buffer, process-wide (never raise it).

    `asyncio.sslproto.SSLProtocol.max_size` is a class attribute, read when
    a TLS connection is made; it is not public API, so it is changed only if
    it is there and larger. It affects every TLS connection the process
    opens afterwards, which in a fleet simulator are the vehicles'.
    """
    from asyncio import sslproto

    current = getattr(sslproto.SSLProtocol, "max_size", None)
    if isinstance(current, int) and current > size:
        sslproto.SSLProtocol.max_size = size


class FleetSimulator:
    """A fleet of simulated vehicles: `await start()`, watch `summary()`, `await stop()`."""

    def __init__(
        self,
        vehicles: Sequence[FleetVehicle],
        trusted: TrustedKeySet,
        *,
        faults: FaultProfile | None = None,
        time_scale: float = 0.01,
        base_dir: Path | None = None,
        installed_version: str = "1.0.0",
        hardware_id: str = "",
        config: RuntimeConfig | None = None,
        telemetry: PublisherConfig = FLEET_TELEMETRY,
        registrar: Registrar | None = None,
        connect_concurrency: int = 64,
        boot_concurrency: int = 256,
        tls_read_buffer_bytes: int | None = TLS_READ_BUFFER,
    ) -> None:
        self.members = [v.member for v in vehicles]
        self._targets = {v.member.vehicle_id: v.target for v in vehicles}
        self.trusted = trusted
        self.profile = faults or FaultProfile.builtin("none")
        self.sim = SimTime(time_scale)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="v2c-fleet-")
            base_dir = Path(self._tmp.name)
        self.base_dir = Path(base_dir)
        self.installed_version = installed_version
        self.hardware_id = hardware_id
        self.config = config or RuntimeConfig()
        self.telemetry = telemetry
        self.registrar = registrar
        self.connect_concurrency = max(1, connect_concurrency)
        self.boot_concurrency = max(1, boot_concurrency)
        self.tls = any(target.uses_tls for target in self._targets.values())
        self.tls_read_buffer_bytes = tls_read_buffer_bytes
        self.specs = [
            VehicleSpec(
                vehicle_id=m.vehicle_id,
                model=m.model,
                region=m.region,
                installed_version=installed_version,
                hardware_id=hardware_id,
                faults=self.profile.for_vehicle(m.vehicle_id),
            )
            for m in self.members
        ]
        tally = self.profile.tally(s.vehicle_id for s in self.specs)
        self.fault_tally = {mode.value: n for mode, n in sorted(tally.items())}
        self.vehicles: dict[str, Vehicle] = {}
        self.proxy: DownloadFaultProxy | None = None
        self._http: aiohttp.ClientSession | None = None
        self._started_real = 0.0
        self._started_sim = 0.0
        self.on_report: Callable[[VehicleRuntime], None] | None = None

    @property
    def runtimes(self) -> dict[str, VehicleRuntime]:
        """Each vehicle's OTA half, by vehicle id."""
        return {vid: vehicle.ota for vid, vehicle in self.vehicles.items()}

    # -- lifecycle -----------------------------------------------------------

    async def start(self, *, connect: bool = True) -> None:
        """Build, boot, register and connect every vehicle."""
        self._started_real, self._started_sim = time.monotonic(), self.sim.now()
        if self.tls and self.tls_read_buffer_bytes:
            shrink_tls_read_buffer(self.tls_read_buffer_bytes)
        self._http = aiohttp.ClientSession(
            auto_decompress=False, connector=aiohttp.TCPConnector(limit=256)
        )
        if any(has_download_faults(spec.faults) for spec in self.specs):
            self.proxy = DownloadFaultProxy(session=self._http)
            await self.proxy.start()
        for spec in self.specs:
            self.vehicles[spec.vehicle_id] = Vehicle(
                self.base_dir / spec.vehicle_id,
                spec,
                self._targets[spec.vehicle_id],
                self.trusted,
                sim=self.sim,
                telemetry=self.telemetry,
                config=self.config,
                http=self._http,
                fault_proxy=self.proxy,
                on_report=self._reported,
            )
        await self._bounded(self.boot_concurrency, [v.boot for v in self.vehicles.values()])
        if self.registrar is not None:
            await asyncio.to_thread(self.registrar, self.installed())
        if connect:
            await self.connect()

    async def connect(self) -> None:
        await self._bounded(self.connect_concurrency, [v.connect for v in self.vehicles.values()])

    async def stop(self) -> None:
        await asyncio.gather(*(v.stop() for v in self.vehicles.values()), return_exceptions=True)
        if self.proxy is not None:
            await self.proxy.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def cleanup(self) -> None:
        """Remove a temporary base directory (when none was given)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def run(
        self,
        *,
        duration_s: float | None = None,
        until: Callable[[FleetSummary], bool] | None = None,
        every_s: float = 0.5,
        on_progress: Callable[[FleetSummary], None] | None = None,
    ) -> FleetSummary:
        """Wait (real seconds) until `duration_s` passed or `until(summary)` holds."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while True:
            summary = self.summary()
            if on_progress is not None:
                on_progress(summary)
            if until is not None and until(summary):
                return summary
            if deadline is not None and time.monotonic() >= deadline:
                return summary
            await asyncio.sleep(every_s)

    def installed(self) -> list[tuple[FleetMember, str]]:
        """Every member with the version it runs (the configured one before boot)."""
        return [(m, self._installed(m.vehicle_id)) for m in self.members]

    def _installed(self, vehicle_id: str) -> str:
        vehicle = self.vehicles.get(vehicle_id)
        return vehicle.ota.installed_version if vehicle is not None else self.installed_version

    # -- watching ------------------------------------------------------------

    def _reported(self, runtime: VehicleRuntime, _status: object) -> None:
        if self.on_report is not None:
            self.on_report(runtime)

    def summary(self) -> FleetSummary:
        vehicles = list(self.vehicles.values())
        runtimes = [v.ota for v in vehicles]
        return FleetSummary.of(
            (r.state for r in runtimes),
            connected=sum(1 for v in vehicles if v.connected),
            reports=sum(r.report_count for r in runtimes),
            delivered=sum(r.delivered for r in runtimes),
            notifications=sum(r.notifications for r in runtimes),
            power_cuts=sum(r.power_cuts for r in runtimes),
            errors=sum(r.errors for r in runtimes),
            real_seconds=time.monotonic() - self._started_real if self._started_real else 0.0,
            simulated_seconds=self.sim.now() - self._started_sim if self._started_sim else 0.0,
            faults=self.fault_tally,
        )

    @staticmethod
    async def _bounded(limit: int, starts: list[Callable[[], Awaitable[None]]]) -> None:
        gate = asyncio.Semaphore(limit)

        async def one(start: Callable[[], Awaitable[None]]) -> None:
            async with gate:
                await start()

        await asyncio.gather(*(one(s) for s in starts))
