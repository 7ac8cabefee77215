"""The rig of `test_fleet_strategies.py`: one stack for the module, a steerable cloud clock.

* `SteerableClock`: the OTA services' clock, real time plus an offset the test
  sets. The scheduled start and the maintenance window are decided on this
  clock (`campaign_run.dispatch_open`), so a test moves it to before the
  start, outside the window, into the next day's window, instead of sleeping.
  It follows real time between moves, so timestamps taken on it still order
  the events of one run; and a test ends its run at offset 0, where every
  timestamp the services take (some on their own `time.time`, bound when they
  were built: the update records' completion times) is on one clock.
* `Rig`: the broker, moto, the OTA services (the test's, for the fleet
  manager's commands and the monitor's passes; and the gateway's, which
  apply the vehicles' reports and dispatch the next vehicles), both on the
  one clock, the gateway, the vehicles' event loop, and a 2.0.0 package.
* `provision`/`running_fleet`: a small fleet of its own per test (its own VIN
  prefix, targeted by VIN), registered first, so a test can read a
  campaign's plan before it decides which vehicle a fault hits.
* `open_rig`: the whole rig over a fresh moto state and a broker of its own
  (a module fixture's body).
* `Outage`: one vehicle switched off and out of coverage (no session,
  nothing running) until the test switches it on again; the broker keeps
  what the cloud sends it meanwhile (its persistent session).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fleet_support import (
    LoopThread,
    cloud_mismatches,
    fleet_progress,
    loop_thread,
    ota_cloud,
    patient_rules,
    upload_firmware,
    wait_progressing,
)
from gateway_support import running_gateway

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.runtime import Gateway
from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.config import SERVICES, OtaServices
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.infra.aws.resources import ensure_resources
from v2c.infra.local.broker import MosquittoBroker, MosquittoConfig
from v2c.infra.local.fleet_provisioning import (
    fleet_vehicles,
    registry_writer,
    stack_trusted_keys,
)
from v2c.infra.local.moto_server import reset
from v2c.infra.local.wiring import local_ota_services
from v2c.infra.names import ResourceNames
from v2c.infra.settings import AwsSettings, MqttSettings, StackSettings
from v2c.vehicle_sim.fleet.identity import fleet_members
from v2c.vehicle_sim.fleet.simulator import FleetSimulator, FleetVehicle
from v2c.vehicle_sim.ota.agent.checks import AgentPolicy
from v2c.vehicle_sim.ota.device.faults import FaultProfile
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig

TIME_SCALE = 0.002  # a 620 s installation in 1.2 s
INSTALLED = "1.0.0"
TARGET = "2.0.0"


class SteerableClock:
    """Real time plus `offset_s`: the services' `deps.clock`."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def now(self) -> datetime:
        return datetime.fromtimestamp(self(), tz=UTC)

    def shift(self, offset_s: float) -> None:
        """Read `offset_s` seconds from real time from now on."""
        self.offset_s = offset_s


def clocked(services: OtaServices, clock: SteerableClock) -> OtaServices:
    """`services` reading `clock` wherever they read `deps.clock` (the
    campaign service, the dispatcher, the status service's reactions)."""
    services.deps.clock = clock
    return services


@dataclass
class Rig:
    stack: StackSettings
    cloud: OtaServices
    clock: SteerableClock
    loop: LoopThread
    base_dir: Path
    firmware_id: str = ""
    gateway: Gateway | None = None

    def upload(self) -> None:
        self.firmware_id = upload_firmware(self.cloud, TARGET, image_bytes=32 * 1024)

    def create(
        self, vehicles: list[str], created_by: str = "fleet-manager", **spec: Any
    ) -> Campaign:
        body = {
            "name": f"{spec.get('deployment_strategy', 'staged')} over the simulated fleet",
            "firmware_id": self.firmware_id,
            "target_devices": vehicles,
            "max_concurrent_updates": len(vehicles),
            "batch_size": len(vehicles),
            **spec,
        }
        return self.cloud.campaigns.create(body, created_by=created_by).campaign

    def records(self, campaign_id: str) -> dict[str, VehicleUpdate]:
        """Every per-vehicle update record of the campaign: who was notified, when."""
        return {u.vehicle_id: u for u in self.cloud.deps.updates.for_campaign(campaign_id)}

    def plan(self, campaign: Campaign) -> list[list[str]]:
        """The campaign's waves as planned: the vehicle ids of each, in order."""
        order = [
            t.vehicle_id
            for t in self.cloud.deps.plans.read(campaign.campaign_id, 0, campaign.target_count)
        ]
        starts = [0, *(w.end for w in campaign.waves[:-1])]
        return [order[s : w.end] for s, w in zip(starts, campaign.waves, strict=True)]

    def monitor_pass(self, campaign_id: str) -> int:
        """One periodic monitor pass (what EventBridge runs every minute); how
        many of the campaign's vehicles have been notified after it. Counted
        on the campaign's own records, not the pass's total over all campaigns,
        so one test's leftovers cannot change another's verdict."""
        self.cloud.campaigns.monitor()
        return len(self.records(campaign_id))

    def status(self, campaign_id: str) -> CampaignStatus:
        return self.cloud.campaigns.get(campaign_id).status

    def wait_for(
        self, fleet: FleetSimulator, campaign_id: str, done: Callable[[], bool], what: str
    ) -> None:
        """Wait while the vehicles report and the cloud counts, until `done()`."""
        wait_progressing(
            done,
            lambda: (
                fleet_progress(fleet, self.loop),
                self.cloud.campaigns.get(campaign_id).counters,
            ),
            what=what,
        )

    def wait_status(self, fleet: FleetSimulator, campaign_id: str, status: CampaignStatus) -> None:
        self.wait_for(
            fleet, campaign_id, lambda: self.status(campaign_id) is status, f"{status.value}"
        )

    def settle(self, fleet: FleetSimulator, campaign: Campaign) -> None:
        """Wait until every record agrees with what its vehicle reported last
        (updates in flight finish after a pause; the last report lands after
        the campaign completed)."""
        problems: list[str] = []

        def agreed() -> bool:
            update_id = campaign.release.update_id
            problems[:] = cloud_mismatches(self.cloud, fleet, self.loop, update_id)
            return not problems

        self.wait_for(fleet, campaign.campaign_id, agreed, "records matching the vehicles")

    def status_handling(self) -> tuple[int, int, int]:
        """The gateway's status reports so far: (received, handled, dead-lettered).
        Received and handled equal, and received grown by what the vehicles
        delivered, means the cloud has applied (or ignored) every report."""
        assert self.gateway is not None
        metrics = self.gateway.metrics

        def total(counter: Any) -> int:
            return int(
                sum(
                    sample.value
                    for family in counter.collect()
                    for sample in family.samples
                    if sample.name.endswith("_total") and sample.labels["rule"] == "ota_status"
                )
            )

        return total(metrics.received), total(metrics.handled), total(metrics.failed)

    def notifications(self, fleet: FleetSimulator) -> dict[str, int]:
        """How many update notifications each vehicle received."""
        counts: dict[str, int] = self.loop.call(
            lambda: {vid: r.notifications for vid, r in fleet.runtimes.items()}
        )
        return counts

    def provision(self, prefix: str, n: int) -> list[FleetVehicle]:
        """`n` Accords on 1.0.0, registered in the stack (not running yet)."""
        members = fleet_members(n, models=("Accord",), regions=3, prefix=prefix)
        vehicles, _ = fleet_vehicles(self.stack, members, installed_version=INSTALLED)
        return vehicles

    @contextmanager
    def running_fleet(
        self,
        vehicles: list[FleetVehicle],
        faults: FaultProfile | None = None,
        *,
        keep_reports: bool = False,
    ) -> Iterator[FleetSimulator]:
        """The vehicles booted and connected, stopped afterwards; with
        `keep_reports`, each vehicle keeps every report it made (`reports`)."""
        prefix = vehicles[0].member.vehicle_id[4:11]
        fleet = FleetSimulator(
            vehicles,
            stack_trusted_keys(self.stack),
            faults=faults,
            time_scale=TIME_SCALE,
            base_dir=self.base_dir / prefix,
            installed_version=INSTALLED,
            # Progress at 0 and 100 % only: fewer reports through one moto.
            config=RuntimeConfig(
                policy=AgentPolicy(progress_step_percent=100), keep_reports=keep_reports
            ),
            registrar=registry_writer(self.stack, registered_as=INSTALLED),
        )
        self.loop.run(fleet.start(), timeout=180)
        try:
            assert self.loop.call(lambda: fleet.summary().connected) == len(vehicles)
            yield fleet
        finally:
            self.loop.run(fleet.stop(), timeout=30)


@contextmanager
def open_rig(moto_server: str, base: Path) -> Iterator[Rig]:
    """A fresh moto state, a broker, the OTA services and the gateway's, on one
    `SteerableClock`, the gateway with the production rules, and 2.0.0 uploaded."""
    reset(moto_server)
    aws, names = AwsSettings(endpoint_url=moto_server), ResourceNames()
    ensure_resources(aws, names)
    clock = SteerableClock()
    with (
        MosquittoBroker(MosquittoConfig(data_dir=base / "broker")) as broker,
        pytest.MonkeyPatch.context() as env,
    ):
        stack = StackSettings(
            mqtt=MqttSettings(host=broker.host, port=broker.port), aws=aws, resources=names
        )
        with ota_cloud(stack, env) as cloud, loop_thread() as loop:
            clocked(cloud, clock)
            # The gateway's handlers (the vehicles' reports) on the same clock.
            SERVICES.build_with(lambda: clocked(local_ota_services(), clock))
            endpoint = MqttEndpoint(broker.host, broker.port)
            with running_gateway(endpoint, patient_rules(), workers=4) as gateway:
                assert SERVICES.get().deps.clock is clock  # one clock for both
                built = Rig(stack, cloud, clock, loop, base, gateway=gateway)
                built.upload()
                yield built


class Outage:
    """One vehicle switched off where it has no coverage, then on again.

    `begin()` closes its MQTT connection (the broker keeps its persistent
    session: what the cloud sends meanwhile waits there) and stops its OTA
    runtime as a power-off does (what is on disk survives); `end()` boots it
    from disk and reconnects it (`AsyncMqttSession.reconnect`, the same
    client id, clean start false), so it gets what the broker kept.
    """

    def __init__(self, loop: LoopThread, fleet: FleetSimulator, vehicle_id: str) -> None:
        self._loop = loop
        self._vehicle = fleet.vehicles[vehicle_id]
        self._off = threading.Event()
        self._on: asyncio.Event | None = None
        self._back: Future[None] | None = None

    def begin(self, timeout_s: float = 60.0) -> None:
        vehicle = self._vehicle

        async def switched_off() -> None:
            await vehicle.ota.stop()
            self._on = asyncio.Event()
            self._off.set()
            await self._on.wait()
            await vehicle.ota.boot()

        self._back = asyncio.run_coroutine_threadsafe(
            vehicle.session.reconnect(switched_off), self._loop.loop
        )
        if not self._off.wait(timeout_s):
            raise AssertionError(f"{vehicle.vehicle_id} did not switch off")
        assert not vehicle.connected

    def end(self, timeout_s: float = 120.0) -> None:
        assert self._back is not None, "not switched off"
        assert self._on is not None, "not switched off"
        self._loop.loop.call_soon_threadsafe(self._on.set)
        self._back.result(timeout_s)
        assert self._vehicle.connected


def ids(vehicles: list[FleetVehicle]) -> list[str]:
    return [v.member.vehicle_id for v in vehicles]


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
