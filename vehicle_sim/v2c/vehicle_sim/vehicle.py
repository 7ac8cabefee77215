"""One simulated vehicle: one MQTT 5 session carrying its telemetry and its OTA updates.

A real vehicle has one connection to the cloud, one identity (client id =
VIN = certificate CN) and one persistent session. So does this one:
`Vehicle` owns the `AsyncMqttSession` and hosts every use of it,

* `telemetry` (`TelemetryPublisher`): samples buffered on "flash" first,
  sent alone at QoS 1 or as ZSTD batch envelopes, deleted on PUBACK, with
  the PUBACK 0x10 / quota retry rules of `v2c.contract.puback` and topic
  aliases on the telemetry topics;
* `ota` (`VehicleRuntime`): the update agent's effects executed against the
  A/B flash and the downloader; its reports go out at QoS 2 on the same
  session, and `.../ota/available` and the cloud's signed commands
  (`.../commands/request`, QoS 1) are routed to it;
* `certificate` (`RenewalSchedule`, with mTLS only): the client certificate
  rotated before it expires, checked at each connect and then on one timer
  for the moment it becomes due; `.../certificate/issued` is routed to it,
  and it writes the new pair over the target's `cert_file`/`key_file`
  (where the fleet's provisioning put them), which every connect reads.

The fleet simulator, `v2c sim` and `v2c demo` drive vehicles only through
this class. Everything runs on one asyncio loop; nothing here is a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Final

import aiohttp

from v2c.contract.keyset import TrustedKeySet
from v2c.contract.topics import Domain, qos_for
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.backoff import BackoffPolicy
from v2c.vehicle_sim.identity.renewal import (
    CertificateRenewal,
    IdentityFiles,
    RenewalConfig,
    answer_subscription,
)
from v2c.vehicle_sim.identity.schedule import RenewalSchedule
from v2c.vehicle_sim.mqtt_async import AsyncMqttSession, MqttTarget
from v2c.vehicle_sim.ota.device.fault_proxy import DownloadFaultProxy
from v2c.vehicle_sim.ota.device.runtime import OTA_QOS, VehicleRuntime
from v2c.vehicle_sim.ota.device.sim_time import SimTime
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig, VehicleSpec
from v2c.vehicle_sim.telemetry_publisher import (
    TELEMETRY_KINDS,
    PublisherConfig,
    TelemetryPublisher,
    VehicleIdentity,
)

TELEMETRY_BUFFER: Final = "telemetry.db"
# A fleet's telemetry survives a crash of the simulator, not a power loss of
# the host: fsync per sample would cost more than the whole simulation.
FLEET_TELEMETRY: Final = PublisherConfig(durable=False)


class Vehicle:
    """`await start()` (boot, then connect), use `telemetry` and `ota`, `await stop()`."""

    def __init__(
        self,
        directory: Path,
        spec: VehicleSpec,
        target: MqttTarget,
        trusted: TrustedKeySet,
        *,
        sim: SimTime | None = None,
        telemetry: PublisherConfig = FLEET_TELEMETRY,
        telemetry_buffer: Path | None = None,
        config: RuntimeConfig | None = None,
        http: aiohttp.ClientSession | None = None,
        fault_proxy: DownloadFaultProxy | None = None,
        on_report: Callable[[VehicleRuntime, OTAStatus], None] | None = None,
        backoff: BackoffPolicy | None = None,
        reconnect_delay_s: float = 2.0,
        renewal: RenewalConfig | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.spec = spec
        sim = sim or SimTime(1.0)
        # A vehicle with a client certificate keeps it valid (plain TCP: none to renew).
        files = (
            IdentityFiles(target.cert_file, target.key_file)
            if target.cert_file is not None and target.key_file is not None
            else None
        )
        answers = [answer_subscription(spec.vehicle_id, spec.region)] if files else []
        identity = VehicleIdentity(
            spec.vehicle_id,
            spec.region,
            vehicle_model=spec.model,
            firmware_version=spec.installed_version,
        )
        self.session = AsyncMqttSession(
            spec.vehicle_id,
            target,
            subscriptions=[
                (spec.topic("available"), OTA_QOS),
                (spec.command_topic(), qos_for(Domain.COMMANDS)),
                *answers,
            ],
            on_message=self._route,
            backoff=backoff,
            reconnect_delay_s=reconnect_delay_s,
            aliased_topics=[identity.telemetry_topic(kind) for kind in TELEMETRY_KINDS],
        )
        self.telemetry = TelemetryPublisher(
            identity,
            self.session,
            telemetry_buffer or self.directory / TELEMETRY_BUFFER,
            telemetry,
        )
        self._on_report = on_report
        self.ota = VehicleRuntime(
            self.directory,
            spec,
            trusted,
            sim=sim,
            session=self.session,
            http=http,
            fault_proxy=fault_proxy,
            config=config,
            on_report=self._reported,
        )
        self._connecting: asyncio.Task[None] | None = None
        self.certificate: RenewalSchedule | None = None
        if files is not None:
            renewing = CertificateRenewal(
                spec.vehicle_id, spec.region, self.session, files, config=renewal, clock=sim.now
            )
            self.certificate = RenewalSchedule(renewing, self.session, sim)

    @property
    def vehicle_id(self) -> str:
        return self.spec.vehicle_id

    @property
    def connected(self) -> bool:
        return self.session.connected

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        await self.boot()
        await self.connect()

    async def boot(self) -> None:
        """Power on: the flash decides what runs, the agent resumes from disk."""
        await self.ota.boot()
        self._firmware_changed()

    async def connect(self) -> None:
        """Connect (retrying with backoff until it works or the caller cancels),
        then see whether the certificate is due (rotated in the background)."""
        await self.session.connect()
        if self.certificate is not None:
            self.certificate.check()

    def connect_in_background(self) -> asyncio.Task[None]:
        """Start connecting and return at once: a vehicle with no network
        still samples, buffers and installs; it connects when it can."""
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(
                self.connect(), name=f"{self.vehicle_id}-connect"
            )
        return self._connecting

    async def stop(self) -> None:
        """A process exit: the broker keeps the session, the disk keeps the rest."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self.certificate is not None:
            self.certificate.stop()
        await self.ota.stop()
        await self.telemetry.close()
        await self.session.close()

    # -- between the two halves ------------------------------------------------

    async def _route(self, topic: str, payload: bytes) -> None:
        if self.certificate is not None and await self.certificate.handle_message(topic, payload):
            return
        await self.ota.handle_message(topic, payload)

    def _reported(self, runtime: VehicleRuntime, status: OTAStatus) -> None:
        self._firmware_changed()
        if self._on_report is not None:
            self._on_report(runtime, status)

    def _firmware_changed(self) -> None:
        """Telemetry names the firmware the vehicle runs, which an update changes."""
        running = self.ota.installed_version
        if running and running != self.telemetry.identity.firmware_version:
            self.telemetry.identity = replace(self.telemetry.identity, firmware_version=running)
