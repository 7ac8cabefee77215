"""`CampaignService` over the in-memory stores: dispatch, gate, pause, cancel, rollback.

The moto-backed `tests/integration/test_ota_campaign_service.py` proves the
DynamoDB and S3 adapters keep the same contract; these scenarios prove the
orchestration, in milliseconds.
"""

from __future__ import annotations

import pytest
from ota_service_harness import Ota, S, fleet

from v2c.contract.errors import Conflict, Forbidden, InvalidField
from v2c.handlers.ota.campaigns.deps import CampaignConfig
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import UpdateState


@pytest.fixture
def ota() -> Ota:
    return Ota()


def _release(ota: Ota, campaign_id: str) -> str:
    return ota.campaigns.get(campaign_id).release.update_id


# -- dispatch -------------------------------------------------------------------------


def test_an_immediate_campaign_notifies_in_batches_and_completes(ota: Ota) -> None:
    campaign_id = ota.campaign(25, deployment_strategy="immediate", max_concurrent_updates=10)
    assert ota.notified() == []
    started = ota.campaigns.start(campaign_id)
    assert (started.cursor, started.counters.in_progress, started.counters.pending) == (10, 10, 15)
    update_id = started.release.update_id
    done = 0
    while done < 25:
        batch = ota.notified()[done:]
        assert batch, "dispatch stopped early"
        for vehicle in batch:
            ota.finish(vehicle, update_id, ok=True)
        done += len(batch)
    final = ota.campaigns.get(campaign_id)
    assert final.status is CampaignStatus.COMPLETED
    assert (final.cursor, final.counters.completed, final.counters.total) == (25, 25, 25)
    assert sorted(ota.notified()) == [v.vehicle_id for v in fleet(25)]
    assert ota.fleet.get(fleet(1)[0].vehicle_id).installed_version == "2.0.0"  # type: ignore[union-attr]
    assert ota.event_types()[-1] == "campaign.completed"


def test_each_notified_vehicle_gets_a_record_at_its_wave(ota: Ota) -> None:
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    ota.campaigns.start(campaign_id)
    records = list(ota.update_store.for_campaign(campaign_id))
    assert len(records) == 3
    assert {r.state for r in records} == {UpdateState.NOTIFIED}
    assert {r.wave for r in records} == {0}
    assert {r.from_version for r in records} == {"1.0.0"}


def test_advancing_again_notifies_nobody_twice(ota: Ota) -> None:
    campaign_id = ota.campaign(5, deployment_strategy="immediate")
    ota.campaigns.start(campaign_id)
    assert ota.campaigns.advance(campaign_id).notified == 0
    assert ota.campaigns.monitor()["notified"] == 0
    assert sorted(ota.notified()) == sorted(set(ota.notified()))


def test_a_dead_lettered_notification_still_counts_the_vehicle_as_notified() -> None:
    ota = Ota()
    ota.notifier.deliver = False  # the DLQ has it; the monitor re-notifies
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    assert ota.campaigns.advance(campaign_id).notified == 0  # not started yet
    started = ota.campaigns.start(campaign_id)
    assert (started.cursor, started.counters.in_progress) == (3, 3)


def test_a_second_dispatcher_waits_for_the_lease(ota: Ota) -> None:
    campaign_id = ota.campaign(5, deployment_strategy="immediate", max_concurrent_updates=2)
    ota.campaigns.start(campaign_id)
    campaign = ota.campaign_store.get(campaign_id)
    now_ms = int(ota.clock() * 1000)
    assert ota.campaign_store.acquire_lease(campaign, "someone-else", now_ms, 60_000) is not None
    ota.finish(ota.notified()[0], campaign.release.update_id, ok=True)  # frees a slot
    assert len(ota.notified()) == 2  # the other dispatcher holds the campaign
    ota.clock.advance(61)  # its lease expires
    assert ota.campaigns.advance(campaign_id).notified == 1


def test_a_release_close_to_expiry_is_signed_again_before_dispatch() -> None:
    ota = Ota(config=CampaignConfig(resign_before_ms=10**15))  # everything is "close"
    campaign_id = ota.campaign(2, deployment_strategy="immediate")
    before = ota.campaigns.get(campaign_id).release
    ota.clock.advance(60)
    ota.campaigns.start(campaign_id)
    after = ota.campaigns.get(campaign_id).release
    assert after.update_id == before.update_id  # the same update for the vehicles
    assert after.expires_at_ms > before.expires_at_ms
    assert ota.notifier.sent[0].manifest == after.manifest


def test_no_eligible_vehicle_refuses_the_campaign(ota: Ota) -> None:
    ota.fleet.put(fleet(3, version="2.0.0"))
    package = ota.package("2.0.0")
    with pytest.raises(InvalidField) as caught:
        ota.campaigns.create(
            {"name": "n", "firmware_id": package.firmware_id, "target_filter": "year > 0"}
        )
    assert "3 excluded" in caught.value.detail
    assert ota.campaigns.list_campaigns()[0] == []


# -- the canary gate ---------------------------------------------------------------


def test_a_canary_that_completes_passes_the_gate_and_rolls_out(ota: Ota) -> None:
    campaign_id = ota.campaign(
        40, deployment_strategy="canary", canary_size=10, max_concurrent_updates=100
    )
    started = ota.campaigns.start(campaign_id)
    assert [w.name for w in started.waves] == ["canary", "rollout"]
    canary = ota.notified()
    assert len(canary) == 10
    for vehicle in canary:
        ota.finish(vehicle, started.release.update_id, ok=True)
    after = ota.campaigns.get(campaign_id)
    assert after.gate is not None
    assert after.gate["verdict"] == "pass"
    assert after.current_wave == 1
    assert len(ota.notified()) == 40
    assert "campaign.gate_passed" in ota.event_types()


def test_canary_failures_pause_the_campaign_and_nobody_else_is_notified(ota: Ota) -> None:
    campaign_id = ota.campaign(40, deployment_strategy="canary", canary_size=10)
    started = ota.campaigns.start(campaign_id)
    for number, vehicle in enumerate(ota.notified()):
        ota.finish(vehicle, started.release.update_id, ok=number >= 2)
    paused = ota.campaigns.get(campaign_id)
    assert paused.status is CampaignStatus.PAUSED
    assert len(ota.notified()) == 10
    assert (paused.counters.completed, paused.counters.rolled_back) == (8, 2)
    assert ota.alerts.names()


def test_a_gate_still_waiting_holds_the_next_wave(ota: Ota) -> None:
    campaign_id = ota.campaign(40, deployment_strategy="canary", canary_size=10)
    started = ota.campaigns.start(campaign_id)
    for vehicle in ota.notified()[:5]:
        ota.finish(vehicle, started.release.update_id, ok=True)
    report = ota.campaigns.advance(campaign_id)
    assert (report.notified, report.gate) == (0, "wait")
    assert ota.campaigns.get(campaign_id).current_wave == 0


# -- pause, resume, cancel ------------------------------------------------------------


def test_pause_stops_dispatch_and_resume_continues_at_the_cursor(ota: Ota) -> None:
    campaign_id = ota.campaign(6, deployment_strategy="immediate", max_concurrent_updates=2)
    update_id = ota.campaigns.start(campaign_id).release.update_id
    paused = ota.campaigns.pause(campaign_id, "holiday")
    assert (paused.status, paused.status_reason) == (CampaignStatus.PAUSED, "holiday")
    for vehicle in ota.notified():
        ota.finish(vehicle, update_id, ok=True)
    assert len(ota.notified()) == 2  # nobody new while paused
    resumed = ota.campaigns.resume(campaign_id)
    assert resumed.status is CampaignStatus.IN_PROGRESS
    assert resumed.cursor == 4
    assert ota.notified()[2:] == [t.vehicle_id for t in ota.plans.read(campaign_id, 2, 4)]


def test_a_rule_conflict_is_answered_at_once_not_retried(ota: Ota) -> None:
    campaign_id = ota.campaign(2, deployment_strategy="immediate")
    with pytest.raises(Conflict, match="cannot pause a campaign that is created"):
        ota.campaigns.pause(campaign_id)


def test_cancel_counts_unnotified_targets_and_cancels_notified_updates(ota: Ota) -> None:
    campaign_id = ota.campaign(25, deployment_strategy="immediate", max_concurrent_updates=5)
    update_id = ota.campaigns.start(campaign_id).release.update_id
    installing = ota.notified()[0]
    for state in (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING):
        ota.report(installing, update_id, state)
    cancelled = ota.campaigns.cancel(campaign_id)
    assert cancelled.status is CampaignStatus.CANCELLED
    c = cancelled.counters
    assert (c.pending, c.in_progress, c.cancelled, c.total) == (0, 1, 24, 25)
    assert cancelled.wave_counters[0].cancelled == 24
    assert ota.update_store.get(installing, update_id).state is UpdateState.INSTALLING
    assert ota.campaigns.advance(campaign_id).notified == 0


def test_only_someone_else_may_approve(ota: Ota) -> None:
    ota.fleet.put(fleet(2))
    package = ota.package()
    body = {
        "name": "n",
        "firmware_id": package.firmware_id,
        "target_filter": "year > 0",
        "requires_approval": True,
    }
    campaign_id = ota.campaigns.create(body, created_by="alice").campaign.campaign_id
    with pytest.raises(Conflict):
        ota.campaigns.start(campaign_id)
    with pytest.raises(Forbidden):
        ota.campaigns.approve(campaign_id, "alice")
    assert ota.campaigns.approve(campaign_id, "bob").approved_by == "bob"
    assert ota.campaigns.start(campaign_id).status is CampaignStatus.IN_PROGRESS


# -- rollback ----------------------------------------------------------------------------


def test_the_failure_threshold_rolls_back_completed_vehicles_automatically(ota: Ota) -> None:
    ota.package("1.0.0")
    campaign_id = ota.campaign(20, deployment_strategy="immediate", max_concurrent_updates=20)
    update_id = ota.campaigns.start(campaign_id).release.update_id
    vehicles = ota.notified()
    for number, vehicle in enumerate(vehicles[:10]):
        ota.finish(vehicle, update_id, ok=number >= 3)
    rolling = ota.campaigns.get(campaign_id)
    assert rolling.status is CampaignStatus.ROLLING_BACK
    assert "campaign_auto_rollback" in ota.alerts.names()
    assert rolling.counters.cancelled == 10  # the ten not finished
    rollbacks = ota.notifier.sent[20:]
    assert len(rollbacks) == 7  # the seven that completed
    assert {r.update_id for r in rollbacks} == {rollbacks[0].update_id}  # signed once
    assert {row["requested_by"] for row in ota.rollback_log.rows.values()} == {"auto"}
    for note in rollbacks:
        ota.finish(note.vehicle_id, note.update_id, ok=True, to="1.0.0")
    done = ota.campaigns.get(campaign_id)
    assert done.status is CampaignStatus.ROLLED_BACK
    assert (done.counters.rolled_back, done.counters.completed, done.counters.total) == (10, 0, 20)


def test_a_manual_rollback_of_a_completed_campaign(ota: Ota) -> None:
    ota.package("1.0.0")
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    for vehicle in ota.notified():
        ota.finish(vehicle, update_id, ok=True)
    assert ota.campaigns.get(campaign_id).status is CampaignStatus.COMPLETED
    rolling = ota.campaigns.rollback(campaign_id, reason="field reports")
    assert (rolling.status, rolling.status_reason) == (
        CampaignStatus.ROLLING_BACK,
        "manual: field reports",  # the trigger leads (BR-OTA-031)
    )
    rollbacks = ota.notifier.sent[3:]
    assert sorted(n.vehicle_id for n in rollbacks) == sorted(ota.notified()[:3])
    assert {row["requested_by"] for row in ota.rollback_log.rows.values()} == {"fleet-manager"}
    for note in rollbacks:
        ota.finish(note.vehicle_id, note.update_id, ok=True, to="1.0.0")
    assert ota.campaigns.get(campaign_id).status is CampaignStatus.ROLLED_BACK
    assert ota.fleet.get(rollbacks[0].vehicle_id).installed_version == "1.0.0"  # type: ignore[union-attr]


def test_a_rollback_with_nothing_to_send_is_rolled_back_at_once(ota: Ota) -> None:
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    ota.campaigns.start(campaign_id)
    assert ota.campaigns.rollback(campaign_id).status is CampaignStatus.ROLLED_BACK


# -- races and monitoring ----------------------------------------------------------------


def test_a_command_that_loses_a_race_reads_again_and_wins(ota: Ota) -> None:
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    ota.campaigns.start(campaign_id)
    ota.campaign_store.conflicts = 3  # three other writers got there first
    assert ota.campaigns.pause(campaign_id).status is CampaignStatus.PAUSED


def test_a_campaign_that_keeps_changing_answers_409_after_the_configured_attempts() -> None:
    ota = Ota(config=CampaignConfig(conflict_retries=2))
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    ota.campaigns.start(campaign_id)
    ota.campaign_store.conflicts = 2
    with pytest.raises(Conflict, match="keeps changing"):
        ota.campaigns.pause(campaign_id)
    assert ota.campaigns.get(campaign_id).status is CampaignStatus.IN_PROGRESS


def test_a_campaign_without_progress_for_a_day_is_flagged_once(ota: Ota) -> None:
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    ota.campaigns.start(campaign_id)
    ota.clock.advance(25 * 3600)
    assert ota.campaigns.monitor()["stalled"] == 1
    assert ota.campaigns.get(campaign_id).stalled
    assert ota.campaigns.monitor()["stalled"] == 0
    assert ota.alerts.names().count("campaign_stalled") == 1
