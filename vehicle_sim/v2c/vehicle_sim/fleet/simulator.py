"""N simulated vehicles against a stack, in one process, on one event loop.

`FleetSimulator(settings, n, ...)` is the fleet of `v2c sim` and `v2c demo`:

1. identities: N VINs, models, regions and years, deterministic (`identity`);
2. certificates: one client certificate per vehicle when the stack's broker
   speaks mTLS, cached in the stack's PKI directory (`certs`), and each new
   vehicle admitted to the running broker's policy (`v2c.infra.local.broker_admin`);
3. vehicles: one `VehicleRuntime` per VIN, each in its own directory under
   `base_dir` (flash, agent state, downloads); a new flash is provisioned with
   `installed_version`, an existing one boots what it holds;
4. registry: every vehicle written to the cloud's vehicle registry with the
   version it actually runs, so campaigns can target it;
5. sessions: each vehicle connects its own MQTT session (QoS 2, persistent
   session), a bounded number at a time so a large fleet does not storm the
   broker.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import aiohttp

from v2c.contract.errors import ConfigurationError
from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.handlers.ota.fleet import FleetRegistry, Vehicle
from v2c.infra.local.broker_admin import register_in_stack
from v2c.vehicle_sim.fleet.certs import ensure_vehicle_certs
from v2c.vehicle_sim.fleet.identity import DEFAULT_MODELS, DEFAULT_PREFIX, fleet_members
from v2c.vehicle_sim.fleet.summary import FleetSummary
from v2c.vehicle_sim.mqtt_async import MqttTarget
from v2c.vehicle_sim.ota.fault_proxy import DownloadFaultProxy, has_download_faults
from v2c.vehicle_sim.ota.faults import FaultProfile
from v2c.vehicle_sim.ota.runtime import RuntimeConfig, VehicleRuntime, VehicleSpec
from v2c.vehicle_sim.ota.sim_time import SimTime

if TYPE_CHECKING:
    from v2c.infra.settings import StackSettings

logger = logging.getLogger(__name__)

TRUSTED_SINCE: Final = datetime(2020, 1, 1, tzinfo=UTC)
# asyncio's TLS transport reads into a 256 KiB buffer per connection: 250 of
# the ~360 KiB an mTLS vehicle costs (measured at 1,000). A TLS record is at
# most 16 KiB, so 32 KiB loses nothing but a few more read calls.
TLS_READ_BUFFER: Final = 32 * 1024


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


def stack_trusted_keys(settings: StackSettings) -> TrustedKeySet:
    """What the vehicles trust: the stack's campaign signing key (KMS), under
    the key id the OTA handlers sign with (its fingerprint, as they are
    configured by `v2c stack up`)."""
    from v2c.handlers.signing.kms import KmsSigner

    signer = KmsSigner(settings.aws.client("kms"), settings.resources.signing_key_alias)
    return TrustedKeySet([TrustedKey(signer.key_id, signer.public_key(), TRUSTED_SINCE)])


class FleetSimulator:
    """A fleet of simulated vehicles: `await start()`, watch `summary()`, `await stop()`."""

    def __init__(
        self,
        settings: StackSettings,
        n: int,
        *,
        models: Sequence[str] = DEFAULT_MODELS,
        regions: int | Sequence[str] = 3,
        faults: FaultProfile | None = None,
        time_scale: float = 0.01,
        base_dir: Path | None = None,
        installed_version: str = "1.0.0",
        hardware_id: str = "",
        trusted: TrustedKeySet | None = None,
        config: RuntimeConfig | None = None,
        vin_prefix: str = DEFAULT_PREFIX,
        connect_concurrency: int = 64,
        boot_concurrency: int = 256,
        tls: bool | None = None,
        pki_dir: Path | None = None,
        register: bool = True,
        tls_read_buffer_bytes: int | None = TLS_READ_BUFFER,
    ) -> None:
        self.settings = settings
        self.mqtt = settings.require_mqtt()
        self.members = fleet_members(n, models=models, regions=regions, prefix=vin_prefix)
        self.profile = faults or FaultProfile.builtin("none")
        self.sim = SimTime(time_scale)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="v2c-fleet-")
            base_dir = Path(self._tmp.name)
        self.base_dir = Path(base_dir)
        self.installed_version = installed_version
        self.hardware_id = hardware_id
        self._trusted = trusted
        self.config = config or RuntimeConfig()
        self.connect_concurrency = max(1, connect_concurrency)
        self.boot_concurrency = max(1, boot_concurrency)
        has_tls = self.mqtt.tls_port is not None and self.mqtt.ca_file is not None
        self.tls = has_tls if tls is None else tls
        self.pki_dir = pki_dir or (self.mqtt.ca_file.parent if self.mqtt.ca_file else None)
        self.register_vehicles = register
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
        self.runtimes: dict[str, VehicleRuntime] = {}
        self.proxy: DownloadFaultProxy | None = None
        self._http: aiohttp.ClientSession | None = None
        self._started_real = 0.0
        self._started_sim = 0.0
        self.certificates_issued = 0
        self.on_report: Callable[[VehicleRuntime], None] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self, *, connect: bool = True) -> None:
        """Build, boot, register and connect every vehicle."""
        self._started_real, self._started_sim = time.monotonic(), self.sim.now()
        trusted = self._trusted
        if trusted is None:
            trusted = await asyncio.to_thread(stack_trusted_keys, self.settings)
        targets = await asyncio.to_thread(self._targets)
        if self.tls and self.tls_read_buffer_bytes:
            shrink_tls_read_buffer(self.tls_read_buffer_bytes)
        self._http = aiohttp.ClientSession(
            auto_decompress=False, connector=aiohttp.TCPConnector(limit=256)
        )
        if any(has_download_faults(spec.faults) for spec in self.specs):
            self.proxy = DownloadFaultProxy(session=self._http)
            await self.proxy.start()
        for spec in self.specs:
            self.runtimes[spec.vehicle_id] = VehicleRuntime(
                self.base_dir / spec.vehicle_id,
                spec,
                trusted,
                sim=self.sim,
                mqtt=targets[spec.vehicle_id],
                http=self._http,
                fault_proxy=self.proxy,
                config=self.config,
                on_report=self._reported,
            )
        await self._bounded(self.boot_concurrency, [r.boot for r in self.runtimes.values()])
        if self.register_vehicles:
            await asyncio.to_thread(self.register)
        if connect:
            await self.connect()

    async def connect(self) -> None:
        await self._bounded(self.connect_concurrency, [r.connect for r in self.runtimes.values()])

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.runtimes.values()), return_exceptions=True)
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

    # -- the cloud side ------------------------------------------------------

    def register(self) -> int:
        """Write every vehicle to the registry with the version it runs."""
        aws, names = self.settings.aws, self.settings.resources
        registry = FleetRegistry(aws.client("dynamodb"), names.vehicle_registry_table)
        return registry.put(
            Vehicle(
                vehicle_id=m.vehicle_id,
                model=m.model,
                region=m.region,
                year=m.year,
                make=m.make,
                hardware_id=self.hardware_id,
                installed_version=self._installed(m.vehicle_id),
            )
            for m in self.members
        )

    def _installed(self, vehicle_id: str) -> str:
        runtime = self.runtimes.get(vehicle_id)
        return runtime.installed_version if runtime is not None else self.installed_version

    def _targets(self) -> dict[str, MqttTarget]:
        mqtt = self.mqtt
        if not self.tls:
            return {s.vehicle_id: MqttTarget(mqtt.host, mqtt.port) for s in self.specs}
        if mqtt.tls_port is None or mqtt.ca_file is None or self.pki_dir is None:
            raise ConfigurationError("the stack's broker has no TLS listener for vehicles")
        certs, self.certificates_issued = ensure_vehicle_certs(
            self.pki_dir, [s.vehicle_id for s in self.specs]
        )
        # The broker admits only registered vehicles: those `v2c stack up` found
        # in the PKI are; the rest are registered now (a no-op for the others).
        register_in_stack(self.settings, certs)
        return {
            vid: MqttTarget(
                mqtt.host, mqtt.tls_port, ca_file=mqtt.ca_file, cert_file=c.cert, key_file=c.key
            )
            for vid, c in certs.items()
        }

    # -- watching ------------------------------------------------------------

    def _reported(self, runtime: VehicleRuntime, _status: object) -> None:
        if self.on_report is not None:
            self.on_report(runtime)

    def summary(self) -> FleetSummary:
        runtimes = list(self.runtimes.values())
        return FleetSummary.of(
            (r.state for r in runtimes),
            connected=sum(1 for r in runtimes if r.session is not None and r.session.connected),
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
