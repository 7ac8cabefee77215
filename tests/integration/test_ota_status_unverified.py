"""Status ingest of reports about unverified notifications, over a real moto server.

A vehicle that could not verify a notification says so
(`OTAStatus.notification_unverified`) under the update id the unverified
manifest claims. The ingest must never let that change the real update's
record (a forged notification reusing a real id would otherwise end it); it
counts, alerts and audits instead, also for ids no update has, without
dead-lettering. The one exception is checked by the cloud itself: the
report's digest equals that of what the cloud signed for the update.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from ota_support import OtaServices, VehicleReporter, fleet, notification, ota_services
from prometheus_client import REGISTRY

from v2c.contract.events import build_event
from v2c.contract.notification import signed_part_sha256
from v2c.contract.topics import Domain, Topic
from v2c.handlers.ota.domain.update_state import Outcome, UpdateState
from v2c.handlers.ota.status import UNVERIFIED_ALERT, UNVERIFIED_EVENT
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.handlers.signing.manifest import sign_manifest
from v2c.handlers.signing.software import SoftwareSigner
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus, OTAUpdateAvailable

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


S = OTAStatus
METRIC = "v2c_ota_unverified_notifications_total"


@pytest.fixture
def ota(aws_stack: AwsStack) -> OtaServices:
    return ota_services(aws_stack)


def unverified_count(target: str) -> float:
    return REGISTRY.get_sample_value(METRIC, {"target": target}) or 0.0


def started_campaign(ota: OtaServices, n: int = 2) -> tuple[str, str, list[OTAUpdateAvailable]]:
    """A running campaign: (campaign id, update id, the notifications sent)."""
    ota.register(fleet(n))
    package = ota.packages.add("2.0.0", b"firmware-2.0.0" * 100)
    created = ota.campaigns.create(
        {
            "name": "spring",
            "firmware_id": package.firmware_id,
            "target_filter": "model = 'Accord'",
            "deployment_strategy": "immediate",
        }
    ).campaign
    ota.campaigns.start(created.campaign_id)
    sent = [notification(payload) for _, payload in ota.sink.sent]
    assert len(sent) == n
    return created.campaign_id, created.release.update_id, sent


def forged_part(update_id: str) -> OTAUpdateAvailable:
    manifest = OTAManifest(
        update_id=update_id,
        version="9.9.9",
        size_bytes=10,
        checksum_sha256=b"\x00" * 32,
        target_model="Accord",
    )
    return sign_manifest(SoftwareSigner.generate(key_id="attacker"), manifest)


def unverified_report(
    vehicle_id: str, update_id: str, about: OTAUpdateAvailable, sequence: int = 1
) -> OTAStatus:
    status = OTAStatus(
        vehicle_id=vehicle_id,
        update_id=update_id,
        state=S.REJECTED,
        reason=S.SIGNATURE_VERIFICATION_FAILED,
        sequence=sequence,
        error_detail="signature does not verify",
        installed_version="1.0.0",
        notification_unverified=True,
        notification_sha256=signed_part_sha256(about.manifest, about.signature, about.key_id),
    )
    status.header.message_id = bytes([sequence]) * 16
    return status


def ingest(ota: OtaServices, region: str, status: OTAStatus) -> Any:
    topic = str(Topic(region, status.vehicle_id, Domain.OTA, "status"))
    event = build_event(
        rule="ota_status",
        topic=topic,
        payload=status.SerializeToString(),
        qos=1,
        properties={},
    )
    return ota.status.ingest(event)


def snapshot(update: VehicleUpdate | None) -> dict[str, Any]:
    assert update is not None
    return update.to_item()


def test_a_forged_notifications_rejection_leaves_the_real_record_and_is_audited(
    ota: OtaServices,
) -> None:
    campaign_id, update_id, _sent = started_campaign(ota)
    car = fleet(2)[0]
    before = snapshot(ota.deps.updates.find(car.vehicle_id, update_id))
    counted = unverified_count("known_update")

    report = ingest(
        ota, car.region, unverified_report(car.vehicle_id, update_id, forged_part(update_id))
    )

    assert (report.outcome, report.state) == (Outcome.UNVERIFIED, "notified")
    assert snapshot(ota.deps.updates.find(car.vehicle_id, update_id)) == before
    campaign = ota.campaigns.get(campaign_id)
    assert (campaign.counters.failed, campaign.counters.in_progress) == (0, 2)
    assert unverified_count("known_update") == counted + 1
    assert ota.alerts.names() == [UNVERIFIED_ALERT]
    [(_kind, detail)] = [(t, d) for t, d in ota.events.events if t == UNVERIFIED_EVENT]
    assert detail["vehicle_id"] == car.vehicle_id
    assert detail["claimed_update_id"] == update_id
    assert detail["names_known_update"] is True
    assert detail["record_state"] == "notified"
    # The genuine update's reports are applied as if nothing had happened
    reporter = VehicleReporter()
    accepted = ota.status.apply(reporter.status(car.vehicle_id, update_id, S.ACCEPTED))
    assert accepted.outcome is Outcome.APPLIED
    assert ota.deps.updates.get(car.vehicle_id, update_id).last_sequence == 1


def test_during_an_update_too_and_for_an_id_no_update_has(ota: OtaServices) -> None:
    _campaign_id, update_id, _sent = started_campaign(ota)
    car = fleet(2)[1]
    reporter = VehicleReporter()
    for state in (S.ACCEPTED, S.DOWNLOADING):
        ota.status.apply(reporter.status(car.vehicle_id, update_id, state))
    before = snapshot(ota.deps.updates.find(car.vehicle_id, update_id))
    report = ingest(
        ota, car.region, unverified_report(car.vehicle_id, update_id, forged_part(update_id), 2)
    )
    assert report.outcome is Outcome.UNVERIFIED
    assert snapshot(ota.deps.updates.find(car.vehicle_id, update_id)) == before
    # an id the cloud never issued: audited, not an error, nothing dead-lettered
    unknown = unverified_count("unknown_update")
    report = ingest(
        ota, car.region, unverified_report(car.vehicle_id, "no-such", forged_part("no-such"), 3)
    )
    assert (report.outcome, report.state) == (Outcome.UNVERIFIED, "")
    assert unverified_count("unknown_update") == unknown + 1
    assert ota.deps.updates.find(car.vehicle_id, "no-such") is None
    details = [d for t, d in ota.events.events if t == UNVERIFIED_EVENT]
    assert [d["names_known_update"] for d in details] == [True, False]


def test_an_unflagged_signature_rejection_is_not_applied_either(ota: OtaServices) -> None:
    """An agent from before the flag reports a failed signature as a plain
    REJECTED: it may be forged all the same."""
    _campaign_id, update_id, _sent = started_campaign(ota)
    car = fleet(2)[0]
    before = snapshot(ota.deps.updates.find(car.vehicle_id, update_id))
    legacy = VehicleReporter().status(
        car.vehicle_id, update_id, S.REJECTED, reason=S.SIGNATURE_VERIFICATION_FAILED
    )
    assert ingest(ota, car.region, legacy).outcome is Outcome.UNVERIFIED
    assert snapshot(ota.deps.updates.find(car.vehicle_id, update_id)) == before


def test_the_clouds_own_notification_rejected_by_a_vehicle_is_recorded(ota: OtaServices) -> None:
    campaign_id, update_id, sent = started_campaign(ota)
    car = fleet(2)[0]
    mine = next(n for n in sent if n.header.correlation_id)  # the campaign's signed release
    report = ingest(ota, car.region, unverified_report(car.vehicle_id, update_id, mine))
    assert report.outcome is Outcome.APPLIED
    record = ota.deps.updates.get(car.vehicle_id, update_id)
    assert (record.state, record.reason) == (UpdateState.REJECTED, "SIGNATURE_VERIFICATION_FAILED")
    assert record.last_sequence == 0  # the unverified numbering is not the update's
    assert record.decided_by_cloud
    assert ota.campaigns.get(campaign_id).counters.failed == 1
    # a real failure now: the campaign's own accounting reacts (1 of 2 failed),
    # and it is no unverified-notification alert
    assert UNVERIFIED_ALERT not in ota.alerts.names()


def test_a_digest_match_does_not_end_an_update_the_vehicle_took(ota: OtaServices) -> None:
    _campaign_id, update_id, sent = started_campaign(ota)
    car = fleet(2)[1]
    reporter = VehicleReporter()
    ota.status.apply(reporter.status(car.vehicle_id, update_id, S.ACCEPTED))
    before = snapshot(ota.deps.updates.find(car.vehicle_id, update_id))
    report = ingest(ota, car.region, unverified_report(car.vehicle_id, update_id, sent[0]))
    assert report.outcome is Outcome.UNVERIFIED
    assert snapshot(ota.deps.updates.find(car.vehicle_id, update_id)) == before


def test_a_device_update_checks_the_release_on_its_own_record(ota: OtaServices) -> None:
    car = fleet(1)[0]
    ota.register([car])
    package = ota.packages.add("2.0.0", b"firmware-2.0.0" * 100)
    from v2c.handlers.ota.devices import DeviceService

    devices = DeviceService(ota.deps, ota.campaigns)
    update = devices.update_device(car.vehicle_id, {"firmware_id": package.firmware_id})
    [(_topic, payload)] = ota.sink.sent
    forged = unverified_report(car.vehicle_id, update.update_id, forged_part(update.update_id))
    assert ingest(ota, car.region, forged).outcome is Outcome.UNVERIFIED
    assert ota.deps.updates.get(car.vehicle_id, update.update_id).state is UpdateState.NOTIFIED
    mine = unverified_report(car.vehicle_id, update.update_id, notification(payload), 2)
    assert ingest(ota, car.region, mine).outcome is Outcome.APPLIED
    assert ota.deps.updates.get(car.vehicle_id, update.update_id).state is UpdateState.REJECTED
