"""Mends from the second reading of #15, each shown on the in-memory services:
a manual retry gets a new deadline, a timed-out update cannot be retried into a
vehicle that refuses it, a rejected campaign leaves nothing pending, a queued
campaign record never blocks a fleet manager's device update, a timeout whose
cancel cannot be sent still counts and alerts, and a vehicle that missed a
cancel is sent it again when it reports."""

from __future__ import annotations

import pytest
from ota_service_harness import Ota, S, fleet

from v2c.contract.errors import Conflict, SigningUnavailable
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.v1.command_pb2 import OTACommand

MINUTE = 60.0
QUIET = {"pause_threshold_percent": 100, "failure_threshold_percent": 100}


@pytest.fixture
def ota() -> Ota:
    return Ota()


def _cancels(ota: Ota, vehicle_id: str) -> list[OTACommand]:
    return [c for c in ota.commands.to(vehicle_id) if c.kind == OTACommand.CANCEL_UPDATE]


def _device_update(ota: Ota, **body: object) -> tuple[str, str, str]:
    vehicle = fleet(1)[0]
    ota.fleet.put([vehicle])
    update = ota.devices.update_device(
        vehicle.vehicle_id, {"firmware_id": ota.package().firmware_id, **body}
    )
    return vehicle.vehicle_id, update.update_id, update.device_update_id


def test_a_manual_retry_counts_its_deadline_from_the_retry(ota: Ota) -> None:
    vehicle, update_id, device_update_id = _device_update(ota, timeout_minutes=60, max_retries=1)
    ota.clock.advance(10 * MINUTE)
    ota.report(vehicle, update_id, S.ACCEPTED)
    ota.report(vehicle, update_id, S.FAILED)
    ota.clock.advance(110 * MINUTE)  # two hours after the first notification
    retried = ota.devices.retry(device_update_id)
    assert retried.notified_at_ms == int(ota.clock.now * 1000)
    assert retried.notifications == 2
    ota.clock.advance(MINUTE)
    assert ota.campaigns.monitor()["timed_out"] == 0  # the old deadline no longer holds
    assert ota.update_store.get(vehicle, update_id).state is UpdateState.NOTIFIED
    ota.clock.advance(60 * MINUTE)
    assert ota.campaigns.monitor()["timed_out"] == 1  # the retry's own deadline does


def test_a_timed_out_update_is_not_retried_into_a_vehicle_that_was_told_to_cancel_it(
    ota: Ota,
) -> None:
    vehicle, update_id, device_update_id = _device_update(ota, timeout_minutes=5, max_retries=0)
    ota.clock.advance(6 * MINUTE)
    assert ota.campaigns.monitor()["timed_out"] == 1
    assert _cancels(ota, vehicle)
    with pytest.raises(Conflict, match="start a new update"):
        ota.devices.retry(device_update_id)
    assert ota.update_store.get(vehicle, update_id).state is UpdateState.TIMED_OUT


def test_a_rejected_campaign_counts_its_targets_cancelled_not_pending(ota: Ota) -> None:
    campaign_id = ota.campaign(5, requires_approval=True)
    ota.campaigns.reject(campaign_id, "alice@example.com", "wrong build")
    counters = ota.campaigns.get(campaign_id).counters
    assert (counters.pending, counters.cancelled, counters.total) == (0, 5, 5)


def test_a_queued_campaign_record_does_not_block_a_device_update(ota: Ota) -> None:
    vehicle = fleet(1)[0].vehicle_id
    first = ota.campaign(1, deployment_strategy="immediate", **QUIET)
    ota.campaigns.start(first)
    held = ota.campaigns.get(first).release.update_id
    ota.report(vehicle, held, S.ACCEPTED)  # the vehicle holds the first campaign's update
    second = ota.campaign(1, deployment_strategy="immediate", **QUIET)
    ota.campaigns.start(second)
    queued = ota.campaigns.get(second).release.update_id
    assert ota.update_store.get(vehicle, queued).state is UpdateState.WAITING
    firmware_id = ota.package().firmware_id
    with pytest.raises(Conflict, match="already has update"):  # held: a real hold
        ota.devices.update_device(vehicle, {"firmware_id": firmware_id, "force_update": True})
    ota.report(vehicle, held, S.FAILED)
    # Only the second campaign's queued record is left: no hold on the vehicle.
    update = ota.devices.update_device(vehicle, {"firmware_id": firmware_id, "force_update": True})
    assert update.state is UpdateState.NOTIFIED
    ota.campaigns.monitor()  # the queued record waits behind the device update
    assert ota.update_store.get(vehicle, queued).state is UpdateState.WAITING


def test_a_timeout_whose_cancel_cannot_be_signed_still_counts_reacts_and_alerts(
    ota: Ota, monkeypatch: pytest.MonkeyPatch
) -> None:
    campaign_id = ota.campaign(
        2, deployment_strategy="immediate", timeout_minutes=5, max_retries=0, **QUIET
    )
    ota.campaigns.start(campaign_id)

    def down(*_args: object) -> list[bool]:
        raise SigningUnavailable("hsm down")

    monkeypatch.setattr(ota.commands, "send", down)
    ota.clock.advance(6 * MINUTE)
    report = ota.campaigns.monitor()
    assert report["timed_out"] == 2
    assert ota.campaigns.get(campaign_id).counters.timed_out == 2
    assert any(name == "vehicle_command_unsent" for name, *_ in ota.alerts.alerts)


def test_a_vehicle_that_missed_the_cancel_is_sent_it_again_when_it_reports(ota: Ota) -> None:
    campaign_id = ota.campaign(2, deployment_strategy="immediate", **QUIET)
    ota.campaigns.start(campaign_id)
    release = ota.campaigns.get(campaign_id).release.update_id
    missed, heard = ota.notified()
    ota.report(missed, release, S.ACCEPTED)
    ota.campaigns.cancel(campaign_id, reason="bad build")
    [campaign_wide] = _cancels(ota, missed)
    assert campaign_wide.vehicle_id == ""
    # Offline past its broker session, it comes back and carries on:
    ota.report(missed, release, S.DEFERRED)
    again = _cancels(ota, missed)[1:]
    assert [c.vehicle_id for c in again] == [missed]
    assert again[0].update_id == release
    ota.report(missed, release, S.DOWNLOADING)  # another report: the same command
    assert {c.command_id for c in _cancels(ota, missed)[1:]} == {again[0].command_id}
    # A vehicle that stopped (its final word) is not told again.
    ota.report(heard, release, S.REJECTED)
    assert len(_cancels(ota, heard)) == 1
    assert ota.update_store.get(missed, release).state is UpdateState.CANCELLED


def test_the_monitor_carries_on_a_rollback_a_crash_stopped_partway(
    ota: Ota, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status moves first; a process that dies before the rollback
    manifests went out leaves the completed vehicles on the bad build. The
    next monitor pass sends them, once, and finishes the rollback when done."""
    from v2c.handlers.ota.campaigns.rollback import Rollbacks

    ota.package("1.0.0")
    campaign_id = ota.campaign(4, deployment_strategy="immediate", **QUIET)
    update_id = ota.campaigns.start(campaign_id).release.update_id
    vehicles = ota.notified()
    for vehicle in vehicles:
        ota.finish(vehicle, update_id, ok=True)
    real = Rollbacks._roll_back

    def died(*_args: object, **_kwargs: object) -> int:
        raise RuntimeError("the Lambda container was killed")

    monkeypatch.setattr(Rollbacks, "_roll_back", died)
    with pytest.raises(RuntimeError):
        ota.campaigns.rollback(campaign_id, reason="bad build")
    assert ota.campaigns.get(campaign_id).status.value == "rolling_back"
    assert ota.rollback_log.rows == {}
    monkeypatch.setattr(Rollbacks, "_roll_back", real)
    sent_before = len(ota.notifier.sent)
    assert ota.campaigns.monitor()["rollbacks_resumed"] == 4
    rollbacks = ota.notifier.sent[sent_before:]
    assert sorted(n.vehicle_id for n in rollbacks) == sorted(vehicles)
    assert {r["trigger"] for r in ota.rollback_log.rows.values()} == {"manual"}
    assert ota.campaigns.monitor()["rollbacks_resumed"] == 0  # nothing twice
    assert len(ota.notifier.sent) == sent_before + 4
    for vehicle in vehicles:
        ota.finish(vehicle, rollbacks[0].update_id, ok=True, to="1.0.0")
    ota.campaigns.monitor()
    final = ota.campaigns.get(campaign_id)
    assert final.status.value == "rolled_back"
    assert (final.counters.completed, final.counters.rolled_back) == (0, 4)
