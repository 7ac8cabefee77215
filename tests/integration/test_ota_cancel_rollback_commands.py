"""Cancel and rollback decisions reach the vehicles, over a real moto server.

Service level (`ota_services`): the failure threshold rolls a campaign back;
vehicles in flight get one signed ROLL_BACK command, those that completed a
signed, critical rollback manifest, and one that completes while the
campaign rolls back gets its manifest then; the counters end rolled_back.
HTTP (`api_server` over the production services): a device update with the
PRD's field names, its cancel reaching the vehicle, and a device rollback
that goes only to a version the vehicle ran, with a reason.

Every message is read back as a vehicle would: decoded and verified with the
signer's public key alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
import requests
from api_support import AUTH_HEADERS
from ota_support import (
    OtaServices,
    S3Packages,
    VehicleReporter,
    fleet,
    notification,
    ota_services,
)

from v2c.contract.command import decode_envelope, verify_command
from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.contract.manifest import verify_manifest
from v2c.handlers.api import ApiServices
from v2c.handlers.ota.campaigns.rollback_log import RollbackLog
from v2c.handlers.ota.config import OtaServices as ProductionServices
from v2c.handlers.ota.ddb import from_item
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.signing.base import Signer
from v2c.infra.local.http_adapter import ApiHttpServer
from v2c.v1.command_pb2 import ROLLBACK_TRIGGER_FAILURE_RATE, OTACommand
from v2c.v1.ota_pb2 import UPDATE_PRIORITY_CRITICAL, OTAManifest, OTAStatus

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

S = OTAStatus.State
R = OTAStatus.Reason
Kind = OTACommand.Kind
TO_INSTALLING = (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING)
BASE = "/api/v1/ota"


def _keys(signer: Signer) -> TrustedKeySet:
    since = datetime(2020, 1, 1, tzinfo=UTC)
    return TrustedKeySet([TrustedKey(signer.key_id, signer.public_key(), since)])


def _vehicle(topic: str) -> str:
    return topic.split("/")[3]


def _commands(
    sent: list[tuple[str, bytes]], signer: Signer, now: datetime
) -> list[tuple[str, OTACommand]]:
    """Every command published, verified as its vehicle verifies it."""
    return [
        (
            _vehicle(topic),
            verify_command(
                decode_envelope(payload), trusted=_keys(signer), now=now, vehicle_id=_vehicle(topic)
            ),
        )
        for topic, payload in sent
        if topic.endswith("/commands/request")
    ]


def _manifests(
    sent: list[tuple[str, bytes]], signer: Signer, now: datetime
) -> list[tuple[str, OTAManifest]]:
    """Every notification published, its manifest verified."""
    out = []
    for topic, payload in sent:
        if topic.endswith("/ota/available"):
            note = notification(payload)
            manifest = verify_manifest(
                note.manifest, note.signature, note.key_id, trusted=_keys(signer), now=now
            )
            out.append((_vehicle(topic), manifest))
    return out


# -- the campaign, service level --------------------------------------------------------


@pytest.fixture
def ota(aws_stack: AwsStack) -> OtaServices:
    return ota_services(aws_stack)


def test_the_failure_threshold_stops_vehicles_in_flight_and_rolls_back_every_one_that_completed(
    ota: OtaServices, aws_stack: AwsStack
) -> None:
    ota.register(fleet(20))
    ota.packages.add("1.0.0", b"firmware-1.0.0" * 100)
    package = ota.packages.add("2.0.0", b"firmware-2.0.0" * 100)
    campaign_id = ota.campaigns.create(
        {
            "name": "spring",
            "firmware_id": package.firmware_id,
            "target_filter": "model = 'Accord'",
            "deployment_strategy": "immediate",
            "batch_size": 4,
            "max_concurrent_updates": 20,
        }
    ).campaign.campaign_id
    update_id = ota.campaigns.start(campaign_id).release.update_id
    vehicles = ota.sink.vehicles()
    assert len(vehicles) == 20
    reporter = VehicleReporter()

    def report(vehicle: str, *states: int, **kw: Any) -> None:
        for state in states:
            ota.status.apply(reporter.status(vehicle, update_id, state, **kw))

    installing = vehicles[10:12]
    for vehicle in installing:
        report(vehicle, *TO_INSTALLING)
    for vehicle in vehicles[:7]:
        report(vehicle, *TO_INSTALLING, S.REBOOTING, S.VERIFYING)
        report(vehicle, S.COMPLETED, installed_version="2.0.0")
    for vehicle in vehicles[7:10]:
        report(vehicle, *TO_INSTALLING, S.REBOOTING, S.VERIFYING)
        report(vehicle, S.FAILED, reason=R.FLASH_WRITE_FAILURE)

    rolling = ota.campaigns.get(campaign_id)
    assert rolling.status is CampaignStatus.ROLLING_BACK
    assert rolling.status_reason.startswith("failure_rate: ")
    after_start = ota.sink.sent[20:]

    # In flight: one campaign-wide ROLL_BACK, with its trigger, to each of the ten.
    commands = _commands(after_start, ota.signer, ota.now())
    assert sorted(v for v, _ in commands) == sorted(vehicles[10:])
    assert {c.command_id for _, c in commands} == {commands[0][1].command_id}
    command = commands[0][1]
    assert (command.kind, command.trigger, command.update_id, command.vehicle_id) == (
        Kind.ROLL_BACK,
        ROLLBACK_TRIGGER_FAILURE_RATE,
        update_id,
        "",
    )

    # Completed: a signed rollback manifest, critical, back to 1.0.0.
    manifests = _manifests(after_start, ota.signer, ota.now())
    assert sorted(v for v, _ in manifests) == sorted(vehicles[:7])
    assert {(m.is_rollback, m.version, m.priority) for _, m in manifests} == {
        (True, "1.0.0", UPDATE_PRIORITY_CRITICAL)
    }
    rows = RollbackLog(aws_stack.aws.client("dynamodb"), aws_stack.names.rollbacks_table)
    assert {(r["trigger"], r["status"]) for r in rows.for_campaign(campaign_id)} == {
        ("failure_rate", "in_progress")
    }

    # One vehicle that was installing completes: it gets the rollback too.
    late, failing = installing
    report(late, S.REBOOTING, S.VERIFYING)
    report(late, S.COMPLETED, installed_version="2.0.0")
    [(vehicle, late_manifest)] = _manifests(
        ota.sink.sent[20 + len(after_start) :], ota.signer, ota.now()
    )
    assert vehicle == late
    assert (late_manifest.is_rollback, late_manifest.priority) == (True, UPDATE_PRIORITY_CRITICAL)
    assert late_manifest.update_id == manifests[0][1].update_id  # the campaign's rollback release

    # Every vehicle runs its rollback; the other installing one fails on its own.
    for vehicle, manifest in [*manifests, (late, late_manifest)]:
        for state in (*TO_INSTALLING, S.REBOOTING, S.VERIFYING):
            ota.status.apply(reporter.status(vehicle, manifest.update_id, state))
        ota.status.apply(
            reporter.status(vehicle, manifest.update_id, S.COMPLETED, installed_version="1.0.0")
        )
    assert ota.campaigns.get(campaign_id).status is CampaignStatus.ROLLING_BACK  # one in flight
    report(failing, S.REBOOTING, S.FAILED, reason=R.BOOT_FAILURE)

    done = ota.campaigns.get(campaign_id)
    assert done.status is CampaignStatus.ROLLED_BACK
    counters = done.counters
    assert (counters.rolled_back, counters.completed, counters.failed) == (8, 0, 4)
    assert (counters.cancelled, counters.in_progress, counters.total) == (8, 0, 20)
    assert {r["status"] for r in rows.for_campaign(campaign_id)} == {"completed"}
    for vehicle in [*vehicles[:7], late]:
        assert ota.deps.fleet.get(vehicle).installed_version == "1.0.0"  # type: ignore[union-attr]


def test_a_campaign_cancel_reaches_every_vehicle_in_flight_once(ota: OtaServices) -> None:
    ota.register(fleet(6))
    package = ota.packages.add("2.0.0", b"firmware-2.0.0" * 100)
    campaign_id = ota.campaigns.create(
        {
            "name": "cancelled",
            "firmware_id": package.firmware_id,
            "target_filter": "model = 'Accord'",
            "deployment_strategy": "immediate",
        }
    ).campaign.campaign_id
    update_id = ota.campaigns.start(campaign_id).release.update_id
    vehicles = ota.sink.vehicles()
    reporter = VehicleReporter()
    for state in (*TO_INSTALLING, S.REBOOTING, S.VERIFYING, S.COMPLETED):
        ota.status.apply(reporter.status(vehicles[0], update_id, state))

    ota.campaigns.cancel(campaign_id, "recall")

    commands = _commands(ota.sink.sent[6:], ota.signer, ota.now())
    assert sorted(v for v, _ in commands) == sorted(vehicles[1:])
    assert {(c.kind, c.update_id, c.reason) for _, c in commands} == {
        (Kind.CANCEL_UPDATE, update_id, "recall")
    }


# -- devices over HTTP -------------------------------------------------------------------


@pytest.fixture
def api_services(moto_campaign_api: ApiServices) -> ApiServices:
    return moto_campaign_api


def _register(aws_stack: AwsStack, version: str) -> str:
    """A package written where the registry would have put it (as `registered_firmware`)."""
    package = S3Packages(aws_stack.aws.client("s3"), aws_stack.names.firmware_bucket).add(
        version, f"image {version}".encode() * 100
    )
    aws_stack.aws.client("dynamodb").put_item(
        TableName=aws_stack.names.firmware_table,
        Item={
            "firmware_id": {"S": package.firmware_id},
            "name": {"S": "fw"},
            "version": {"S": version},
            "device_model": {"S": "Accord"},
            "size_bytes": {"N": str(package.size_bytes)},
            "sha256": {"S": package.sha256_hex},
            "status": {"S": "available"},
            "s3_key": {"S": f"firmware/{package.firmware_id}"},
        },
    )
    return package.firmware_id


def _post(server: ApiHttpServer, path: str, body: Any) -> requests.Response:
    return requests.post(
        f"{server.base_url}{BASE}{path}", json=body, headers=AUTH_HEADERS, timeout=30
    )


def test_device_update_cancel_and_rollback_over_http_with_the_prd_field_names(
    api_server: ApiHttpServer,
    moto_ota: ProductionServices,
    aws_stack: AwsStack,
    ota_sink: Any,
) -> None:
    first, second = (v.vehicle_id for v in fleet(2))
    moto_ota.deps.fleet.put(fleet(2))
    # 1.5.0 is registered for the model, but neither vehicle ever ran it.
    new = {v: _register(aws_stack, v) for v in ("1.0.0", "2.0.0", "1.5.0")}["2.0.0"]
    signer, now = moto_ota.deps.signer, datetime.now(tz=UTC)

    # The PRD's body: force_update, max_retries, timeout_minutes.
    created = _post(
        api_server,
        f"/devices/{first}/update",
        {"firmware_id": new, "priority": "high", "force_update": True, "max_retries": 2,
         "timeout_minutes": 45},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    update = created.json()
    assert (update["max_retries"], update["timeout_ms"]) == (2, 45 * 60_000)
    [(vehicle, manifest)] = _manifests(ota_sink.sent, signer, now)
    assert (vehicle, manifest.force_update, manifest.version) == (first, True, "2.0.0")
    refused = _post(
        api_server, f"/devices/{second}/update", {"firmware_id": new, "max_retries": 11}
    )
    assert refused.status_code == 400
    assert "max_retries" in refused.json()["detail"]

    # Cancel: the vehicle is told, by a command naming it and the update.
    cancelled = _post(api_server, f"/updates/{update['update_id']}/cancel", {})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    [(vehicle, command)] = _commands(ota_sink.sent, signer, now)
    assert (vehicle, command.kind, command.vehicle_id, command.update_id) == (
        first,
        Kind.CANCEL_UPDATE,
        first,
        update["release_id"],
    )

    # A completed update gives the second vehicle a history: 1.0.0 -> 2.0.0.
    done = _post(api_server, f"/devices/{second}/update", {"firmware_id": new})
    assert done.status_code == 201, done.text
    reporter = VehicleReporter()
    for state in (*TO_INSTALLING, S.REBOOTING, S.VERIFYING):
        moto_ota.status.apply(reporter.status(second, done.json()["release_id"], state))
    moto_ota.status.apply(
        reporter.status(second, done.json()["release_id"], S.COMPLETED, installed_version="2.0.0")
    )

    rollback = f"/devices/{second}/rollback"
    never_ran = _post(api_server, rollback, {"to_version": "1.5.0", "reason": "try 1.5"})
    assert never_ran.status_code == 400, never_ran.text
    assert "to_version" in never_ran.json()["detail"]
    assert "never ran 1.5.0" in never_ran.json()["detail"]
    no_reason = _post(api_server, rollback, {"to_version": "1.0.0"})
    assert no_reason.status_code == 400
    assert "reason" in no_reason.json()["detail"]
    blank = _post(api_server, rollback, {"to_version": "1.0.0", "reason": "  "})
    assert blank.status_code == 400

    rolled = _post(api_server, rollback, {"to_version": "1.0.0", "reason": "connectivity issues"})
    assert rolled.status_code == 201, rolled.text
    assert (rolled.json()["kind"], rolled.json()["to_version"]) == ("rollback", "1.0.0")
    vehicle, manifest = _manifests(ota_sink.sent, signer, now)[-1]
    assert (vehicle, manifest.is_rollback, manifest.priority) == (
        second,
        True,
        UPDATE_PRIORITY_CRITICAL,
    )
    answer = aws_stack.aws.client("dynamodb").scan(TableName=aws_stack.names.rollbacks_table)
    [row] = [from_item(i) for i in answer["Items"]]
    assert (row["vehicle_id"], row["trigger"], row["reason"], row["to_version"]) == (
        second,
        "manual",
        "connectivity issues",
        "1.0.0",
    )
