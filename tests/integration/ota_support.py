"""Builders for OTA service tests over a real moto server.

`ota_services(aws_stack)` wires the campaign and status services to moto's
DynamoDB and S3 exactly as production does; what differs is injected at the
edges: a software signer, an `S3Packages` catalog (real S3 objects), and a
sink. `RecordingSink` captures notifications for service-level tests; the
end-to-end tests pass the MQTT sink over a real broker instead.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from v2c.contract.errors import NotFound
from v2c.handlers.ota.campaigns.deps import CampaignConfig, CampaignServiceDeps
from v2c.handlers.ota.campaigns.plan_store import PlanStore
from v2c.handlers.ota.campaigns.repository import CampaignRepository
from v2c.handlers.ota.campaigns.rollback_log import RollbackLog
from v2c.handlers.ota.campaigns.service import CampaignService
from v2c.handlers.ota.fleet import FleetRegistry, Vehicle
from v2c.handlers.ota.notifier import NotificationSink, Notifier, SinkMessage
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.status import StatusService
from v2c.handlers.ota.updates.repository import UpdateRepository
from v2c.handlers.ota.vehicle_commands import VehicleCommands
from v2c.handlers.signing.base import Signer
from v2c.handlers.signing.software import SoftwareSigner
from v2c.v1.ota_pb2 import OTAStatus, OTAUpdateAvailable

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

MODEL = "Accord"
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")


def vin(number: int) -> str:
    return f"VIN-1HGBH41JXMN{number:06d}"


def fleet(n: int, *, model: str = MODEL, version: str = "1.0.0", start: int = 0) -> list[Vehicle]:
    return [
        Vehicle(
            vehicle_id=vin(start + i),
            model=model,
            region=REGIONS[i % len(REGIONS)],
            year=2023 + i % 2,
            make="Honda",
            hardware_id="hw-a",
            installed_version=version,
        )
        for i in range(n)
    ]


class S3Packages:
    """A package catalog over real S3 objects (the firmware registry's role)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self.packages: dict[str, Package] = {}

    def add(
        self, version: str, payload: bytes, *, model: str = MODEL, upload: bool = True
    ) -> Package:
        firmware_id = hashlib.sha256(f"fw:{version}:{model}".encode()).hexdigest()[:32]
        package = Package(
            firmware_id=firmware_id,
            name="fw",
            version=version,
            device_model=model,
            size_bytes=len(payload),
            sha256_hex=hashlib.sha256(payload).hexdigest(),
            available=True,
            hardware_id="hw-a",
        )
        if upload:
            self._s3.put_object(Bucket=self._bucket, Key=f"firmware/{firmware_id}", Body=payload)
        self.packages[firmware_id] = package
        return package

    def package(self, firmware_id: str) -> Package:
        try:
            return self.packages[firmware_id]
        except KeyError:
            raise NotFound(f"firmware {firmware_id} not found") from None

    def find_version(self, device_model: str, version: str) -> Package | None:
        for p in self.packages.values():
            if p.device_model == device_model and p.version == version:
                return p
        return None

    def package_exists(self, firmware_id: str) -> bool:
        try:
            self._s3.head_object(Bucket=self._bucket, Key=f"firmware/{firmware_id}")
        except Exception:
            return False
        return True

    def download_url(self, firmware_id: str, expires_s: int = 3600) -> str:
        return str(
            self._s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket, "Key": f"firmware/{firmware_id}"},
                ExpiresIn=expires_s,
            )
        )


@dataclass
class RecordingSink:
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    fail: bool = False

    def send(
        self, topic: str, payload: bytes, *, correlation_id: str, context: dict[str, Any]
    ) -> bool:
        self.sent.append((topic, payload))
        return not self.fail

    def send_many(self, messages: Sequence[SinkMessage]) -> list[bool]:
        return [
            self.send(m.topic, m.payload, correlation_id=m.correlation_id, context=m.context)
            for m in messages
        ]

    def vehicles(self) -> list[str]:
        return [t.split("/")[3] for t, _ in self.sent]


@dataclass
class RecordingEvents:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.events.append((detail_type, detail))

    def types(self) -> list[str]:
        return [t for t, _ in self.events]


@dataclass
class RecordingAlerts:
    raised: list[tuple[str, str, str]] = field(default_factory=list)

    def alert(self, name: str, campaign_id: str, detail: str) -> None:
        self.raised.append((name, campaign_id, detail))

    def names(self) -> list[str]:
        return [n for n, _, _ in self.raised]


@dataclass
class Clock:
    now: float = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class OtaServices:
    deps: CampaignServiceDeps
    campaigns: CampaignService
    status: StatusService
    packages: S3Packages
    sink: Any
    events: RecordingEvents
    alerts: RecordingAlerts
    clock: Clock
    signer: Signer

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now, tz=UTC)

    def register(self, vehicles: list[Vehicle]) -> None:
        self.deps.fleet.put(vehicles)


def ota_services(
    stack: AwsStack,
    sink: NotificationSink | None = None,
    signer: Signer | None = None,
    config: CampaignConfig | None = None,
) -> OtaServices:
    aws, names = stack.aws, stack.names
    ddb, s3 = aws.client("dynamodb"), aws.client("s3")
    clock = Clock()
    packages = S3Packages(s3, names.firmware_bucket)
    sink = sink or RecordingSink()
    events, alerts = RecordingEvents(), RecordingAlerts()
    signer = signer or SoftwareSigner.generate(key_id="test-key")
    deps = CampaignServiceDeps(
        campaigns=CampaignRepository(ddb, names.campaigns_table),
        updates=UpdateRepository(ddb, names.vehicle_updates_table),
        plans=PlanStore(s3, names.firmware_bucket),
        fleet=FleetRegistry(ddb, names.vehicle_registry_table),
        packages=packages,
        signer=signer,
        notifier=Notifier(sink, packages, clock),
        events=events,
        alerts=alerts,
        rollbacks=RollbackLog(ddb, names.rollbacks_table),
        commands=VehicleCommands(sink, signer, clock),
        clock=clock,
        config=config or CampaignConfig(),
    )
    campaigns = CampaignService(deps)
    return OtaServices(
        deps,
        campaigns,
        StatusService(deps, campaigns, sleep=lambda _s: None),
        packages,
        sink,
        events,
        alerts,
        clock,
        signer,
    )


class VehicleReporter:
    """Plays the vehicle side of the status protocol, numbering its reports."""

    def __init__(self) -> None:
        self._sequences: dict[tuple[str, str], itertools.count[int]] = {}

    def status(
        self,
        vehicle_id: str,
        update_id: str,
        state: int,
        *,
        reason: int = 0,
        installed_version: str = "",
        sequence: int | None = None,
    ) -> OTAStatus:
        counter = self._sequences.setdefault((vehicle_id, update_id), itertools.count(1))
        return OTAStatus(
            vehicle_id=vehicle_id,
            update_id=update_id,
            state=state,  # type: ignore[arg-type]
            reason=reason,  # type: ignore[arg-type]
            sequence=sequence if sequence is not None else next(counter),
            installed_version=installed_version,
        )


def notification(payload: bytes) -> OTAUpdateAvailable:
    message = OTAUpdateAvailable()
    message.ParseFromString(payload)
    return message
