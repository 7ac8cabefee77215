"""Updates of one vehicle at a time, the per-update commands and statistics,
over a real moto server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from ota_support import OtaServices, VehicleReporter, fleet, notification, ota_services

from v2c.contract.errors import Conflict, InvalidField, NotFound
from v2c.handlers.ota.devices import DeviceService
from v2c.handlers.ota.stats import StatsService
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


S = OTAStatus.State
R = OTAStatus.Reason


@pytest.fixture
def ota(aws_stack: AwsStack) -> OtaServices:
    services = ota_services(aws_stack)
    services.register(fleet(5))
    services.packages.add("1.0.0", b"one" * 50)
    services.packages.add("2.0.0", b"two" * 50)
    return services


@pytest.fixture
def devices(ota: OtaServices) -> DeviceService:
    return DeviceService(ota.deps, ota.campaigns)


def _walk(
    ota: OtaServices,
    reporter: VehicleReporter,
    vehicle: str,
    update_id: str,
    *states: int,
    **kw: object,
) -> None:
    for state in states:
        ota.status.apply(reporter.status(vehicle, update_id, state, **kw))  # type: ignore[arg-type]


def _fw(ota: OtaServices, version: str) -> str:
    found = ota.packages.find_version("Accord", version)
    assert found is not None
    return found.firmware_id


def test_single_device_update_notifies_and_tracks(ota: OtaServices, devices: DeviceService) -> None:
    vehicle = fleet(1)[0].vehicle_id
    update = devices.update_device(vehicle, {"firmware_id": _fw(ota, "2.0.0")})
    assert update.state.value == "notified"
    topic, payload = ota.sink.sent[-1]
    assert topic.endswith(f"/{vehicle}/ota/available")
    manifest = OTAManifest()
    manifest.ParseFromString(notification(payload).manifest)
    assert manifest.update_id == update.update_id
    assert manifest.version == "2.0.0"
    assert devices.get(update.device_update_id).vehicle_id == vehicle
    with pytest.raises(Conflict):  # one update in flight per vehicle
        devices.update_device(vehicle, {"firmware_id": _fw(ota, "2.0.0")})
    reporter = VehicleReporter()
    _walk(
        ota,
        reporter,
        vehicle,
        update.update_id,
        S.ACCEPTED,
        S.DOWNLOADING,
        S.DOWNLOADED,
        S.INSTALLING,
        S.REBOOTING,
        S.VERIFYING,
    )
    _walk(ota, reporter, vehicle, update.update_id, S.COMPLETED, installed_version="2.0.0")
    assert devices.get(update.device_update_id).state.value == "completed"
    assert ota.deps.fleet.get(vehicle).installed_version == "2.0.0"  # type: ignore[union-attr]
    history = devices.history(vehicle)
    assert [h.to_version for h in history] == ["2.0.0"]


def test_bad_requests_get_typed_errors(ota: OtaServices, devices: DeviceService) -> None:
    vehicle = fleet(1)[0].vehicle_id
    with pytest.raises(NotFound):
        devices.update_device("VIN-1HGBH41JXMN999999", {"firmware_id": _fw(ota, "2.0.0")})
    with pytest.raises(InvalidField):
        devices.update_device(vehicle, {"firmware_id": "0" * 32})
    with pytest.raises(Conflict):  # already runs 1.0.0: a downgrade needs force
        devices.update_device(vehicle, {"firmware_id": _fw(ota, "1.0.0")})
    with pytest.raises(NotFound):
        devices.get("f" * 32)


def test_bulk_update_reports_per_device(ota: OtaServices, devices: DeviceService) -> None:
    ids = [v.vehicle_id for v in fleet(3)] + ["VIN-1HGBH41JXMN999999"]
    results = devices.bulk_update({"firmware_id": _fw(ota, "2.0.0"), "device_ids": ids})
    assert [r.status for r in results] == [201, 201, 201, 404]
    assert len(ota.sink.sent) == 3
    releases = {notification(p).signature for _t, p in ota.sink.sent}
    assert len(releases) == 1  # signed once for the whole request


def test_cancel_retry_and_rollback(ota: OtaServices, devices: DeviceService) -> None:
    vehicle = fleet(1)[0].vehicle_id
    reporter = VehicleReporter()
    update = devices.update_device(vehicle, {"firmware_id": _fw(ota, "2.0.0")})
    _walk(ota, reporter, vehicle, update.update_id, S.ACCEPTED, S.DOWNLOADING)
    _walk(ota, reporter, vehicle, update.update_id, S.FAILED, reason=R.S3_UNAVAILABLE)
    with pytest.raises(Conflict):
        devices.cancel(update.device_update_id)  # nothing to cancel: it failed
    retried = devices.retry(update.device_update_id)
    assert retried.state.value == "notified"
    assert retried.retries == 1
    assert len(ota.sink.sent) == 2  # re-notified
    _walk(
        ota,
        reporter,
        vehicle,
        update.update_id,
        S.ACCEPTED,
        S.DOWNLOADING,
        S.DOWNLOADED,
        S.INSTALLING,
        S.REBOOTING,
        S.VERIFYING,
    )
    _walk(ota, reporter, vehicle, update.update_id, S.COMPLETED, installed_version="2.0.0")
    rollback = devices.rollback(vehicle, {"reason": "driver complaint"})
    assert rollback.to_version == "1.0.0"
    assert rollback.kind.value == "rollback"
    manifest = OTAManifest()
    manifest.ParseFromString(notification(ota.sink.sent[-1][1]).manifest)
    assert manifest.is_rollback
    assert manifest.version == "1.0.0"
    assert "rollback.initiated" in ota.events.types()
    second = devices.update_device(fleet(2)[1].vehicle_id, {"firmware_id": _fw(ota, "2.0.0")})
    _walk(
        ota,
        reporter,
        second.vehicle_id,
        second.update_id,
        S.ACCEPTED,
        S.DOWNLOADING,
        S.DOWNLOADED,
        S.INSTALLING,
    )
    with pytest.raises(Conflict):  # installing: cancel refused (E3-US3)
        devices.cancel(second.device_update_id)


def test_campaign_statistics(ota: OtaServices) -> None:
    body = {
        "name": "stats",
        "firmware_id": _fw(ota, "2.0.0"),
        "target_filter": "model = 'Accord'",
        "deployment_strategy": "immediate",
    }
    campaign_id = ota.campaigns.create(body).campaign.campaign_id
    started = ota.campaigns.start(campaign_id)
    reporter = VehicleReporter()
    vehicles = ota.sink.vehicles()
    for number, vehicle in enumerate(vehicles):
        ota.clock.now += 60
        _walk(
            ota,
            reporter,
            vehicle,
            started.release.update_id,
            S.ACCEPTED,
            S.DOWNLOADING,
            S.DOWNLOADED,
            S.INSTALLING,
            S.REBOOTING,
            S.VERIFYING,
        )
        if number == 0:
            _walk(
                ota,
                reporter,
                vehicle,
                started.release.update_id,
                S.FAILED,
                reason=R.CHECKSUM_MISMATCH,
            )
        else:
            _walk(
                ota,
                reporter,
                vehicle,
                started.release.update_id,
                S.COMPLETED,
                installed_version="2.0.0",
            )
    stats = StatsService(ota.deps.campaigns, ota.deps.updates)
    one = stats.campaign(campaign_id)
    assert one["counters"]["completed"] == 4
    assert one["counters"]["failed"] == 1
    assert one["counters"]["success_rate"] == 80.0  # BR-OTA-041
    assert one["failure_reasons"] == {"CHECKSUM_MISMATCH": 1}
    assert one["average_update_seconds"] is not None
    overall = stats.fleet()
    assert overall["campaigns"] == 1
    assert overall["updates"]["completed"] == 4
