"""Update timeouts enforced by the monitor (BR-OTA-018/025, NFR-8; retries BR-OTA-024),
on the in-memory services with a simulated clock: who is timed out and when,
what is counted, what the vehicle is sent, how the campaign reacts."""

from __future__ import annotations

import pytest
from ota_service_harness import TO_COMPLETION, Ota, S, fleet

from v2c.handlers.ota.campaigns.timeouts import Timeouts
from v2c.handlers.ota.domain.counters import CampaignCounters
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.timeouts import (
    DueKind,
    deadline_passed,
    due_at,
    due_shard,
    timeout_ms,
)
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.v1.command_pb2 import OTACommand

MINUTE = 60.0
QUIET = {"pause_threshold_percent": 100, "failure_threshold_percent": 100}


@pytest.fixture
def ota() -> Ota:
    return Ota()


def _release(ota: Ota, campaign_id: str) -> str:
    return ota.campaigns.get(campaign_id).release.update_id


def _cancels(ota: Ota, vehicle_id: str) -> list[OTACommand]:
    return [c for c in ota.commands.to(vehicle_id) if c.kind == OTACommand.CANCEL_UPDATE]


def _counts(counters: CampaignCounters) -> dict[str, int]:
    return {
        "in_progress": counters.in_progress,
        "completed": counters.completed,
        "failed": counters.failed,
        "timed_out": counters.timed_out,
        "total": counters.total,
    }


# -- the deadline -------------------------------------------------------------------


def test_each_record_carries_its_campaigns_timeout_and_sits_in_the_due_index(ota: Ota) -> None:
    campaign_id = ota.campaign(2, deployment_strategy="immediate", timeout_minutes=7)
    ota.campaigns.start(campaign_id)
    record = next(iter(ota.update_store.for_campaign(campaign_id)))
    assert record.timeout_ms == timeout_ms(7)
    assert due_at(record) == record.notified_at_ms + 7 * 60_000
    assert due_shard(DueKind.TIMEOUT, record.vehicle_id).startswith("timeout#")
    now = record.notified_at_ms
    assert ota.update_store.due(DueKind.TIMEOUT, now + 7 * 60_000 - 1, 10) == []
    assert len(ota.update_store.due(DueKind.TIMEOUT, now + 7 * 60_000, 10)) == 2
    ota.finish(record.vehicle_id, record.update_id, ok=True)
    finished = ota.update_store.get(record.vehicle_id, record.update_id)
    assert due_at(finished) is None  # ended: out of the index
    assert len(ota.update_store.due(DueKind.TIMEOUT, now + 7 * 60_000, 10)) == 1


def test_an_update_past_its_deadline_is_timed_out_counted_and_cancelled_on_the_vehicle(
    ota: Ota,
) -> None:
    campaign_id = ota.campaign(
        3, deployment_strategy="immediate", timeout_minutes=5, max_retries=0, **QUIET
    )
    ota.campaigns.start(campaign_id)
    update_id = _release(ota, campaign_id)
    done, downloading, silent = ota.notified()
    ota.finish(done, update_id, ok=True)
    ota.report(downloading, update_id, S.ACCEPTED)
    ota.report(downloading, update_id, S.DOWNLOADING)

    ota.clock.advance(4 * MINUTE)
    assert ota.campaigns.monitor()["timed_out"] == 0
    ota.clock.advance(1 * MINUTE)
    report = ota.campaigns.monitor()

    assert (report["timed_out"], report["retried"]) == (2, 0)
    campaign = ota.campaigns.get(campaign_id)
    assert _counts(campaign.counters) == {
        "in_progress": 0,
        "completed": 1,
        "failed": 0,
        "timed_out": 2,
        "total": 3,
    }
    assert campaign.counters.failures == 2  # a timeout is a failure for the rates
    assert campaign.status is CampaignStatus.COMPLETED  # nothing outstanding any more
    for vehicle in (downloading, silent):
        record = ota.update_store.get(vehicle, update_id)
        assert record.state is UpdateState.TIMED_OUT
        assert record.decided_by_cloud
        [cancel] = _cancels(ota, vehicle)
        assert (cancel.vehicle_id, cancel.update_id, cancel.campaign_id) == (
            vehicle,
            update_id,
            campaign_id,
        )
    assert _cancels(ota, done) == []
    assert ota.event_types().count("update.timed_out") == 2
    assert ota.campaigns.monitor()["timed_out"] == 0  # a second pass finds nothing more


def test_a_deferred_vehicle_is_not_timed_out_before_its_deadline_nor_spared_after(
    ota: Ota,
) -> None:
    campaign_id = ota.campaign(
        1, deployment_strategy="immediate", timeout_minutes=30, max_retries=0, **QUIET
    )
    ota.campaigns.start(campaign_id)
    update_id = _release(ota, campaign_id)
    [vehicle] = ota.notified()
    ota.clock.advance(10 * MINUTE)
    ota.report(vehicle, update_id, S.DEFERRED)  # waiting for battery: still in flight
    ota.clock.advance(20 * MINUTE - 1)
    assert ota.campaigns.monitor()["timed_out"] == 0
    assert ota.update_store.get(vehicle, update_id).state is UpdateState.DEFERRED
    ota.clock.advance(1)
    assert ota.campaigns.monitor()["timed_out"] == 1
    assert ota.update_store.get(vehicle, update_id).state is UpdateState.TIMED_OUT


def test_with_retries_left_a_timed_out_vehicle_is_notified_again_then_failed_for_good(
    ota: Ota,
) -> None:
    campaign_id = ota.campaign(
        2, deployment_strategy="immediate", timeout_minutes=5, max_retries=2, **QUIET
    )
    ota.campaigns.start(campaign_id)
    update_id = _release(ota, campaign_id)
    answering, silent = ota.notified()
    ota.report(answering, update_id, S.ACCEPTED)

    for attempt in (1, 2):
        ota.clock.advance(5 * MINUTE)
        report = ota.campaigns.monitor()
        assert (report["retried"], report["timed_out"]) == (2, 0)
        record = ota.update_store.get(silent, update_id)
        assert (record.state, record.retries) == (UpdateState.NOTIFIED, attempt)
        assert record.notifications == attempt + 1
        assert record.notified_at_ms == int(ota.clock.now * 1000)  # a new deadline
        counters = ota.campaigns.get(campaign_id).counters
        assert (counters.in_progress, counters.failures) == (2, 0)  # no failure counted
    assert ota.notified().count(silent) == 3
    assert _cancels(ota, silent) == []  # a retry is a re-notification, never a cancel

    ota.clock.advance(5 * MINUTE - 1)
    assert ota.campaigns.monitor()["timed_out"] == 0
    ota.clock.advance(1)
    report = ota.campaigns.monitor()
    assert (report["retried"], report["timed_out"]) == (0, 2)
    assert ota.update_store.get(silent, update_id).state is UpdateState.TIMED_OUT
    assert len(_cancels(ota, silent)) == 1
    assert ota.campaigns.get(campaign_id).counters.timed_out == 2


def test_a_paused_campaign_times_out_without_retrying(ota: Ota) -> None:
    campaign_id = ota.campaign(1, deployment_strategy="immediate", timeout_minutes=5, **QUIET)
    ota.campaigns.start(campaign_id)
    ota.campaigns.pause(campaign_id)
    ota.clock.advance(5 * MINUTE)
    report = ota.campaigns.monitor()
    assert (report["retried"], report["timed_out"]) == (0, 1)


def test_a_late_completed_after_a_timeout_is_the_truth_about_the_vehicle(ota: Ota) -> None:
    campaign_id = ota.campaign(
        1, deployment_strategy="immediate", timeout_minutes=5, max_retries=0, **QUIET
    )
    ota.campaigns.start(campaign_id)
    update_id = _release(ota, campaign_id)
    [vehicle] = ota.notified()
    ota.report(vehicle, update_id, S.ACCEPTED)
    ota.clock.advance(6 * MINUTE)
    ota.campaigns.monitor()
    assert ota.campaigns.get(campaign_id).counters.timed_out == 1

    assert ota.report(vehicle, update_id, S.INSTALLING).outcome.value == "terminal"
    ota.report(vehicle, update_id, S.COMPLETED, installed="2.0.0")

    record = ota.update_store.get(vehicle, update_id)
    assert record.state is UpdateState.COMPLETED
    counters = ota.campaigns.get(campaign_id).counters
    assert (counters.completed, counters.timed_out, counters.total) == (1, 0, 1)
    assert ota.fleet.get(vehicle).installed_version == "2.0.0"  # type: ignore[union-attr]


# -- the campaign reacts ------------------------------------------------------------


def test_canary_vehicles_that_time_out_fail_the_gate_and_nobody_else_is_notified(
    ota: Ota,
) -> None:
    campaign_id = ota.campaign(
        100,
        deployment_strategy="canary",
        canary_size=10,
        max_concurrent_updates=100,
        timeout_minutes=5,
        max_retries=0,
        pause_threshold_percent=50,
        failure_threshold_percent=100,
    )
    ota.campaigns.start(campaign_id)
    update_id = _release(ota, campaign_id)
    canary = ota.notified()
    assert len(canary) == 10
    for vehicle in canary[:9]:
        ota.finish(vehicle, update_id, ok=True)
    assert ota.campaigns.get(campaign_id).status is CampaignStatus.IN_PROGRESS  # gate waits

    ota.clock.advance(5 * MINUTE)
    assert ota.campaigns.monitor()["timed_out"] == 1

    campaign = ota.campaigns.get(campaign_id)
    assert campaign.status is CampaignStatus.PAUSED
    assert "gate failed" in campaign.status_reason
    assert "canary_gate_failed" in ota.alerts.names()
    assert campaign.gate is not None
    assert campaign.gate["failures"] == 1
    assert len(ota.notified()) == 10


def test_timeouts_past_the_failure_threshold_roll_the_campaign_back(ota: Ota) -> None:
    campaign_id = ota.campaign(
        10, deployment_strategy="immediate", timeout_minutes=5, max_retries=0
    )
    ota.campaigns.start(campaign_id)
    ota.clock.advance(5 * MINUTE)
    assert ota.campaigns.monitor()["timed_out"] == 10
    campaign = ota.campaigns.get(campaign_id)
    assert "campaign_auto_rollback" in ota.alerts.names()
    assert campaign.status in (CampaignStatus.ROLLING_BACK, CampaignStatus.ROLLED_BACK)
    assert campaign.counters.timed_out == 10


# -- bounded work, device updates ----------------------------------------------------


def test_one_pass_times_out_at_most_its_limit_earliest_deadline_first(ota: Ota) -> None:
    campaign_id = ota.campaign(
        5, deployment_strategy="immediate", timeout_minutes=5, max_retries=0, **QUIET
    )
    ota.campaigns.start(campaign_id)
    ota.clock.advance(5 * MINUTE)
    timeouts = Timeouts(ota.deps, ota.campaigns.commands, ota.campaigns.notices, limit=2)
    now_ms = int(ota.clock.now * 1000)
    assert timeouts.run(now_ms).timed_out == 2
    assert timeouts.run(now_ms).timed_out == 2
    assert timeouts.run(now_ms).timed_out == 1
    assert ota.campaigns.get(campaign_id).counters.timed_out == 5


def test_a_device_update_times_out_on_its_own_timeout(ota: Ota) -> None:
    vehicle = fleet(1)[0]
    ota.fleet.put([vehicle])
    now_ms = int(ota.clock.now * 1000)
    update = VehicleUpdate.notified(
        vehicle_id=vehicle.vehicle_id,
        update_id="device-update-1",
        now_ms=now_ms,
        kind=UpdateKind.DEVICE,
        firmware_id="f" * 32,
        to_version="2.0.0",
        region=vehicle.region,
        timeout_ms=timeout_ms(10),
    )
    assert ota.update_store.create(update)
    ota.clock.advance(10 * MINUTE)
    assert deadline_passed(update, int(ota.clock.now * 1000))
    assert ota.campaigns.monitor()["timed_out"] == 1
    assert ota.update_store.get(vehicle.vehicle_id, "device-update-1").state is (
        UpdateState.TIMED_OUT
    )
    [cancel] = _cancels(ota, vehicle.vehicle_id)
    assert (cancel.update_id, cancel.campaign_id) == ("device-update-1", "")


def test_an_update_without_a_timeout_is_never_due(ota: Ota) -> None:
    vehicle = fleet(1)[0]
    update = VehicleUpdate.notified(
        vehicle_id=vehicle.vehicle_id,
        update_id="no-timeout",
        now_ms=0,
        kind=UpdateKind.DEVICE,
        firmware_id="f" * 32,
        to_version="2.0.0",
    )
    assert due_at(update) is None
    assert not deadline_passed(update, 10**15)


def test_vehicle_reports_after_retries_land_on_the_same_record(ota: Ota) -> None:
    campaign_id = ota.campaign(
        1, deployment_strategy="immediate", timeout_minutes=5, max_retries=1, **QUIET
    )
    ota.campaigns.start(campaign_id)
    update_id = _release(ota, campaign_id)
    [vehicle] = ota.notified()
    ota.clock.advance(5 * MINUTE)
    assert ota.campaigns.monitor()["retried"] == 1
    for state in TO_COMPLETION:
        ota.report(vehicle, update_id, state)
    ota.report(vehicle, update_id, S.COMPLETED, installed="2.0.0")
    campaign = ota.campaigns.get(campaign_id)
    assert campaign.status is CampaignStatus.COMPLETED
    assert (campaign.counters.completed, campaign.counters.failures) == (1, 0)
