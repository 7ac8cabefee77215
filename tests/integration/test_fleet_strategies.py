"""Every deployment strategy end to end: who is notified, and when, on the running stack.

Real mosquitto, real moto, the gateway with the production rules and the OTA
services; a small fleet of simulated vehicles per test (`FleetSimulator`: each
its own MQTT session, A/B flash and update agent, 500 times faster than real
time). The fleet manager's commands and the periodic monitor pass are called
here; the gateway applies the vehicles' reports, which dispatch the next
vehicles (ADR 0006). Who was notified when is read from the per-vehicle update
records (`notified_at_ms`, written before the notification is published),
checked against what each vehicle says it received, and against the
campaign's waves.

Time: the scheduled start and the maintenance window are decided on the OTA
services' clock (`strategy_support.SteerableClock`), which the tests move
(before the start, outside the window, into the next day's window); the
vehicles run on their own scaled clock. Nothing here sleeps for a verdict:
every wait is on a condition, for as long as the system makes progress.

One stack for the module; each test has its own vehicles (VIN prefix) and
targets them by VIN.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fleet_support import loop_thread, ota_cloud, patient_rules
from gateway_support import running_gateway
from strategy_support import Rig, SteerableClock, at, clocked, ids

from v2c.contract.errors import Conflict
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.ota.config import SERVICES
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.maintenance_window import MaintenanceWindow
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.infra.aws.resources import ensure_resources
from v2c.infra.local.broker import MosquittoBroker, MosquittoConfig
from v2c.infra.local.moto_server import reset
from v2c.infra.local.wiring import local_ota_services
from v2c.infra.names import ResourceNames
from v2c.infra.settings import AwsSettings, MqttSettings, StackSettings
from v2c.vehicle_sim.ota.device.faults import FaultProfile

# A generous bound per test: the waits fail on their own when nothing moves.
pytestmark = pytest.mark.timeout(600)

C = CampaignStatus


@pytest.fixture(scope="module")
def rig(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    reset(moto_server)
    aws, names = AwsSettings(endpoint_url=moto_server), ResourceNames()
    ensure_resources(aws, names)
    base = tmp_path_factory.mktemp("strategies")
    clock = SteerableClock()
    with (
        MosquittoBroker(MosquittoConfig(data_dir=base / "broker")) as broker,
        pytest.MonkeyPatch.context() as env,
    ):
        stack = StackSettings(
            mqtt=MqttSettings(host=broker.host, port=broker.port), aws=aws, resources=names
        )
        with ota_cloud(stack, env) as cloud, loop_thread() as loop:
            clocked(cloud, clock)
            # The gateway's handlers (the vehicles' reports) on the same clock.
            SERVICES.build_with(lambda: clocked(local_ota_services(), clock))
            endpoint = MqttEndpoint(broker.host, broker.port)
            with running_gateway(endpoint, patient_rules(), workers=4):
                assert SERVICES.get().deps.clock is clock  # one clock for both
                built = Rig(stack, cloud, clock, loop, base)
                built.upload()
                yield built


@pytest.fixture(autouse=True)
def real_time(rig: Rig) -> Iterator[None]:
    rig.clock.shift(0)
    yield
    rig.clock.shift(0)


# -- staged: phase by phase, each after the previous met its criterion ------------------


def test_staged_phases_start_only_after_the_previous_phase_met_its_criterion(rig: Rig) -> None:
    vehicles = rig.provision("5V2CSTG", 10)
    campaign = rig.create(
        ids(vehicles),
        deployment_strategy="staged",
        stage_percentages=[20, 50, 100],
        stage_success_percentages=[99, 98],  # each phase its own criterion (spec 002 §7)
    )
    phases = rig.plan(campaign)
    assert [w.name for w in campaign.waves] == ["stage-1", "stage-2", "stage-3"]
    assert [len(p) for p in phases] == [2, 3, 5]
    assert [w.gated for w in campaign.waves] == [True, True, False]
    with rig.running_fleet(vehicles) as fleet:
        started = rig.cloud.campaigns.start(campaign.campaign_id)
        # Only phase 1 is notified at the start, though the concurrency allows all ten.
        assert set(rig.records(campaign.campaign_id)) == set(phases[0])
        assert started.current_wave == 0
        rig.wait_status(fleet, campaign.campaign_id, C.COMPLETED)
        rig.settle(fleet, campaign)
        received = rig.notifications(fleet)
    done = rig.cloud.campaigns.get(campaign.campaign_id)
    records = rig.records(campaign.campaign_id)
    assert {v: r.state for v, r in records.items()} == dict.fromkeys(
        ids(vehicles), UpdateState.COMPLETED
    )
    assert received == dict.fromkeys(ids(vehicles), 1)  # each vehicle told once
    for number, phase in enumerate(phases):
        assert {records[v].wave for v in phase} == {number}
    # Phase k+1 was notified only once every update of phase k had finished and
    # the phase's success rate met the criterion (95 %; here all completed).
    for earlier, later in itertools.pairwise(phases):
        finished = max(records[v].completed_at_ms for v in earlier)
        assert min(records[v].notified_at_ms for v in later) >= finished
    assert done.gate is not None
    assert (done.gate["wave"], done.gate["verdict"]) == ("stage-2", "pass")
    assert done.gate["success_rate"] == 100.0
    assert done.gate["success_threshold_percent"] == 98
    assert done.gate["decided_at"] <= min(records[v].notified_at_ms for v in phases[2])
    assert [c.completed for c in done.wave_counters] == [2, 3, 5]


def test_a_phase_that_misses_its_criterion_pauses_and_later_phases_are_never_notified(
    rig: Rig,
) -> None:
    vehicles = rig.provision("5V2CSTF", 10)
    campaign = rig.create(
        ids(vehicles),
        deployment_strategy="staged",
        stage_percentages=[20, 50, 100],
        # The criterion of each phase: 95 % success, and more than 10 % failures
        # pause it. The campaign-wide thresholds stay out of the way (1 of 10
        # is 10 %, not more; no rollback below 50 %): the phase's gate decides.
        pause_threshold_percent=10,
        failure_threshold_percent=50,
        stage_success_percentages=[99, 60],  # phase 2's own criterion: 60 %
    )
    phases = rig.plan(campaign)
    failing = phases[1][0]  # one boot failure in phase 2: 2 of 3 succeed, 67 % < 95 %
    faults = FaultProfile.parse(
        {
            "name": "one bad boot",
            "seed": "strategies",
            "faults": {"boot_failure": {"vins": [failing]}},
        }
    )
    with rig.running_fleet(vehicles, faults) as fleet:
        rig.cloud.campaigns.start(campaign.campaign_id)
        rig.wait_status(fleet, campaign.campaign_id, C.PAUSED)
        rig.settle(fleet, campaign)
        # The monitor's passes do not move a paused campaign on.
        assert rig.monitor_pass(campaign.campaign_id) == 5
        received = rig.notifications(fleet)
    paused = rig.cloud.campaigns.get(campaign.campaign_id)
    records = rig.records(campaign.campaign_id)
    assert set(records) == set(phases[0]) | set(phases[1])
    assert {records[v].state for v in phases[0]} == {UpdateState.COMPLETED}
    assert records[failing].state is UpdateState.ROLLED_BACK
    assert {v: received[v] for v in phases[2]} == dict.fromkeys(phases[2], 0)
    assert paused.gate is not None
    assert (paused.gate["wave"], paused.gate["verdict"]) == ("stage-2", "fail_pause")
    assert paused.status_reason.startswith("stage-2 gate failed")
    # 2 of 3 succeeded: 67 % meets phase 2's 60 %, but 33 % failures exceed the
    # 10 % that pauses any phase: a phase must meet both halves of its criterion.
    assert paused.gate["success_threshold_percent"] == 60
    assert paused.current_wave == 1
    assert paused.wave_counters[2].pending == 5
    # Phase 2 itself started only after phase 1 had met its criterion.
    finished = max(records[v].completed_at_ms for v in phases[0])
    assert min(records[v].notified_at_ms for v in phases[1]) >= finished


# -- blue-green: the green cohort first, blue at the switch-over -------------------------


def test_blue_green_switches_over_to_blue_only_after_green_passed(rig: Rig) -> None:
    """v2c's blue-green is two gated cohorts (`plan.py`): a stratified green
    cohort gets the update, and blue follows only when green passed the gate;
    not the spec's parallel deployment with an instant switch (vehicles have
    no load balancer to switch)."""
    vehicles = rig.provision("5V2CBGR", 10)
    campaign = rig.create(ids(vehicles), deployment_strategy="blue_green", green_percentage=30)
    green, blue = rig.plan(campaign)
    assert [w.name for w in campaign.waves] == ["green", "blue"]
    assert (len(green), len(blue)) == (3, 7)
    regions = {v.member.vehicle_id: v.member.region for v in vehicles}
    assert len({regions[v] for v in green}) == 3  # stratified: one per region
    with rig.running_fleet(vehicles) as fleet:
        rig.cloud.campaigns.start(campaign.campaign_id)
        assert set(rig.records(campaign.campaign_id)) == set(green)
        rig.wait_status(fleet, campaign.campaign_id, C.COMPLETED)
        rig.settle(fleet, campaign)
        received = rig.notifications(fleet)
    done = rig.cloud.campaigns.get(campaign.campaign_id)
    records = rig.records(campaign.campaign_id)
    assert received == dict.fromkeys(ids(vehicles), 1)
    assert {records[v].wave for v in green} == {0}
    assert {records[v].wave for v in blue} == {1}
    switch = max(records[v].completed_at_ms for v in green)
    assert min(records[v].notified_at_ms for v in blue) >= switch
    assert done.gate is not None
    assert (done.gate["wave"], done.gate["verdict"]) == ("green", "pass")
    assert done.counters.completed == 10


# -- scheduled start ---------------------------------------------------------------------


def test_a_scheduled_campaign_notifies_nobody_before_its_start_and_everyone_after(
    rig: Rig,
) -> None:
    vehicles = rig.provision("5V2CSCH", 6)
    real = datetime.now(UTC).replace(microsecond=0)
    start = real - timedelta(minutes=30)
    rig.clock.shift(-3600)  # an hour ago: the start lies half an hour ahead
    campaign = rig.create(
        ids(vehicles), deployment_strategy="scheduled", scheduled_start=start.isoformat()
    )
    with rig.running_fleet(vehicles) as fleet:
        started = rig.cloud.campaigns.start(campaign.campaign_id)
        assert started.status is C.IN_PROGRESS  # running, but its time has not come
        for before in (timedelta(minutes=20), timedelta(minutes=10)):
            rig.clock.shift((start - before).timestamp() - real.timestamp())
            assert rig.monitor_pass(campaign.campaign_id) == 0
            assert rig.clock.now() < start  # the whole pass ran before the start
        assert rig.records(campaign.campaign_id) == {}
        assert sum(rig.notifications(fleet).values()) == 0
        rig.clock.shift(0)  # half an hour past the start
        assert rig.monitor_pass(campaign.campaign_id) == 6
        rig.wait_status(fleet, campaign.campaign_id, C.COMPLETED)
        rig.settle(fleet, campaign)
        received = rig.notifications(fleet)
    records = rig.records(campaign.campaign_id)
    assert received == dict.fromkeys(ids(vehicles), 1)
    assert min(at(r.notified_at_ms) for r in records.values()) >= start
    assert {r.state for r in records.values()} == {UpdateState.COMPLETED}


# -- maintenance window ------------------------------------------------------------------


def test_a_maintenance_window_in_local_time_gates_every_notification(rig: Rig) -> None:
    """The window is daily local time in the campaign's zone (Kolkata, UTC+5:30).
    The clock moves: 6 h before yesterday's window (nothing), into it (one
    batch), past its end (nothing, though slots free up), into today's window
    (the rest). Read as UTC, the same window would hold none of the
    notifications, so the zone is what decided."""
    zone = "Asia/Kolkata"
    vehicles = rig.provision("5V2CMWN", 7)
    real = datetime.now(UTC)
    local = real.astimezone(ZoneInfo(zone))
    window = MaintenanceWindow(
        start=(local - timedelta(hours=1)).strftime("%H:%M"),
        end=(local + timedelta(hours=2)).strftime("%H:%M"),
        timezone=zone,
    )
    as_utc = MaintenanceWindow(start=window.start, end=window.end, timezone="UTC")
    day = 24 * 3600.0
    campaign = rig.create(
        ids(vehicles),
        deployment_strategy="immediate",
        maintenance_window=window.model_dump(),
        max_concurrent_updates=3,
        batch_size=3,
    )
    with rig.running_fleet(vehicles) as fleet:
        rig.clock.shift(-day - 6 * 3600)  # yesterday, 6 h before the window opened
        assert not window.contains(rig.clock.now())
        rig.cloud.campaigns.start(campaign.campaign_id)
        assert rig.monitor_pass(campaign.campaign_id) == 0
        assert rig.records(campaign.campaign_id) == {}
        rig.clock.shift(-day)  # yesterday, inside the window: one batch
        assert window.contains(rig.clock.now())
        assert rig.monitor_pass(campaign.campaign_id) == 3
        rig.clock.shift(-day + 4 * 3600)  # the window closed 2 h ago
        assert not window.contains(rig.clock.now())
        cid = campaign.campaign_id
        rig.wait_for(
            fleet,
            cid,
            lambda: rig.cloud.campaigns.get(cid).counters.in_progress == 0,
            "yesterday's batch finished",
        )
        # Slots are free, reports came in, the monitor passes: the window is shut.
        assert rig.monitor_pass(cid) == 3
        assert rig.cloud.campaigns.get(cid).counters.completed == 3
        rig.clock.shift(0)  # today, inside the window again
        assert rig.monitor_pass(cid) == 6
        rig.wait_status(fleet, cid, C.COMPLETED)
        rig.settle(fleet, campaign)
        received = rig.notifications(fleet)
    records = rig.records(campaign.campaign_id)
    assert received == dict.fromkeys(ids(vehicles), 1)  # each once, none twice
    moments = sorted(at(r.notified_at_ms) for r in records.values())
    assert all(window.contains(m) for m in moments), moments
    assert not any(as_utc.contains(m) for m in moments), moments
    yesterday = [m for m in moments if m < real - timedelta(hours=12)]
    assert (len(yesterday), len(moments)) == (3, 7)


# -- approval ----------------------------------------------------------------------------


def test_nothing_is_notified_before_approval_then_the_rollout_percentage_is(rig: Rig) -> None:
    """Also BR-OTA-015: a 60 % rollout over 10 vehicles notifies 6; 4 never hear of it."""
    vehicles = rig.provision("5V2CAPP", 10)
    campaign = rig.create(
        ids(vehicles),
        created_by="fleet-manager",
        deployment_strategy="immediate",
        requires_approval=True,
        rollout_percentage=60,
    )
    cid = campaign.campaign_id
    assert campaign.target_count == 6
    chosen = set(rig.plan(campaign)[0])
    with rig.running_fleet(vehicles) as fleet:
        with pytest.raises(Conflict, match="approval"):
            rig.cloud.campaigns.start(cid)
        assert rig.monitor_pass(cid) == 0
        assert rig.records(cid) == {}
        approved = rig.cloud.campaigns.approve(cid, "release-approver", "staging soak passed")
        assert (approved.approved_by, approved.approval_comment) == (
            "release-approver",
            "staging soak passed",
        )
        assert approved.status is C.CREATED  # approval is not a start
        assert rig.monitor_pass(cid) == 0
        rig.cloud.campaigns.start(cid)
        rig.wait_status(fleet, cid, C.COMPLETED)
        rig.settle(fleet, campaign)
        received = rig.notifications(fleet)
    records = rig.records(cid)
    assert set(records) == chosen
    assert received == {v: int(v in chosen) for v in ids(vehicles)}
    assert approved.approved_at_ms is not None
    assert min(r.notified_at_ms for r in records.values()) >= approved.approved_at_ms


def test_a_rejected_campaign_is_final_and_nobody_is_ever_notified(rig: Rig) -> None:
    vehicles = rig.provision("5V2CREJ", 5)
    campaign = rig.create(ids(vehicles), deployment_strategy="immediate", requires_approval=True)
    cid = campaign.campaign_id
    with rig.running_fleet(vehicles) as fleet:
        rejected = rig.cloud.campaigns.reject(cid, "release-approver", "wrong build")
        assert (rejected.status, rejected.status_reason) == (C.REJECTED, "wrong build")
        assert rejected.rejected_by == "release-approver"
        for command in (rig.cloud.campaigns.start, rig.cloud.campaigns.resume):
            with pytest.raises(Conflict):
                command(cid)
        with pytest.raises(Conflict):
            rig.cloud.campaigns.approve(cid, "someone-else")
        rig.clock.shift(6 * 3600)
        assert rig.monitor_pass(cid) == 0
        rig.clock.shift(0)
        # The vehicles were listening: a campaign that is not rejected reaches them.
        probe = rig.create(ids(vehicles), deployment_strategy="immediate")
        rig.cloud.campaigns.start(probe.campaign_id)
        rig.wait_status(fleet, probe.campaign_id, C.COMPLETED)
        received = rig.notifications(fleet)
    assert rig.status(cid) is C.REJECTED
    assert rig.records(cid) == {}
    rejected = rig.cloud.campaigns.get(cid).counters  # never notified: all cancelled
    assert (rejected.pending, rejected.cancelled, rejected.total) == (0, 5, 5)
    assert received == dict.fromkeys(ids(vehicles), 1)  # the probe's, and only it
    assert set(rig.records(probe.campaign_id)) == set(ids(vehicles))
