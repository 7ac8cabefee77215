"""One active update per vehicle across campaigns (BR-OTA-014/023/033): the pure
arbitration, and two overlapping campaigns on the in-memory services, with
no false failures."""

from __future__ import annotations

from typing import Any

import pytest
from ota_service_harness import TO_COMPLETION, Ota, S, fleet

from v2c.handlers.ota.domain.coordination import (
    EXPLICIT_RANK,
    ROLLBACK_RANK,
    Claim,
    Verdict,
    arbitrate,
)
from v2c.handlers.ota.domain.counters import CounterDeltas
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import (
    Command,
    Outcome,
    UpdateRecord,
    UpdateState,
    apply_busy,
    apply_command,
    apply_status,
)
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.v1.command_pb2 import OTACommand
from v2c.v1.ota_pb2 import OTAStatus

U = UpdateState
MINUTE = 60.0
N = 3


def _claim(update_id: str, rank: int, state: UpdateState, **kw: Any) -> Claim:
    return Claim(update_id, f"c-{update_id}", rank, state, **kw)


# -- the arbitration ------------------------------------------------------------------


def test_a_free_vehicle_goes() -> None:
    new = _claim("new", 2, U.NOTIFIED)
    ended = [_claim("old", 5, U.COMPLETED), _claim("gone", 5, U.CANCELLED)]
    assert arbitrate(new, ended).verdict is Verdict.GO
    assert arbitrate(new, [new]).verdict is Verdict.GO  # its own record is no rival


@pytest.mark.parametrize("rank", [2, 3])
def test_an_update_of_equal_or_higher_rank_in_flight_keeps_the_vehicle(rank: int) -> None:
    decision = arbitrate(_claim("new", 2, U.NOTIFIED), [_claim("old", rank, U.DEFERRED)])
    assert decision.verdict is Verdict.WAIT
    assert "busy" in decision.reason


@pytest.mark.parametrize("state", [U.NOTIFIED, U.ACCEPTED, U.DOWNLOADING, U.DOWNLOADED])
def test_a_lower_rank_update_not_yet_installing_is_superseded(state: UpdateState) -> None:
    old = _claim("old", 1, state)
    decision = arbitrate(_claim("new", 3, U.NOTIFIED), [old])
    assert (decision.verdict, decision.victims) == (Verdict.SUPERSEDE, (old,))


@pytest.mark.parametrize("state", [U.INSTALLING, U.REBOOTING, U.VERIFYING])
def test_an_installing_update_is_never_interrupted(state: UpdateState) -> None:
    decision = arbitrate(_claim("new", ROLLBACK_RANK, U.NOTIFIED), [_claim("old", 1, state)])
    assert decision.verdict is Verdict.WAIT


def test_a_rollback_supersedes_even_a_fleet_managers_device_update() -> None:
    old = _claim("old", EXPLICIT_RANK, U.DOWNLOADING)
    assert arbitrate(_claim("rb", ROLLBACK_RANK, U.NOTIFIED), [old]).victims == (old,)
    assert arbitrate(_claim("c", 5, U.NOTIFIED), [old]).verdict is Verdict.WAIT


def test_queued_updates_go_by_rank_then_age_and_a_paused_one_holds_nobody_up() -> None:
    new = _claim("new", 2, U.WAITING, queued_at_ms=100)
    assert arbitrate(new, [_claim("a", 3, U.WAITING, queued_at_ms=500)]).verdict is Verdict.WAIT
    assert arbitrate(new, [_claim("b", 2, U.WAITING, queued_at_ms=50)]).verdict is Verdict.WAIT
    assert arbitrate(new, [_claim("c", 2, U.WAITING, queued_at_ms=150)]).verdict is Verdict.GO
    assert arbitrate(new, [_claim("d", 1, U.PENDING, queued_at_ms=1)]).verdict is Verdict.GO
    paused = _claim("e", 5, U.WAITING, queued_at_ms=1, live=False)
    assert arbitrate(new, [paused]).verdict is Verdict.GO


# -- the record's moves --------------------------------------------------------------


def test_a_busy_rejection_makes_the_update_wait_and_moves_no_rate() -> None:
    notified = UpdateRecord(U.NOTIFIED, last_sequence=0)
    busy = OTAStatus(state=S.REJECTED, reason=OTAStatus.UPDATE_IN_PROGRESS, sequence=1)
    transition = apply_status(notified, busy)
    assert (transition.outcome, transition.after.state) == (Outcome.APPLIED, U.WAITING)
    assert transition.deltas == CounterDeltas(in_progress=-1, waiting=1)
    assert not transition.affects_rates
    assert apply_busy(transition.after, 1).outcome is Outcome.DUPLICATE
    other = OTAStatus(state=S.REJECTED, reason=OTAStatus.INSUFFICIENT_STORAGE, sequence=1)
    assert apply_status(notified, other).after.state is U.REJECTED  # a real rejection fails


def test_a_busy_rejection_after_the_update_ended_changes_nothing() -> None:
    timed_out = UpdateRecord(U.TIMED_OUT, last_sequence=3, decided_by_cloud=True)
    assert apply_busy(timed_out, 4).outcome is Outcome.TERMINAL


def test_hold_and_notify_move_a_record_between_in_progress_and_waiting() -> None:
    held = apply_command(UpdateRecord(U.NOTIFIED), Command.HOLD)
    assert held.deltas == CounterDeltas(in_progress=-1, waiting=1)
    notified = apply_command(held.after, Command.NOTIFY)
    assert notified.after.state is U.NOTIFIED
    assert notified.deltas == CounterDeltas(waiting=-1, in_progress=1)
    assert apply_command(UpdateRecord(U.DOWNLOADING), Command.HOLD).outcome is Outcome.REFUSED
    waiting = UpdateRecord(U.WAITING)
    assert apply_command(waiting, Command.TIME_OUT).outcome is Outcome.NOOP  # no deadline
    assert apply_command(waiting, Command.CANCEL).after.state is U.CANCELLED


# -- two campaigns on the same vehicles ---------------------------------------------------


@pytest.fixture
def ota() -> Ota:
    return Ota()


def _second(ota: Ota, priority: str, **spec: Any) -> str:
    """A second campaign (2.1.0) over the same vehicles."""
    package = ota.package("2.1.0")
    body = {
        "name": "summer",
        "firmware_id": package.firmware_id,
        "target_filter": "year > 0",
        "deployment_strategy": "immediate",
        "priority": priority,
        **spec,
    }
    return ota.campaigns.create(body).campaign.campaign_id


def _release(ota: Ota, campaign_id: str) -> str:
    return ota.campaigns.get(campaign_id).release.update_id


def _cancels(ota: Ota, vehicle_id: str) -> list[OTACommand]:
    return [c for c in ota.commands.to(vehicle_id) if c.kind == OTACommand.CANCEL_UPDATE]


def test_equal_priority_waits_for_the_first_campaign_then_goes(ota: Ota) -> None:
    first = ota.campaign(N, deployment_strategy="immediate", priority="normal")
    ota.campaigns.start(first)
    vehicles = ota.notified()
    second = _second(ota, "normal")
    started = ota.campaigns.start(second)

    assert ota.notified() == vehicles  # nobody notified twice
    counters = started.counters
    assert (counters.waiting, counters.in_progress, counters.failures) == (N, 0, 0)
    assert counters.total == N
    second_update = _release(ota, second)
    held = ota.update_store.get(vehicles[0], second_update)
    assert held.state is UpdateState.WAITING
    assert held.reason.startswith("waiting: vehicle busy")
    assert (held.notifications, held.notified_at_ms) == (0, 0)  # never sent
    assert ota.campaigns.get(first).counters.in_progress == N  # the first is untouched

    ota.clock.advance(MINUTE)
    assert ota.campaigns.monitor()["released"] == 0  # still busy
    first_update = _release(ota, first)
    for vehicle in vehicles:
        ota.finish(vehicle, first_update, ok=True)
    ota.clock.advance(MINUTE)
    assert ota.campaigns.monitor()["released"] == N
    assert sorted(ota.notified()[N:]) == sorted(vehicles)
    assert ota.update_store.get(vehicles[0], second_update).notifications == 1
    counters = ota.campaigns.get(second).counters
    assert (counters.waiting, counters.in_progress, counters.failures) == (0, N, 0)
    for vehicle in vehicles:
        ota.finish(vehicle, second_update, ok=True, to="2.1.0")
    done = ota.campaigns.get(second)
    assert done.status is CampaignStatus.COMPLETED
    assert (done.counters.completed, done.counters.failures, done.counters.total) == (N, 0, N)


def test_a_higher_priority_campaign_supersedes_updates_not_yet_installing(ota: Ota) -> None:
    low = ota.campaign(N, deployment_strategy="immediate", priority="low")
    ota.campaigns.start(low)
    low_update = _release(ota, low)
    downloading, installing, notified = ota.notified()
    for state in TO_COMPLETION[:2]:
        ota.report(downloading, low_update, state)
    for state in TO_COMPLETION[:4]:
        ota.report(installing, low_update, state)

    high = _second(ota, "critical")
    started = ota.campaigns.start(high)
    high_update = _release(ota, high)

    assert sorted(ota.notified()[N:]) == sorted([downloading, notified])
    for vehicle in (downloading, notified):
        assert ota.update_store.get(vehicle, low_update).state is UpdateState.CANCELLED
        assert "superseded by campaign" in ota.update_store.get(vehicle, low_update).reason
        [cancel] = _cancels(ota, vehicle)
        assert (cancel.update_id, cancel.campaign_id) == (low_update, low)
    assert ota.update_store.get(installing, high_update).state is UpdateState.WAITING
    assert _cancels(ota, installing) == []
    low_counters = ota.campaigns.get(low).counters
    assert (low_counters.cancelled, low_counters.in_progress, low_counters.failures) == (2, 1, 0)
    assert (started.counters.in_progress, started.counters.waiting) == (2, 1)

    ota.finish(installing, low_update, ok=True)  # the install finishes, then the critical one
    ota.clock.advance(MINUTE)
    assert ota.campaigns.monitor()["released"] == 1
    assert ota.notified()[-1] == installing
    assert ota.campaigns.get(low).status is CampaignStatus.COMPLETED
    assert ota.campaigns.get(low).counters.failures == 0


def test_a_lower_priority_campaign_waits_for_a_higher_one(ota: Ota) -> None:
    high = ota.campaign(N, deployment_strategy="immediate", priority="high")
    ota.campaigns.start(high)
    low = _second(ota, "low")
    started = ota.campaigns.start(low)
    assert (started.counters.waiting, started.counters.failures) == (N, 0)
    assert ota.campaigns.get(high).counters.cancelled == 0
    assert ota.commands.sent == []


def test_a_late_update_in_progress_rejection_waits_and_is_never_a_failure(ota: Ota) -> None:
    campaign_id = ota.campaign(2, deployment_strategy="immediate", max_retries=0)
    ota.campaigns.start(campaign_id)
    update_id = _release(ota, campaign_id)
    busy, free = ota.notified()

    answer = ota.report(busy, update_id, S.REJECTED, reason=OTAStatus.UPDATE_IN_PROGRESS)

    assert (answer.outcome.value, answer.state) == ("applied", "waiting")
    record = ota.update_store.get(busy, update_id)
    assert (record.state, record.reason) == (UpdateState.WAITING, "UPDATE_IN_PROGRESS")
    counters = ota.campaigns.get(campaign_id).counters
    assert (counters.waiting, counters.in_progress, counters.failed) == (1, 1, 0)
    assert ota.campaigns.get(campaign_id).status is CampaignStatus.IN_PROGRESS
    assert "campaign_auto_paused" not in ota.alerts.names()

    ota.finish(free, update_id, ok=True)
    assert ota.campaigns.get(campaign_id).status is CampaignStatus.IN_PROGRESS  # one waits
    ota.clock.advance(2 * 3600)  # a waiting vehicle has no deadline: never timed out
    report = ota.campaigns.monitor()
    assert (report["timed_out"], report["released"]) == (0, 1)
    renotified = ota.update_store.get(busy, update_id)
    assert (renotified.state, renotified.notifications) == (UpdateState.NOTIFIED, 2)
    assert ota.notified().count(busy) == 2

    ota.finish(busy, update_id, ok=True)  # numbered on after its rejection
    done = ota.campaigns.get(campaign_id)
    assert done.status is CampaignStatus.COMPLETED
    assert (done.counters.completed, done.counters.failures, done.counters.total) == (2, 0, 2)


def test_a_paused_campaign_keeps_its_waiting_vehicles_waiting(ota: Ota) -> None:
    first = ota.campaign(1, deployment_strategy="immediate")
    ota.campaigns.start(first)
    second = _second(ota, "normal")
    ota.campaigns.start(second)
    [vehicle] = ota.notified()
    ota.finish(vehicle, _release(ota, first), ok=True)
    ota.campaigns.pause(second)
    ota.clock.advance(MINUTE)
    report = ota.campaigns.monitor()
    assert (report["released"], report["still_waiting"]) == (0, 1)
    ota.campaigns.resume(second)
    ota.clock.advance(MINUTE)
    assert ota.campaigns.monitor()["released"] == 1


def test_a_waiting_vehicle_is_cancelled_with_its_campaign(ota: Ota) -> None:
    first = ota.campaign(2, deployment_strategy="immediate")
    ota.campaigns.start(first)
    second = _second(ota, "normal")
    ota.campaigns.start(second)
    cancelled = ota.campaigns.cancel(second)
    counters = cancelled.counters
    assert (counters.waiting, counters.cancelled, counters.total) == (0, 2, 2)
    assert {r.state for r in ota.update_store.for_campaign(second)} == {UpdateState.CANCELLED}


def test_vehicles_of_one_campaign_only_are_not_held(ota: Ota) -> None:
    ota.fleet.put(fleet(4))
    campaign_id = ota.campaign(4, deployment_strategy="immediate")
    started = ota.campaigns.start(campaign_id)
    assert (started.counters.in_progress, started.counters.waiting) == (4, 0)


def test_a_rollback_found_busy_is_released_first_and_supersedes_a_download(ota: Ota) -> None:
    low = ota.campaign(1, deployment_strategy="immediate", priority="low")
    ota.campaigns.start(low)
    low_update = _release(ota, low)
    [vehicle] = ota.notified()
    for state in TO_COMPLETION[:2]:
        ota.report(vehicle, low_update, state)
    rollback = VehicleUpdate.notified(
        vehicle_id=vehicle,
        update_id="rollback-1",
        now_ms=int(ota.clock.now * 1000),
        kind=UpdateKind.ROLLBACK,
        firmware_id="f" * 32,
        to_version="1.0.0",
        campaign_id="another-campaign",
        region=fleet(1)[0].region,
        manifest=b"signed manifest",
        signature=b"signature",
        key_id="test-key",
    )
    assert ota.update_store.create(rollback)
    ota.report(vehicle, "rollback-1", S.REJECTED, reason=OTAStatus.UPDATE_IN_PROGRESS)
    assert ota.update_store.get(vehicle, "rollback-1").state is UpdateState.WAITING

    ota.clock.advance(MINUTE)
    report = ota.campaigns.monitor()

    assert (report["released"], report["superseded"]) == (1, 1)
    assert ota.update_store.get(vehicle, "rollback-1").state is UpdateState.NOTIFIED
    assert ota.update_store.get(vehicle, low_update).state is UpdateState.CANCELLED
    assert [c.update_id for c in _cancels(ota, vehicle)] == [low_update]
    assert ota.campaigns.get(low).counters.failures == 0
