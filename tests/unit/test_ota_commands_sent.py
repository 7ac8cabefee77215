"""Cancel and rollback decisions reach the vehicles: which signed command, or
which rollback manifest, went to whom, with which trigger and priority, on
the in-memory services (BR-OTA-024..026, 031..035, E4-US3 AC3)."""

from __future__ import annotations

import pytest
from ota_service_harness import TO_COMPLETION, Ota, S, fleet

from v2c.contract.errors import Conflict, InvalidField, SigningUnavailable, ValidationFailed
from v2c.handlers.ota.campaigns.rollback import send_command
from v2c.handlers.ota.domain.campaign_health import HealthPolicy
from v2c.handlers.ota.domain.counters import CampaignCounters
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.rollback_rules import (
    RollbackTrigger,
    automatic_trigger,
    rollback_status_reason,
    trigger_of,
    versions_ran,
)
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.in_memory_ports import RecordingCommands
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.handlers.ota.vehicle_commands import cancel_update
from v2c.v1.command_pb2 import (
    ROLLBACK_TRIGGER_FAILURE_RATE,
    ROLLBACK_TRIGGER_HEALTH_CHECK,
    ROLLBACK_TRIGGER_MANUAL,
    OTACommand,
)
from v2c.v1.ota_pb2 import UPDATE_PRIORITY_CRITICAL, OTAManifest, OTAStatus

Kind = OTACommand.Kind
VEHICLE = fleet(1)[0].vehicle_id


@pytest.fixture
def ota() -> Ota:
    return Ota()


def _manifest(raw: bytes) -> OTAManifest:
    manifest = OTAManifest()
    manifest.ParseFromString(raw)
    return manifest


def _walk(ota: Ota, vehicle: str, update_id: str, states: tuple[int, ...]) -> None:
    for state in states:
        ota.report(vehicle, update_id, state)


def _targets(ota: Ota, index: int = -1) -> list[str]:
    return sorted(t.vehicle_id for t in ota.commands.sent[index][1])


def _state(ota: Ota, vehicle: str, update_id: str) -> UpdateState:
    return ota.update_store.get(vehicle, update_id).state


# -- cancel ------------------------------------------------------------------------------


def test_a_campaign_cancel_sends_one_campaign_wide_cancel_to_every_vehicle_in_flight(
    ota: Ota,
) -> None:
    campaign_id = ota.campaign(5, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    done, installing, downloading, *notified = ota.notified()
    ota.finish(done, update_id, ok=True)
    _walk(ota, installing, update_id, TO_COMPLETION[:4])
    _walk(ota, downloading, update_id, TO_COMPLETION[:2])

    cancelled = ota.campaigns.cancel(campaign_id, "recall of 2.0.0")

    assert len(ota.commands.sent) == 1  # one command, signed once, for the whole campaign
    command, _ = ota.commands.sent[0]
    assert command.kind == Kind.CANCEL_UPDATE
    assert (command.vehicle_id, command.campaign_id, command.update_id) == (
        "",
        campaign_id,
        update_id,
    )
    assert command.reason == "recall of 2.0.0"
    assert _targets(ota) == sorted([installing, downloading, *notified])  # not the finished one
    assert _state(ota, installing, update_id) is UpdateState.INSTALLING  # it finishes
    assert {_state(ota, v, update_id) for v in (downloading, *notified)} == {UpdateState.CANCELLED}
    assert cancelled.counters.cancelled == 3


def test_a_cancel_whose_command_cannot_be_signed_still_stands_and_alerts(ota: Ota) -> None:
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    ota.campaigns.start(campaign_id)

    def unavailable(command: OTACommand, targets: object) -> list[bool]:
        raise SigningUnavailable("the HSM timed out")

    ota.commands.send = unavailable  # type: ignore[method-assign]
    cancelled = ota.campaigns.cancel(campaign_id)
    assert cancelled.status is CampaignStatus.CANCELLED
    assert cancelled.counters.cancelled == 3
    assert ota.alerts.names() == ["vehicle_command_unsent"]


def test_commands_go_out_in_chunks_of_the_same_command() -> None:
    sender = RecordingCommands()
    updates = [
        VehicleUpdate(v.vehicle_id, "u", UpdateKind.CAMPAIGN, "f", "2.0.0", region=v.region)
        for v in fleet(5)
    ]
    command = cancel_update(campaign_id="c", update_id="u", reason="stop", now_ms=1)
    assert send_command(sender, command, updates, chunk=2) == 0
    assert [len(targets) for _, targets in sender.sent] == [2, 2, 1]
    assert {c.command_id for c, _ in sender.sent} == {command.command_id}
    assert [t.vehicle_id for _, ts in sender.sent for t in ts] == [u.vehicle_id for u in updates]
    assert send_command(sender, command, []) == 0
    assert len(sender.sent) == 3  # nothing to tell, nothing sent


def test_a_completed_report_after_the_cloud_cancelled_records_the_truth_and_moves_nothing(
    ota: Ota,
) -> None:
    campaign_id = ota.campaign(
        6, deployment_strategy="canary", canary_size=3, max_concurrent_updates=10
    )
    update_id = ota.campaigns.start(campaign_id).release.update_id
    installing, unaware, other = ota.notified()
    _walk(ota, installing, update_id, TO_COMPLETION[:4])
    ota.campaigns.cancel(campaign_id)
    assert _state(ota, unaware, update_id) is UpdateState.CANCELLED
    notes_before = len(ota.notifier.sent)

    ota.report(installing, update_id, S.REBOOTING)
    ota.report(installing, update_id, S.VERIFYING)
    ota.report(installing, update_id, S.COMPLETED, installed="2.0.0")
    ota.finish(unaware, update_id, ok=True)  # it never got the cancel and installed

    campaign = ota.campaigns.get(campaign_id)
    assert campaign.status is CampaignStatus.CANCELLED  # final: no gate, no dispatch
    assert campaign.current_wave == 0
    assert len(ota.notifier.sent) == notes_before  # nobody notified, nothing rolled back
    assert {_state(ota, v, update_id) for v in (installing, unaware)} == {UpdateState.COMPLETED}
    assert _state(ota, other, update_id) is UpdateState.CANCELLED
    for vehicle in (installing, unaware):
        assert ota.fleet.get(vehicle).installed_version == "2.0.0"  # type: ignore[union-attr]
    counters = campaign.counters
    assert (counters.completed, counters.cancelled, counters.total) == (2, 4, 6)
    assert "campaign_auto_rollback" not in ota.alerts.names()


def test_a_device_cancel_tells_that_vehicle_alone(ota: Ota) -> None:
    ota.fleet.put(fleet(2))
    firmware_id = ota.package("2.0.0").firmware_id
    update = ota.devices.update_device(VEHICLE, {"firmware_id": firmware_id})
    ota.devices.cancel(update.device_update_id)
    [(command, targets)] = ota.commands.sent
    assert command.kind == Kind.CANCEL_UPDATE
    assert (command.vehicle_id, command.update_id, command.campaign_id) == (
        VEHICLE,
        update.update_id,
        "",
    )
    assert [t.vehicle_id for t in targets] == [VEHICLE]


def test_a_device_cancel_refused_while_installing_sends_nothing(ota: Ota) -> None:
    ota.fleet.put(fleet(1))
    update = ota.devices.update_device(VEHICLE, {"firmware_id": ota.package().firmware_id})
    _walk(ota, VEHICLE, update.update_id, TO_COMPLETION[:4])
    with pytest.raises(Conflict):
        ota.devices.cancel(update.device_update_id)
    assert ota.commands.sent == []


# -- campaign rollback --------------------------------------------------------------------


def _rolling_campaign(ota: Ota, *, fail: int, batch_size: int = 20) -> tuple[str, str, list[str]]:
    """20 vehicles on 1.0.0; the first ten finish: seven complete and three
    end as `fail` (a state, with the vehicle's reason); two more are installing."""
    ota.package("1.0.0")
    campaign_id = ota.campaign(
        20, deployment_strategy="immediate", max_concurrent_updates=20, batch_size=batch_size
    )
    update_id = ota.campaigns.start(campaign_id).release.update_id
    vehicles = ota.notified()
    for vehicle in vehicles[10:12]:
        _walk(ota, vehicle, update_id, TO_COMPLETION[:4])
    for vehicle in vehicles[:7]:
        ota.finish(vehicle, update_id, ok=True)
    for vehicle in vehicles[7:10]:
        _walk(ota, vehicle, update_id, TO_COMPLETION)
        reason = OTAStatus.BOOT_FAILURE if fail == S.ROLLED_BACK else OTAStatus.FLASH_WRITE_FAILURE
        ota.report(vehicle, update_id, fail, reason=reason)
    return campaign_id, update_id, vehicles


def test_the_failure_threshold_rolls_back_with_commands_in_flight_and_manifests_for_the_done(
    ota: Ota,
) -> None:
    campaign_id, update_id, vehicles = _rolling_campaign(ota, fail=S.ROLLED_BACK)
    rolling = ota.campaigns.get(campaign_id)
    assert rolling.status is CampaignStatus.ROLLING_BACK
    assert rolling.status_reason.startswith("health_check: failure rate")

    # In flight (not completed, not ended): one campaign-wide ROLL_BACK.
    [(command, targets)] = ota.commands.sent
    assert command.kind == Kind.ROLL_BACK
    assert (command.vehicle_id, command.update_id) == ("", update_id)
    assert command.trigger == ROLLBACK_TRIGGER_HEALTH_CHECK
    assert sorted(t.vehicle_id for t in targets) == sorted(vehicles[10:])
    assert {_state(ota, v, update_id) for v in vehicles[12:]} == {UpdateState.CANCELLED}
    assert {_state(ota, v, update_id) for v in vehicles[10:12]} == {UpdateState.INSTALLING}

    # Completed: the signed rollback manifest, critical, one signature per version.
    rollbacks = ota.notifier.sent[20:]
    assert sorted(n.vehicle_id for n in rollbacks) == sorted(vehicles[:7])
    manifests = [_manifest(n.manifest) for n in rollbacks]
    assert {(m.is_rollback, m.version, m.priority) for m in manifests} == {
        (True, "1.0.0", UPDATE_PRIORITY_CRITICAL)
    }
    assert len({n.signature for n in rollbacks}) == 1
    rows = list(ota.rollback_log.rows.values())
    assert {(r["trigger"], r["requested_by"]) for r in rows} == {("health_check", "auto")}
    assert {d["trigger"] for t, d in ota.events.events if t == "rollback.initiated"} == {
        "health_check"
    }

    # One of the two installing completes: it gets the rollback as well.
    late, failing = vehicles[10:12]
    ota.report(late, update_id, S.REBOOTING)
    ota.report(late, update_id, S.VERIFYING)
    ota.report(late, update_id, S.COMPLETED, installed="2.0.0")
    [late_note] = ota.notifier.sent[27:]
    assert late_note.vehicle_id == late
    assert late_note.update_id == rollbacks[0].update_id  # the same rollback release
    assert _manifest(late_note.manifest).priority == UPDATE_PRIORITY_CRITICAL
    assert ota.rollback_log.rows[(late, late_note.update_id)]["trigger"] == "health_check"

    for note in ota.notifier.sent[20:]:
        ota.finish(note.vehicle_id, note.update_id, ok=True, to="1.0.0")
    # Every rollback done, but one vehicle is still installing: not over yet.
    assert ota.campaigns.get(campaign_id).status is CampaignStatus.ROLLING_BACK
    ota.report(failing, update_id, S.REBOOTING)
    ota.report(failing, update_id, S.FAILED)
    done = ota.campaigns.get(campaign_id)
    assert done.status is CampaignStatus.ROLLED_BACK
    counters = done.counters
    assert (counters.rolled_back, counters.completed, counters.failed) == (3 + 8, 0, 1)
    assert (counters.cancelled, counters.in_progress, counters.total) == (8, 0, 20)
    for vehicle in [*vehicles[:7], late]:
        assert ota.fleet.get(vehicle).installed_version == "1.0.0"  # type: ignore[union-attr]


def test_failed_updates_make_the_trigger_the_failure_rate(ota: Ota) -> None:
    campaign_id, _, _ = _rolling_campaign(ota, fail=S.FAILED)
    rolling = ota.campaigns.get(campaign_id)
    assert rolling.status_reason.startswith("failure_rate: ")
    assert ota.commands.sent[0][0].trigger == ROLLBACK_TRIGGER_FAILURE_RATE
    assert {r["trigger"] for r in ota.rollback_log.rows.values()} == {"failure_rate"}


def test_rollback_manifests_go_out_in_chunks_of_the_campaign_batch_size(ota: Ota) -> None:
    campaign_id, _, _ = _rolling_campaign(ota, fail=S.FAILED, batch_size=3)
    assert ota.campaigns.get(campaign_id).status is CampaignStatus.ROLLING_BACK
    assert len(ota.notifier.sent) == 20 + 7
    assert ota.notifier.chunks[-3:] == [3, 3, 1]


def test_a_manual_campaign_rollback_is_triggered_manual(ota: Ota) -> None:
    ota.package("1.0.0")
    campaign_id = ota.campaign(4, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    first, *others = ota.notified()
    ota.finish(first, update_id, ok=True)
    rolling = ota.campaigns.rollback(campaign_id, reason="field reports")
    assert rolling.status_reason == "manual: field reports"
    [(command, targets)] = ota.commands.sent
    assert (command.kind, command.trigger, command.reason) == (
        Kind.ROLL_BACK,
        ROLLBACK_TRIGGER_MANUAL,
        "field reports",
    )
    assert sorted(t.vehicle_id for t in targets) == sorted(others)
    [row] = ota.rollback_log.rows.values()
    assert (row["vehicle_id"], row["trigger"], row["requested_by"]) == (
        first,
        "manual",
        "fleet-manager",
    )


def test_the_monitor_can_roll_back_with_the_timeout_trigger(ota: Ota) -> None:
    ota.package("1.0.0")
    campaign_id = ota.campaign(2, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    ota.finish(ota.notified()[0], update_id, ok=True)
    rolling = ota.campaigns.rollback(
        campaign_id, reason="updates overran 60 min", trigger=RollbackTrigger.TIMEOUT
    )
    assert rolling.status_reason == "timeout: updates overran 60 min"
    assert {r["trigger"] for r in ota.rollback_log.rows.values()} == {"timeout"}


# -- the trigger rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counters", "expected"),
    [
        (CampaignCounters(completed=7, rolled_back=3), RollbackTrigger.HEALTH_CHECK),
        (CampaignCounters(completed=7, failed=2, rolled_back=2), RollbackTrigger.HEALTH_CHECK),
        (CampaignCounters(completed=7, failed=3), RollbackTrigger.FAILURE_RATE),
        (CampaignCounters(completed=7, failed=1, timed_out=2), RollbackTrigger.TIMEOUT),
        (CampaignCounters(completed=7, failed=2, rolled_back=1), RollbackTrigger.FAILURE_RATE),
        # Three failures of twelve targets before ten finished: a count, not a rate.
        (CampaignCounters(pending=5, in_progress=4, failed=3), RollbackTrigger.ERROR_THRESHOLD),
    ],
)
def test_an_automatic_rollback_is_classified_by_what_failed(
    counters: CampaignCounters, expected: RollbackTrigger
) -> None:
    assert automatic_trigger(counters, HealthPolicy()) is expected


def test_the_trigger_leads_the_status_reason_and_is_read_back() -> None:
    for trigger in RollbackTrigger:
        assert trigger_of(rollback_status_reason(trigger, "why: because")) is trigger
    assert trigger_of("paused by a fleet manager") is None
    assert trigger_of("holiday: closed") is None


def test_an_error_count_above_the_threshold_rolls_back_as_error_threshold(ota: Ota) -> None:
    ota.package("1.0.0")
    campaign_id = ota.campaign(10, deployment_strategy="immediate", max_concurrent_updates=10)
    update_id = ota.campaigns.start(campaign_id).release.update_id
    for vehicle in ota.notified()[:3]:
        _walk(ota, vehicle, update_id, TO_COMPLETION)
        ota.report(vehicle, update_id, S.FAILED, reason=OTAStatus.FLASH_WRITE_FAILURE)
    rolled = ota.campaigns.get(campaign_id)
    assert rolled.status is CampaignStatus.ROLLED_BACK  # nothing completed, nothing installing
    assert rolled.status_reason.startswith("error_threshold: ")
    [(command, targets)] = ota.commands.sent
    assert (command.kind, len(targets)) == (Kind.ROLL_BACK, 7)


# -- device rollback: history, reason, names ---------------------------------------------


def _completed_update(ota: Ota, version: str) -> None:
    firmware_id = ota.package(version).firmware_id
    update = ota.devices.update_device(VEHICLE, {"firmware_id": firmware_id})
    ota.finish(VEHICLE, update.update_id, ok=True, to=version)


def test_a_device_rollback_goes_only_to_a_version_the_vehicle_ran(ota: Ota) -> None:
    ota.fleet.put(fleet(1))
    ota.package("1.0.0")
    ota.package("1.5.0")  # registered, but this vehicle never ran it
    _completed_update(ota, "2.0.0")
    with pytest.raises(InvalidField) as refused:
        ota.devices.rollback(VEHICLE, {"to_version": "1.5.0", "reason": "try"})
    assert refused.value.field == "to_version"
    assert "never ran 1.5.0" in refused.value.detail
    assert ota.rollback_log.rows == {}

    rollback = ota.devices.rollback(VEHICLE, {"to_version": "1.0.0", "reason": "complaints"})
    assert (rollback.to_version, rollback.from_version) == ("1.0.0", "2.0.0")
    note = ota.notifier.sent[-1]
    manifest = _manifest(note.manifest)
    assert (manifest.is_rollback, manifest.priority) == (True, UPDATE_PRIORITY_CRITICAL)
    [row] = ota.rollback_log.rows.values()
    assert (row["trigger"], row["reason"], row["requested_by"]) == (
        "manual",
        "complaints",
        "fleet-manager",
    )
    initiated = [d for t, d in ota.events.events if t == "rollback.initiated"]
    assert initiated[-1]["from_version"] == "2.0.0"
    assert initiated[-1]["trigger"] == "manual"


def test_version_is_still_taken_for_to_version(ota: Ota) -> None:
    ota.fleet.put(fleet(1))
    ota.package("1.0.0")
    _completed_update(ota, "2.0.0")
    assert ota.devices.rollback(VEHICLE, {"version": "1.0.0", "reason": "r"}).to_version == "1.0.0"


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}, {"to_version": "1.0.0"}])
def test_a_device_rollback_needs_a_reason(ota: Ota, body: dict[str, str]) -> None:
    ota.fleet.put(fleet(1))
    ota.package("1.0.0")
    _completed_update(ota, "2.0.0")
    with pytest.raises(ValidationFailed, match="reason"):
        ota.devices.rollback(VEHICLE, body)


def test_versions_ran_reads_completed_and_reverted_updates() -> None:
    def past(state: UpdateState, from_version: str, to_version: str) -> VehicleUpdate:
        return VehicleUpdate(
            VEHICLE, "u", UpdateKind.DEVICE, "f", to_version, from_version, state=state
        )

    history = [
        past(UpdateState.COMPLETED, "1.0.0", "1.1.0"),
        past(UpdateState.ROLLED_BACK, "1.1.0", "1.2.0"),  # the vehicle undid 1.2.0
        past(UpdateState.FAILED, "1.1.0", "1.3.0"),
        past(UpdateState.CANCELLED, "1.1.0", "1.4.0"),
    ]
    assert versions_ran(history) == {"1.0.0", "1.1.0"}
    assert versions_ran(history, factory_version="0.9.0") == {"0.9.0", "1.0.0", "1.1.0"}


# -- device update: the PRD's field names ---------------------------------------------------


def test_force_update_is_signed_into_the_manifest(ota: Ota) -> None:
    first, second, third = (v.vehicle_id for v in fleet(3))
    ota.fleet.put(fleet(3))
    firmware_id = ota.package("1.0.0").firmware_id
    with pytest.raises(Conflict, match="force_update"):
        ota.devices.update_device(first, {"firmware_id": firmware_id})
    update = ota.devices.update_device(first, {"firmware_id": firmware_id, "force_update": True})
    assert _manifest(update.manifest).force_update
    forced = ota.devices.update_device(second, {"firmware_id": firmware_id, "force": True})
    assert _manifest(forced.manifest).force_update  # the old name still works
    plain = ota.devices.update_device(third, {"firmware_id": ota.package().firmware_id})
    assert not _manifest(plain.manifest).force_update


def test_max_retries_and_timeout_are_stored_on_the_update(ota: Ota) -> None:
    ota.fleet.put(fleet(1))
    firmware_id = ota.package().firmware_id
    update = ota.devices.update_device(
        VEHICLE, {"firmware_id": firmware_id, "max_retries": 0, "timeout_minutes": 90}
    )
    assert (update.max_retries, update.timeout_ms) == (0, 90 * 60_000)
    stored = ota.devices.get(update.device_update_id)
    assert (stored.max_retries, stored.timeout_ms) == (0, 90 * 60_000)
    _walk(ota, VEHICLE, update.update_id, TO_COMPLETION[:2])
    ota.report(VEHICLE, update.update_id, S.FAILED)
    with pytest.raises(Conflict, match="retry limit"):
        ota.devices.retry(update.device_update_id)  # max_retries 0: no retry


def test_the_defaults_are_three_retries_and_an_hour(ota: Ota) -> None:
    ota.fleet.put(fleet(1))
    update = ota.devices.update_device(VEHICLE, {"firmware_id": ota.package().firmware_id})
    assert (update.max_retries, update.timeout_ms) == (3, 60 * 60_000)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"max_retries": 11}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout_minutes": 4}, "timeout_minutes"),
        ({"timeout_minutes": 1441}, "timeout_minutes"),
    ],
)
def test_limits_out_of_range_are_refused(ota: Ota, extra: dict[str, int], field: str) -> None:
    ota.fleet.put(fleet(1))
    with pytest.raises(ValidationFailed, match=field):
        ota.devices.update_device(VEHICLE, {"firmware_id": ota.package().firmware_id, **extra})
