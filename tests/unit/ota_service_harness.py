"""The campaign, status and device services over the in-memory stores.

One `Ota` is a whole cloud side with a fake clock: no moto, no network, so a
scenario (dispatch a fleet, pass a gate, roll back) runs in milliseconds.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any

from v2c.handlers.ota.campaigns.deps import CampaignConfig, CampaignServiceDeps
from v2c.handlers.ota.campaigns.service import CampaignService
from v2c.handlers.ota.devices import DeviceService
from v2c.handlers.ota.events import RecordingEventPublisher
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.in_memory import InMemoryCampaignStore, InMemoryUpdateStore
from v2c.handlers.ota.in_memory_ports import (
    InMemoryFleet,
    InMemoryPackages,
    InMemoryPlanStore,
    InMemoryRollbackLog,
    RecordingAlerts,
    RecordingCommands,
    RecordingNotifier,
)
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.status import StatusReport, StatusService
from v2c.handlers.signing.software import SoftwareSigner
from v2c.v1.ota_pb2 import OTAStatus

MODEL = "Accord"
REGIONS = ("us-east", "eu-west", "ap-south")
S = OTAStatus.State
TO_COMPLETION = (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING, S.REBOOTING, S.VERIFYING)
_SIGNER = SoftwareSigner.generate(key_id="test-key")  # one key: generating is the slow part


def vin(number: int) -> str:
    return f"VIN-1HGBH41JXMN{number:06d}"


def fleet(n: int, *, version: str = "1.0.0", start: int = 0) -> list[Vehicle]:
    return [
        Vehicle(vin(i), MODEL, REGIONS[i % len(REGIONS)], year=2024, installed_version=version)
        for i in range(start, start + n)
    ]


@dataclass
class FakeClock:
    now: float = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Ota:
    config: CampaignConfig = field(default_factory=CampaignConfig)
    clock: FakeClock = field(default_factory=FakeClock)
    campaign_store: InMemoryCampaignStore = field(default_factory=InMemoryCampaignStore)
    update_store: InMemoryUpdateStore = field(default_factory=InMemoryUpdateStore)
    plans: InMemoryPlanStore = field(default_factory=InMemoryPlanStore)
    fleet: InMemoryFleet = field(default_factory=InMemoryFleet)
    packages: InMemoryPackages = field(default_factory=InMemoryPackages)
    notifier: RecordingNotifier = field(default_factory=RecordingNotifier)
    events: RecordingEventPublisher = field(default_factory=RecordingEventPublisher)
    alerts: RecordingAlerts = field(default_factory=RecordingAlerts)
    rollback_log: InMemoryRollbackLog = field(default_factory=InMemoryRollbackLog)
    commands: RecordingCommands = field(default_factory=RecordingCommands)
    _sequences: dict[tuple[str, str], itertools.count[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.deps = CampaignServiceDeps(
            campaigns=self.campaign_store,
            updates=self.update_store,
            plans=self.plans,
            fleet=self.fleet,
            packages=self.packages,
            signer=_SIGNER,
            notifier=self.notifier,
            events=self.events,
            alerts=self.alerts,
            rollbacks=self.rollback_log,
            commands=self.commands,
            clock=self.clock,
            config=self.config,
        )
        self.campaigns = CampaignService(self.deps)
        self.status = StatusService(self.deps, self.campaigns, sleep=lambda _s: None)
        self.devices = DeviceService(self.deps, self.campaigns)

    # -- setting the scene ------------------------------------------------------

    def package(self, version: str = "2.0.0") -> Package:
        firmware_id = hashlib.sha256(f"fw:{version}:{MODEL}".encode()).hexdigest()[:32]
        return self.packages.add(
            Package(firmware_id, "fw", version, MODEL, 1024, "0" * 64, available=True)
        )

    def campaign(self, n: int, **spec: Any) -> str:
        """Register `n` vehicles on 1.0.0 and create a campaign for 2.0.0 over them."""
        self.fleet.put(fleet(n))
        package = self.package("2.0.0")
        body = {"name": "spring", "firmware_id": package.firmware_id, "target_filter": "year > 0"}
        return self.campaigns.create({**body, **spec}).campaign.campaign_id

    # -- the vehicle's side --------------------------------------------------------

    def notified(self) -> list[str]:
        return self.notifier.vehicles()

    def event_types(self) -> list[str]:
        return [kind for kind, _ in self.events.events]

    def report(
        self, vehicle_id: str, update_id: str, state: int, *, installed: str = "", reason: int = 0
    ) -> StatusReport:
        sequence = self._sequences.setdefault((vehicle_id, update_id), itertools.count(1))
        status = OTAStatus(
            vehicle_id=vehicle_id,
            update_id=update_id,
            state=state,  # type: ignore[arg-type]
            sequence=next(sequence),
            installed_version=installed,
            reason=reason,  # type: ignore[arg-type]
        )
        return self.status.apply(status)

    def finish(self, vehicle_id: str, update_id: str, *, ok: bool, to: str = "2.0.0") -> None:
        """Play one vehicle's whole update: completed on `to`, or rolled back to 1.0.0."""
        for state in TO_COMPLETION:
            self.report(vehicle_id, update_id, state)
        final = S.COMPLETED if ok else S.ROLLED_BACK
        self.report(vehicle_id, update_id, final, installed=to if ok else "1.0.0")
