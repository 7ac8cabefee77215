"""A campaign too large to plan while answering: `planning`, then planned after the answer.

The lifecycle rules of `planning` (pure), then the service over the
in-memory stores with an indexed fleet and a small inline limit, so that a
few dozen vehicles take the path 100,000 take.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from ota_service_harness import Ota, fleet

from v2c.contract.errors import Conflict, InvalidField, TransientError
from v2c.handlers.ota.campaigns.deps import CampaignConfig
from v2c.handlers.ota.campaigns.planning import CampaignPlanner
from v2c.handlers.ota.campaigns.planning_queue import (
    BackgroundPlanning,
    LambdaPlanning,
    PlanningRequests,
    plan_event,
)
from v2c.handlers.ota.domain.lifecycle import (
    ACTIVE,
    ALLOWED,
    CampaignCommand,
    CampaignStatus,
    next_status,
)
from v2c.handlers.ota.fleet_index.select import FleetSnapshot
from v2c.handlers.ota.in_memory_ports import InMemoryFleet

C = CampaignStatus
INLINE = 10

# -- the lifecycle ------------------------------------------------------------------------


def test_planning_ends_created_or_failed() -> None:
    assert next_status(C.PLANNING, CampaignCommand.FINISH_PLANNING) is C.CREATED
    assert next_status(C.PLANNING, CampaignCommand.FAIL_PLANNING) is C.PLANNING_FAILED
    for command in (CampaignCommand.FINISH_PLANNING, CampaignCommand.FAIL_PLANNING):
        with pytest.raises(Conflict):
            next_status(C.CREATED, command)


def test_a_start_while_planning_is_queued_unless_approval_is_needed() -> None:
    assert next_status(C.PLANNING, CampaignCommand.START) is C.PLANNING
    with pytest.raises(Conflict, match="requires approval"):
        next_status(C.PLANNING, CampaignCommand.START, requires_approval=True)


def test_approve_waits_for_the_plan_with_a_clear_409() -> None:
    with pytest.raises(Conflict, match="still planning"):
        next_status(C.PLANNING, CampaignCommand.APPROVE, requires_approval=True)


def test_a_planning_campaign_may_be_cancelled_and_nothing_else() -> None:
    assert next_status(C.PLANNING, CampaignCommand.CANCEL) is C.CANCELLED
    for command in (CampaignCommand.PAUSE, CampaignCommand.RESUME, CampaignCommand.ROLLBACK):
        with pytest.raises(Conflict):
            next_status(C.PLANNING, command)


def test_planning_is_active_and_planning_failed_is_final() -> None:
    assert C.PLANNING in ACTIVE
    assert C.PLANNING_FAILED not in ACTIVE
    assert all(C.PLANNING_FAILED not in sources for sources, _ in ALLOWED.values())


# -- the service --------------------------------------------------------------------------


@pytest.fixture
def ota() -> Ota:
    return Ota(fleet=InMemoryFleet(indexed=True), config=CampaignConfig(inline_max_targets=INLINE))


def _spec(ota: Ota, **extra: Any) -> dict[str, Any]:
    package = ota.package("2.0.0")
    return {"name": "big", "firmware_id": package.firmware_id, "target_filter": "year > 0", **extra}


def _submitted(ota: Ota) -> list[str]:
    planning = ota.deps.planning
    assert isinstance(planning, PlanningRequests)
    return planning.submitted


def test_a_small_fleet_is_planned_while_answering(ota: Ota) -> None:
    ota.fleet.put(fleet(INLINE))
    report = ota.campaigns.create(_spec(ota))
    assert report.campaign.status is C.CREATED
    assert report.campaign.target_count == INLINE
    assert _submitted(ota) == []


def test_a_large_fleet_answers_planning_then_the_planner_creates_it(ota: Ota) -> None:
    ota.fleet.put(fleet(40))
    ota.fleet.put(fleet(5, version="2.0.0", start=40))  # up to date: excluded
    report = ota.campaigns.create(_spec(ota, deployment_strategy="canary"))
    campaign = report.campaign
    assert (campaign.status, campaign.target_count, campaign.waves) == (C.PLANNING, 0, ())
    assert report.created
    assert _submitted(ota) == [campaign.campaign_id]
    assert ota.event_types() == ["campaign.planning"]

    planned = ota.campaigns.plan(campaign.campaign_id)

    assert planned.status is C.CREATED
    assert planned.target_count == 40
    assert [w.name for w in planned.waves] == ["canary", "rollout"]
    assert planned.counters.pending == 40
    assert sum(c.pending for c in planned.wave_counters) == 40
    assert (planned.lease_owner, planned.lease_until_ms) == ("", 0)
    assert len(ota.plans.read(planned.campaign_id, 0, 100)) == 40
    kind, detail = ota.events.events[-1]
    assert kind == "campaign.created"
    assert detail["excluded"] == {"other_model": 0, "up_to_date": 5}
    # planning again changes nothing
    assert ota.campaigns.plan(campaign.campaign_id) == planned


def test_the_plan_is_the_one_an_inline_creation_makes(ota: Ota) -> None:
    ota.fleet.put(fleet(30))
    spec = _spec(ota, deployment_strategy="staged", stage_percentages=[10, 50, 100])
    campaign_id = ota.campaigns.create(spec, idempotency_key="k").campaign.campaign_id
    planned = ota.campaigns.plan(campaign_id)
    inline = Ota(fleet=InMemoryFleet(fleet(30)))
    inline_spec = {**spec, "firmware_id": inline.package("2.0.0").firmware_id}
    created = inline.campaigns.create(inline_spec, idempotency_key="k").campaign
    assert created.status is C.CREATED
    assert created.campaign_id == campaign_id
    assert planned.waves == created.waves
    assert ota.plans.read(campaign_id, 0, 30) == inline.plans.read(campaign_id, 0, 30)


def test_a_start_while_planning_is_carried_out_once_planned(ota: Ota) -> None:
    ota.fleet.put(fleet(40))
    spec = _spec(ota, deployment_strategy="immediate", max_concurrent_updates=5)
    campaign_id = ota.campaigns.create(spec).campaign.campaign_id
    queued = ota.campaigns.start(campaign_id)
    assert queued.status is C.PLANNING
    assert queued.start_requested_at_ms is not None
    assert ota.notified() == []
    started = ota.campaigns.plan(campaign_id)
    assert started.status is C.IN_PROGRESS
    assert len(ota.notified()) == 5
    assert "campaign.started" in ota.event_types()


def test_a_queued_start_lost_with_its_planner_is_carried_out_by_the_monitor(ota: Ota) -> None:
    ota.fleet.put(fleet(40))
    campaign_id = ota.campaigns.create(_spec(ota)).campaign.campaign_id
    ota.campaigns.start(campaign_id)
    # a planner that died right after its final write, before the start
    assert CampaignPlanner(ota.deps).plan(campaign_id).status is C.CREATED
    ota.campaigns.monitor()
    assert ota.campaigns.get(campaign_id).status is C.IN_PROGRESS


def test_a_campaign_that_needs_approval_cannot_queue_a_start_or_be_approved_yet(
    ota: Ota,
) -> None:
    ota.fleet.put(fleet(40))
    spec = _spec(ota, requires_approval=True)
    campaign_id = ota.campaigns.create(spec, created_by="alice").campaign.campaign_id
    with pytest.raises(Conflict, match="requires approval"):
        ota.campaigns.start(campaign_id)
    with pytest.raises(Conflict, match="still planning"):
        ota.campaigns.approve(campaign_id, "bob")
    ota.campaigns.plan(campaign_id)
    assert ota.campaigns.approve(campaign_id, "bob").approved_by == "bob"


def test_no_eligible_target_fails_the_planning_with_the_reason() -> None:
    # an index too large to read while answering: only the planner finds out
    ota = Ota(
        fleet=InMemoryFleet(fleet(40, version="2.0.0"), indexed=True),
        config=CampaignConfig(inline_index_bytes=10),
    )
    campaign_id = ota.campaigns.create(_spec(ota)).campaign.campaign_id
    failed = ota.campaigns.plan(campaign_id)
    assert failed.status is C.PLANNING_FAILED
    assert "40 excluded" in failed.status_reason
    assert failed.finished_at_ms is not None
    assert ota.event_types()[-1] == "campaign.planning_failed"


def test_no_eligible_target_in_a_small_fleet_is_still_a_400(ota: Ota) -> None:
    ota.fleet.put(fleet(3, version="2.0.0"))
    with pytest.raises(InvalidField):
        ota.campaigns.create(_spec(ota))


def test_an_index_too_large_to_read_while_answering_is_not_read() -> None:
    fleet_ = _CountingFleet(fleet(5), indexed=True)
    ota = Ota(fleet=fleet_, config=CampaignConfig(inline_index_bytes=10))
    report = ota.campaigns.create(_spec(ota))
    assert report.campaign.status is C.PLANNING
    assert fleet_.snapshots == 0
    assert ota.campaigns.plan(report.campaign.campaign_id).target_count == 5


def test_a_cancel_while_planning_wins(ota: Ota) -> None:
    ota.fleet.put(fleet(40))
    campaign_id = ota.campaigns.create(_spec(ota)).campaign.campaign_id
    cancelled = ota.campaigns.cancel(campaign_id)
    assert cancelled.status is C.CANCELLED
    assert ota.campaigns.plan(campaign_id).status is C.CANCELLED


def test_a_cancel_during_planning_makes_the_planner_write_nothing() -> None:
    fleet_ = _CancellingFleet(fleet(40))
    ota = Ota(fleet=fleet_, config=CampaignConfig(inline_max_targets=INLINE))
    fleet_.ota = ota
    campaign_id = ota.campaigns.create(_spec(ota)).campaign.campaign_id
    assert ota.campaigns.plan(campaign_id).status is C.CANCELLED
    assert ota.plans.read(campaign_id, 0, 100) != []  # chunks written, never referenced
    assert "campaign.created" not in ota.event_types()


def test_a_second_planner_leaves_a_campaign_another_one_holds(ota: Ota) -> None:
    ota.fleet.put(fleet(40))
    campaign = ota.campaigns.create(_spec(ota)).campaign
    now = int(ota.clock() * 1000)
    assert ota.campaign_store.acquire_lease(campaign, "other", now, 60_000) is not None
    assert ota.campaigns.plan(campaign.campaign_id).status is C.PLANNING
    ota.clock.advance(61)  # the other planner died: its lease expired
    assert ota.campaigns.plan(campaign.campaign_id).status is C.CREATED


def test_a_planner_that_fails_leaves_the_campaign_to_the_next_attempt() -> None:
    fleet_ = _FlakyFleet(fleet(40), indexed=True)
    ota = Ota(fleet=fleet_, config=CampaignConfig(inline_max_targets=INLINE))
    campaign_id = ota.campaigns.create(_spec(ota)).campaign.campaign_id
    fleet_.failures = 1
    with pytest.raises(TransientError):
        ota.campaigns.plan(campaign_id)
    waiting = ota.campaigns.get(campaign_id)
    assert waiting.status is C.PLANNING
    assert waiting.lease_until_ms == 0
    assert ota.campaigns.monitor()["planned"] == 1
    assert ota.campaigns.get(campaign_id).status is C.CREATED


def test_the_monitor_plans_a_bounded_number_per_pass() -> None:
    ota = Ota(
        fleet=InMemoryFleet(fleet(40), indexed=True),
        config=CampaignConfig(inline_max_targets=INLINE, max_plans_per_pass=2),
    )
    ids = [ota.campaigns.create(_spec(ota, name=f"c{i}")).campaign.campaign_id for i in range(3)]
    assert ota.campaigns.monitor()["planned"] == 2
    assert ota.campaigns.monitor()["planned"] == 1
    assert {ota.campaigns.get(i).status for i in ids} == {C.CREATED}


def test_an_idempotent_retry_answers_the_planning_campaign(ota: Ota) -> None:
    ota.fleet.put(fleet(40))
    spec = _spec(ota)
    first = ota.campaigns.create(spec, idempotency_key="abc")
    again = ota.campaigns.create(spec, idempotency_key="abc")
    assert (again.created, again.campaign.campaign_id) == (False, first.campaign.campaign_id)
    assert again.campaign.status is C.PLANNING
    ota.campaigns.plan(first.campaign.campaign_id)
    assert ota.campaigns.create(spec, idempotency_key="abc").campaign.status is C.CREATED
    assert _submitted(ota) == [first.campaign.campaign_id]


# -- where planning runs --------------------------------------------------------------------


def test_background_planning_plans_after_the_answer() -> None:
    planning = BackgroundPlanning()
    ota = Ota(
        fleet=InMemoryFleet(fleet(40), indexed=True),
        config=CampaignConfig(inline_max_targets=INLINE),
    )
    ota.deps.planning = planning
    planning.bind(ota.campaigns.plan)
    campaign_id = ota.campaigns.create(_spec(ota)).campaign.campaign_id
    planning.join()
    planning.close()
    assert ota.campaigns.get(campaign_id).status is C.CREATED


def test_background_planning_survives_a_failing_plan() -> None:
    seen: list[str] = []

    def plan(campaign_id: str) -> None:
        seen.append(campaign_id)
        if campaign_id == "bad":
            raise TransientError("S3 is down")

    planning = BackgroundPlanning(plan)
    planning.submit("bad")
    planning.submit("good")
    planning.join()
    planning.close()
    assert seen == ["bad", "good"]


def test_lambda_planning_invokes_the_planner_asynchronously_and_never_raises() -> None:
    calls: list[dict[str, Any]] = []

    class Client:
        def invoke(self, **kwargs: Any) -> None:
            calls.append(kwargs)
            if len(calls) > 1:
                raise EndpointConnectionError(endpoint_url="http://lambda")

    planning = LambdaPlanning(Client(), "v2c-ota-monitor")
    planning.submit("c1")
    planning.submit("c2")  # fails: logged, the monitor plans it
    assert calls[0]["FunctionName"] == "v2c-ota-monitor"
    assert calls[0]["InvocationType"] == "Event"
    assert json.loads(calls[0]["Payload"]) == plan_event("c1")


# -- fleets that misbehave on cue ---------------------------------------------------------------


class _CountingFleet(InMemoryFleet):
    snapshots = 0

    def snapshot(self, models: Any = None) -> FleetSnapshot:
        self.snapshots += 1
        return super().snapshot(models)


class _FlakyFleet(InMemoryFleet):
    failures = 0

    def snapshot(self, models: Any = None) -> FleetSnapshot:
        if self.failures:
            self.failures -= 1
            raise TransientError("S3 is down")
        return super().snapshot(models)


class _CancellingFleet(InMemoryFleet):
    """Cancels the campaign while the planner reads the index."""

    ota: Ota | None = None

    def __init__(self, vehicles: Any) -> None:
        super().__init__(vehicles, indexed=True)
        self._reads = 0

    def snapshot(self, models: Any = None) -> FleetSnapshot:
        self._reads += 1
        if self._reads == 2 and self.ota is not None:  # the first read is creation's
            (campaign,) = self.ota.campaign_store.list(C.PLANNING)[0]
            self.ota.campaigns.cancel(campaign.campaign_id)
        return super().snapshot(models)
