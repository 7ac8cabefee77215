"""`DeviceService` over the in-memory stores: updates outside campaigns, cancel, retry, rollback."""

from __future__ import annotations

import pytest
from ota_service_harness import TO_COMPLETION, Ota, S, fleet

from v2c.contract.errors import Conflict, InvalidField, NotFound
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus


@pytest.fixture
def ota() -> Ota:
    ota = Ota()
    ota.fleet.put(fleet(3))
    return ota


VEHICLE = fleet(1)[0].vehicle_id


def _update_to(ota: Ota, version: str = "2.0.0", **extra: object) -> str:
    return ota.devices.update_device(
        VEHICLE, {"firmware_id": ota.package(version).firmware_id, **extra}
    ).device_update_id


def test_a_device_update_is_recorded_and_notified_with_its_own_release(ota: Ota) -> None:
    update = ota.devices.get(_update_to(ota))
    assert (update.state, update.kind.value) == (UpdateState.NOTIFIED, "device")
    note = ota.notifier.sent[-1]
    assert (note.vehicle_id, note.device_update_id) == (VEHICLE, update.device_update_id)
    assert note.manifest == update.manifest  # the release travels on the record
    manifest = OTAManifest()
    manifest.ParseFromString(note.manifest)
    assert (manifest.update_id, manifest.version) == (update.update_id, "2.0.0")


def test_one_update_in_flight_per_vehicle(ota: Ota) -> None:
    _update_to(ota)
    with pytest.raises(Conflict):
        _update_to(ota)


def test_a_vehicle_on_that_version_needs_force(ota: Ota) -> None:
    with pytest.raises(Conflict, match="set force"):
        _update_to(ota, "1.0.0")
    assert ota.devices.get(_update_to(ota, "1.0.0", force=True)).to_version == "1.0.0"


def test_bad_requests_get_typed_errors(ota: Ota) -> None:
    firmware_id = ota.package().firmware_id
    with pytest.raises(NotFound):
        ota.devices.update_device("VIN-1HGBH41JXMN999999", {"firmware_id": firmware_id})
    with pytest.raises(InvalidField):
        ota.devices.update_device(VEHICLE, {"firmware_id": "0" * 32})
    ota.packages.missing.add(firmware_id)
    with pytest.raises(InvalidField, match="missing"):
        ota.devices.update_device(VEHICLE, {"firmware_id": firmware_id})


def test_a_bulk_update_is_signed_once_and_answers_per_device(ota: Ota) -> None:
    ids = [v.vehicle_id for v in fleet(3)] + ["VIN-1HGBH41JXMN999999"]
    results = ota.devices.bulk_update({"firmware_id": ota.package().firmware_id, "device_ids": ids})
    assert [r.status for r in results] == [201, 201, 201, 404]
    assert len({n.signature for n in ota.notifier.sent}) == 1


def test_cancel_a_notified_update_and_cancel_it_again(ota: Ota) -> None:
    device_update_id = _update_to(ota)
    assert ota.devices.cancel(device_update_id).state is UpdateState.CANCELLED
    assert ota.devices.cancel(device_update_id).state is UpdateState.CANCELLED  # no change
    assert ota.event_types().count("update.cancelled") == 2


def test_an_installing_update_cannot_be_cancelled(ota: Ota) -> None:
    device_update_id = _update_to(ota)
    update = ota.devices.get(device_update_id)
    for state in (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING):
        ota.report(VEHICLE, update.update_id, state)
    with pytest.raises(Conflict, match="cannot cancel"):
        ota.devices.cancel(device_update_id)


def test_a_cancel_that_loses_a_race_is_retried(ota: Ota) -> None:
    device_update_id = _update_to(ota)
    ota.update_store.conflicts = 2
    assert ota.devices.cancel(device_update_id).state is UpdateState.CANCELLED


def test_a_failed_update_is_retried_and_notified_again(ota: Ota) -> None:
    device_update_id = _update_to(ota)
    update = ota.devices.get(device_update_id)
    ota.report(VEHICLE, update.update_id, S.ACCEPTED)
    ota.report(VEHICLE, update.update_id, S.FAILED, reason=OTAStatus.Reason.S3_UNAVAILABLE)
    with pytest.raises(Conflict):
        ota.devices.cancel(device_update_id)  # nothing to cancel: it failed
    retried = ota.devices.retry(device_update_id)
    assert (retried.state, retried.retries) == (UpdateState.NOTIFIED, 1)
    assert len(ota.notifier.sent) == 2
    assert ota.notifier.sent[-1].manifest == update.manifest


def test_a_manual_rollback_returns_the_vehicle_to_its_previous_version(ota: Ota) -> None:
    ota.package("1.0.0")
    update = ota.devices.get(_update_to(ota))
    for state in TO_COMPLETION:
        ota.report(VEHICLE, update.update_id, state)
    ota.report(VEHICLE, update.update_id, S.COMPLETED, installed="2.0.0")
    rollback = ota.devices.rollback(VEHICLE, {"reason": "driver complaint"})
    assert (rollback.kind.value, rollback.to_version, rollback.from_version) == (
        "rollback",
        "1.0.0",
        "2.0.0",
    )
    manifest = OTAManifest()
    manifest.ParseFromString(ota.notifier.sent[-1].manifest)
    assert manifest.is_rollback
    (row,) = ota.rollback_log.rows.values()
    assert (row["reason"], row["status"]) == ("driver complaint", "in_progress")
    for state in TO_COMPLETION:
        ota.report(VEHICLE, rollback.update_id, state)
    ota.report(VEHICLE, rollback.update_id, S.COMPLETED, installed="1.0.0")
    assert row["status"] == "completed"
    assert ota.fleet.get(VEHICLE).installed_version == "1.0.0"  # type: ignore[union-attr]


def test_a_rollback_without_history_is_refused(ota: Ota) -> None:
    with pytest.raises(InvalidField):
        ota.devices.rollback(VEHICLE, {"reason": "no history"})
