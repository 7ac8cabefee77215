"""The campaign and status services over a real moto server: creation,
dispatch wave by wave, exact counters, gates, thresholds, rollback, cancel.

Notifications go to a recording sink here (the services' contract is "send
this"); tests/integration/test_ota_end_to_end.py runs the same flow over a
real broker and gateway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from ota_support import (
    OtaServices,
    RecordingSink,
    VehicleReporter,
    fleet,
    notification,
    ota_services,
)

from v2c.contract.errors import InvalidField, SigningUnavailable
from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.contract.manifest import verify_manifest
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import Outcome
from v2c.handlers.signing.software import SoftwareSigner
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


S = OTAStatus.State


@pytest.fixture
def ota(aws_stack: AwsStack) -> OtaServices:
    return ota_services(aws_stack)


def _create(ota: OtaServices, n: int = 30, **spec: object) -> str:
    ota.register(fleet(n))
    package = ota.packages.add("2.0.0", b"firmware-2.0.0" * 100)
    body = {
        "name": "spring release",
        "firmware_id": package.firmware_id,
        "target_filter": "model = 'Accord'",
        **spec,
    }
    return ota.campaigns.create(body).campaign.campaign_id


def _finish(
    ota: OtaServices, reporter: VehicleReporter, vehicle: str, update_id: str, ok: bool
) -> None:
    for state in (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING, S.REBOOTING, S.VERIFYING):
        ota.status.apply(reporter.status(vehicle, update_id, state))
    final = S.COMPLETED if ok else S.ROLLED_BACK
    ota.status.apply(
        reporter.status(vehicle, update_id, final, installed_version="2.0.0" if ok else "1.0.0")
    )


def _sent_since(sink: RecordingSink, start: int) -> list[str]:
    return sink.vehicles()[start:]


def test_immediate_campaign_dispatches_in_batches_and_completes(ota: OtaServices) -> None:
    campaign_id = _create(
        ota, 30, deployment_strategy="immediate", batch_size=10, max_concurrent_updates=10
    )
    created = ota.campaigns.get(campaign_id)
    assert created.status is CampaignStatus.CREATED
    assert created.counters.pending == 30
    assert ota.sink.sent == []
    assert ota.events.types() == ["campaign.created"]

    started = ota.campaigns.start(campaign_id)
    assert started.counters.in_progress == 10
    assert started.counters.pending == 20
    assert len(ota.sink.sent) == 10

    # The notification carries a manifest the vehicle verifies with the public key alone.
    message = notification(ota.sink.sent[0][1])
    since = datetime(2020, 1, 1, tzinfo=UTC)
    keys = TrustedKeySet([TrustedKey(ota.signer.key_id, ota.signer.public_key(), since)])
    manifest = verify_manifest(
        message.manifest, message.signature, message.key_id, trusted=keys, now=ota.now()
    )
    assert manifest.version == "2.0.0"
    assert manifest.campaign_id == campaign_id
    assert message.download_url.startswith("http")

    reporter = VehicleReporter()
    update_id = started.release.update_id
    done = 0
    while done < 30:
        batch = ota.sink.vehicles()[done:]
        assert batch, "dispatch stopped early"
        for vehicle in batch:
            _finish(ota, reporter, vehicle, update_id, ok=True)
        done += len(batch)
    final = ota.campaigns.get(campaign_id)
    assert final.status is CampaignStatus.COMPLETED
    assert final.counters.completed == 30
    assert final.counters.total == 30
    assert sorted(ota.sink.vehicles()) == sorted(v.vehicle_id for v in fleet(30))
    assert ota.deps.fleet.get(fleet(1)[0].vehicle_id).installed_version == "2.0.0"  # type: ignore[union-attr]


def test_duplicate_and_stale_reports_change_nothing(ota: OtaServices) -> None:
    campaign_id = _create(ota, 3, deployment_strategy="immediate")
    started = ota.campaigns.start(campaign_id)
    vehicle, update_id = ota.sink.vehicles()[0], started.release.update_id
    reporter = VehicleReporter()
    first = reporter.status(vehicle, update_id, S.ACCEPTED)
    assert ota.status.apply(first).outcome is Outcome.APPLIED
    assert ota.status.apply(first).outcome is Outcome.DUPLICATE
    ota.status.apply(reporter.status(vehicle, update_id, S.DOWNLOADING))
    stale = reporter.status(vehicle, update_id, S.ACCEPTED, sequence=1)
    assert ota.status.apply(stale).outcome is Outcome.STALE
    record = ota.deps.updates.get(vehicle, update_id)
    assert record.state.value == "downloading"
    assert record.last_sequence == 2
    assert ota.campaigns.get(campaign_id).counters.in_progress == 3


def test_canary_passes_the_gate_then_rolls_out(ota: OtaServices) -> None:
    campaign_id = _create(
        ota,
        40,
        deployment_strategy="canary",
        canary_size=10,
        batch_size=50,
        max_concurrent_updates=100,
    )
    started = ota.campaigns.start(campaign_id)
    assert [w.name for w in started.waves] == ["canary", "rollout"]
    canary = ota.sink.vehicles()
    assert len(canary) == 10  # only the canary before the gate
    regions = {ota.deps.fleet.get(v).region for v in canary}  # type: ignore[union-attr]
    assert len(regions) == 3  # stratified over the fleet's regions
    reporter = VehicleReporter()
    for vehicle in canary:
        _finish(ota, reporter, vehicle, started.release.update_id, ok=True)
    after = ota.campaigns.get(campaign_id)
    assert after.gate is not None
    assert after.gate["verdict"] == "pass"
    assert after.current_wave == 1
    assert len(ota.sink.vehicles()) == 40
    assert "campaign.gate_passed" in ota.events.types()


def test_canary_failures_pause_the_campaign_and_alert(ota: OtaServices) -> None:
    campaign_id = _create(ota, 40, deployment_strategy="canary", canary_size=10)
    started = ota.campaigns.start(campaign_id)
    canary = ota.sink.vehicles()
    reporter = VehicleReporter()
    for number, vehicle in enumerate(canary):
        _finish(ota, reporter, vehicle, started.release.update_id, ok=number >= 2)
    paused = ota.campaigns.get(campaign_id)
    assert paused.status is CampaignStatus.PAUSED
    assert "exceed" in paused.status_reason or "gate" in paused.status_reason
    assert ota.alerts.names()
    assert len(ota.sink.vehicles()) == 10  # nobody beyond the canary was notified
    assert paused.counters.rolled_back == 2
    assert paused.counters.completed == 8


def test_failure_threshold_rolls_back_completed_vehicles(ota: OtaServices) -> None:
    ota.packages.add("1.0.0", b"firmware-1.0.0" * 100)
    campaign_id = _create(
        ota, 20, deployment_strategy="immediate", batch_size=20, max_concurrent_updates=20
    )
    started = ota.campaigns.start(campaign_id)
    vehicles = ota.sink.vehicles()
    reporter = VehicleReporter()
    for number, vehicle in enumerate(vehicles[:10]):
        _finish(ota, reporter, vehicle, started.release.update_id, ok=number >= 3)
    rolling = ota.campaigns.get(campaign_id)
    assert rolling.status is CampaignStatus.ROLLING_BACK
    assert "campaign_auto_rollback" in ota.alerts.names()
    rollbacks = [m for m in ota.sink.sent[20:] if m[0].endswith("/ota/available")]
    assert len(rollbacks) == 7  # the seven that completed
    manifest = OTAManifest()
    manifest.ParseFromString(notification(rollbacks[0][1]).manifest)
    assert manifest.is_rollback
    assert manifest.version == "1.0.0"
    # the ten not finished were cancelled
    assert rolling.counters.cancelled == 10
    for _topic, payload in rollbacks:
        note = notification(payload)
        m = OTAManifest()
        m.ParseFromString(note.manifest)
        vehicle = _topic.split("/")[3]
        for state in (
            S.ACCEPTED,
            S.DOWNLOADING,
            S.DOWNLOADED,
            S.INSTALLING,
            S.REBOOTING,
            S.VERIFYING,
            S.COMPLETED,
        ):
            ota.status.apply(
                reporter.status(vehicle, m.update_id, state, installed_version="1.0.0")
            )
    done = ota.campaigns.get(campaign_id)
    assert done.status is CampaignStatus.ROLLED_BACK
    assert done.counters.rolled_back == 10
    assert done.counters.completed == 0
    assert done.counters.total == 20


def test_cancel_counts_every_target_exactly_once(ota: OtaServices) -> None:
    campaign_id = _create(
        ota, 25, deployment_strategy="immediate", batch_size=10, max_concurrent_updates=10
    )
    started = ota.campaigns.start(campaign_id)
    reporter = VehicleReporter()
    first = ota.sink.vehicles()[0]
    for state in (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING):
        ota.status.apply(reporter.status(first, started.release.update_id, state))
    cancelled = ota.campaigns.cancel(campaign_id)
    assert cancelled.status is CampaignStatus.CANCELLED
    c = cancelled.counters
    assert (c.pending, c.in_progress, c.cancelled) == (0, 1, 24)  # installing finishes (E3-US3)
    assert c.total == 25
    assert ota.campaigns.advance(campaign_id).notified == 0


def test_missing_package_is_refused_and_nothing_is_created(ota: OtaServices) -> None:
    ota.register(fleet(5))
    package = ota.packages.add("2.0.0", b"x", upload=False)
    with pytest.raises(InvalidField) as caught:
        ota.campaigns.create(
            {"name": "n", "firmware_id": package.firmware_id, "target_filter": "year >= 2000"}
        )
    assert caught.value.http_status == 400
    assert "missing" in caught.value.detail
    assert ota.campaigns.list_campaigns()[0] == []


def test_signing_outage_answers_503_and_leaves_nothing(aws_stack: AwsStack) -> None:
    from v2c.handlers.signing.base import SigningPolicy

    class Broken(SoftwareSigner):
        def _sign(self, message: bytes) -> bytes:
            raise ConnectionError("HSM unreachable")

    signer = Broken.generate(key_id="k", policy=SigningPolicy(timeout_s=1.0, sleep=lambda _s: None))
    ota = ota_services(aws_stack, signer=signer)
    ota.register(fleet(5))
    package = ota.packages.add("2.0.0", b"x")
    with pytest.raises(SigningUnavailable) as caught:
        ota.campaigns.create(
            {"name": "n", "firmware_id": package.firmware_id, "target_filter": "year >= 2000"}
        )
    assert caught.value.http_status == 503
    assert ota.campaigns.list_campaigns()[0] == []
    s3 = aws_stack.aws.client("s3")
    listed = s3.list_objects_v2(Bucket=aws_stack.names.firmware_bucket, Prefix="campaign-plans/")
    assert listed.get("KeyCount", 0) == 0


def test_requires_approval_before_start(ota: OtaServices) -> None:
    from v2c.contract.errors import Conflict

    campaign_id = _create(ota, 3, requires_approval=True)
    with pytest.raises(Conflict):
        ota.campaigns.start(campaign_id)
    approved = ota.campaigns.approve(campaign_id, "alice")
    assert approved.approved_by == "alice"
    assert approved.approved_at_ms
    assert ota.campaigns.start(campaign_id).status is CampaignStatus.IN_PROGRESS


def test_stalled_campaign_is_flagged(ota: OtaServices) -> None:
    campaign_id = _create(ota, 3, deployment_strategy="immediate")
    ota.campaigns.start(campaign_id)
    ota.clock.now += 25 * 3600
    assert ota.campaigns.monitor()["stalled"] == 1
    assert ota.campaigns.get(campaign_id).stalled
    assert "campaign_stalled" in ota.alerts.names()
