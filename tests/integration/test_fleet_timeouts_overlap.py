"""Timeouts, overlapping campaigns and a forced re-flash, closed loop over simulated vehicles.

Real mosquitto, real moto, the gateway with the production rules and the OTA
services on one steerable clock (`strategy_support.Rig`); a few vehicles per
test (`FleetSimulator`: each its own persistent MQTT session, A/B flash and
update agent, 500 times faster than real time). Every verdict is read twice:
from DynamoDB (the records and the campaign's counters) and from what the
vehicles did (their reports, the version they run, the slot that boots).

* A vehicle that goes silent after it was notified is timed out by the
  monitor once the campaign's `timeout_minutes` passed on the services'
  clock (a retry first, then TIMED_OUT), counted as a failure that fails
  the canary gate, and sent a signed CANCEL_UPDATE, which reaches it from
  its persistent session when it comes back: it drops the update.
* Two campaigns on the same vehicles: one of equal priority waits for the
  vehicles busy with the other (`waiting`, never a failure) and proceeds
  once their updates ended; a critical one supersedes the updates not yet
  installing (cancelled, not failed, in their own campaign) and completes.
* A device update of the version a vehicle already runs is refused (409)
  unless `force_update`, and with it the vehicle re-flashes its other slot.

Vehicles are held "in flight, not installing" deterministically by the
`in_use` fault: driving for a simulated year, they defer the update
(DEFERRED VEHICLE_IN_USE) and stay so for the whole test.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest
from fleet_support import fleet_progress, upload_firmware, wait_progressing
from strategy_support import INSTALLED, TARGET, Outage, Rig, ids, open_rig

from v2c.contract.errors import Conflict
from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus
from v2c.vehicle_sim.fleet.simulator import FleetSimulator
from v2c.vehicle_sim.ota.device.faults import FaultProfile
from v2c.vehicle_sim.ota.device.flash_port import factory_image

# A generous bound per test: the waits fail on their own when nothing moves.
pytestmark = pytest.mark.timeout(600)

C = CampaignStatus
U = UpdateState
S = OTAStatus
A_YEAR_S = 365 * 24 * 3600.0
NEWER = "2.1.0"
MINUTE_S = 60.0


@pytest.fixture(scope="module")
def rig(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with open_rig(moto_server, tmp_path_factory.mktemp("timeouts-overlap")) as built:
        yield built


@pytest.fixture(scope="module")
def newer(rig: Rig) -> str:
    """2.1.0: the second campaign's firmware."""
    return upload_firmware(rig.cloud, NEWER, image_bytes=32 * 1024)


@pytest.fixture(autouse=True)
def real_time(rig: Rig) -> Iterator[None]:
    rig.clock.shift(0)
    yield
    rig.clock.shift(0)


def driving(vins: list[str]) -> FaultProfile:
    """These vehicles are driven for a year from the first update offered."""
    return FaultProfile.parse(
        {
            "name": "driving",
            "seed": "timeouts-overlap",
            "faults": {"in_use": {"vins": vins, "duration_s": A_YEAR_S}},
        }
    )


def at_least(rig: Rig, moment_s: float) -> None:
    """Move the services' clock so that it reads `moment_s` (epoch s) or later."""
    rig.clock.shift(max(rig.clock.offset_s, moment_s - time.time()))


def states(rig: Rig, fleet: FleetSimulator) -> dict[str, tuple[str, str, str]]:
    """Each vehicle's last report (state, reason) and the version it runs."""
    result: dict[str, tuple[str, str, str]] = rig.loop.call(
        lambda: {v: (*r.state, r.installed_version) for v, r in fleet.runtimes.items()}
    )
    return result


def reports(rig: Rig, fleet: FleetSimulator, vehicle: str, update_id: str) -> list[S]:
    """Every report `vehicle` made about `update_id`, oldest first."""
    made: list[S] = rig.loop.call(
        lambda: [s for s in fleet.runtimes[vehicle].reports if s.update_id == update_id]
    )
    return made


def counts(rig: Rig, fleet: FleetSimulator, attribute: str) -> dict[str, int]:
    """A per-vehicle runtime counter: `notifications`, `commands`, `report_count`."""
    result: dict[str, int] = rig.loop.call(
        lambda: {v: getattr(r, attribute) for v, r in fleet.runtimes.items()}
    )
    return result


def record_states(rig: Rig, campaign_id: str) -> dict[str, UpdateState]:
    return {v: r.state for v, r in rig.records(campaign_id).items()}


def counter_values(campaign: Campaign) -> dict[str, int]:
    c = campaign.counters
    return {
        "pending": c.pending,
        "in_progress": c.in_progress,
        "completed": c.completed,
        "failed": c.failed,
        "rolled_back": c.rolled_back,
        "cancelled": c.cancelled,
        "timed_out": c.timed_out,
        "waiting": c.waiting,
    }


# -- 1. a vehicle silent past the campaign's timeout ------------------------------------


def test_a_vehicle_silent_past_the_timeout_is_retried_timed_out_and_told_to_stop(
    rig: Rig,
) -> None:
    vehicles = rig.provision("5V2CTMT", 5)
    campaign = rig.create(
        ids(vehicles),
        deployment_strategy="canary",
        canary_size=2,
        timeout_minutes=5,
        max_retries=1,
        # One failure of five is 20 %, not more: the campaign-wide thresholds
        # stay quiet, and the canary gate (more than 20 % of its two) decides.
        pause_threshold_percent=20,
        failure_threshold_percent=50,
    )
    cid = campaign.campaign_id
    canary, rest = rig.plan(campaign)
    assert (len(canary), len(rest)) == (2, 3)
    silent, healthy = canary
    with rig.running_fleet(vehicles, driving([silent]), keep_reports=True) as fleet:
        rig.cloud.campaigns.start(cid)
        assert set(rig.records(cid)) == set(canary)

        def healthy_done_silent_deferred() -> bool:
            records = rig.records(cid)
            return (
                records[healthy].state is U.COMPLETED
                and records[silent].state is U.DEFERRED
                and states(rig, fleet)[silent][:2] == ("DEFERRED", "VEHICLE_IN_USE")
            )

        rig.wait_for(fleet, cid, healthy_done_silent_deferred, "the canary under way")
        # The silent vehicle drives out of coverage and is switched off.
        outage = Outage(rig.loop, fleet, silent)
        outage.begin()
        before = rig.records(cid)[silent]
        reported = counts(rig, fleet, "report_count")[silent]
        deadline_s = (before.notified_at_ms + 5 * 60_000) / 1000

        # Half a minute before the deadline the monitor leaves it alone.
        at_least(rig, deadline_s - 30)
        rig.monitor_pass(cid)
        assert rig.records(cid)[silent].state is U.DEFERRED
        # At the deadline: one retry left, so it is notified again with a new
        # deadline, still in progress, no failure counted.
        at_least(rig, deadline_s + 1)
        rig.monitor_pass(cid)
        retried = rig.records(cid)[silent]
        assert (retried.state, retried.retries, retried.notifications) == (U.NOTIFIED, 1, 2)
        assert retried.notified_at_ms > before.notified_at_ms
        assert rig.status(cid) is C.IN_PROGRESS
        assert rig.cloud.campaigns.get(cid).counters.failures == 0
        # The retry's own deadline passes: no retry left, TIMED_OUT.
        at_least(rig, (retried.notified_at_ms + 5 * 60_000) / 1000 + 1)
        rig.monitor_pass(cid)

        timed_out = rig.cloud.campaigns.get(cid)
        record = rig.records(cid)[silent]
        assert (record.state, record.retries) == (U.TIMED_OUT, 1)
        assert record_states(rig, cid) == {healthy: U.COMPLETED, silent: U.TIMED_OUT}
        assert counter_values(timed_out) == {
            "pending": 3,
            "in_progress": 0,
            "completed": 1,
            "failed": 0,
            "rolled_back": 0,
            "cancelled": 0,
            "timed_out": 1,
            "waiting": 0,
        }
        assert timed_out.counters.total == 5
        assert timed_out.wave_counters[0].timed_out == 1
        # The timeout is a failure for the canary gate: it fails, the campaign
        # pauses, and the rest of the fleet is never notified.
        assert timed_out.status is C.PAUSED
        assert timed_out.gate is not None
        assert (timed_out.gate["wave"], timed_out.gate["verdict"]) == ("canary", "fail_pause")
        assert (timed_out.gate["completed"], timed_out.gate["failures"]) == (1, 1)
        assert timed_out.status_reason.startswith("canary gate failed")
        assert rig.monitor_pass(cid) == 2
        assert {v: counts(rig, fleet, "notifications")[v] for v in rest} == dict.fromkeys(rest, 0)
        # Switched off all along: it heard nothing and said nothing meanwhile.
        assert counts(rig, fleet, "report_count")[silent] == reported
        assert counts(rig, fleet, "commands")[silent] == 0

        # Back in coverage: the broker hands it the retry's notification and
        # the signed CANCEL_UPDATE it kept; the vehicle drops the update.
        runtime = fleet.runtimes[silent]
        received = rig.status_handling()
        delivered: int = rig.loop.call(lambda: runtime.delivered)
        outage.end()

        def cancelled_and_applied() -> bool:
            """Cancelled on board, and every report since it came back applied
            (or ignored) by the cloud: delivered, received, handled."""
            sent = rig.loop.call(lambda: (runtime.delivered, runtime.report_count))
            now = rig.status_handling()
            return (
                states(rig, fleet)[silent][:2] == ("REJECTED", "CAMPAIGN_CANCELLED")
                and sent[0] == sent[1]
                and now[0] - received[0] >= sent[0] - delivered
                and now[0] == now[1] + now[2]
            )

        rig.wait_for(fleet, cid, cancelled_and_applied, "the silent vehicle cancelled")
        vehicle_states = states(rig, fleet)
        assert vehicle_states[silent] == ("REJECTED", "CAMPAIGN_CANCELLED", INSTALLED)
        assert vehicle_states[healthy] == ("COMPLETED", "", TARGET)
        assert not rig.loop.call(lambda: fleet.runtimes[silent].busy)
        # One cancel acted on: the cloud may send the timeout's command again
        # when the back-online vehicle reports DEFERRED for the retry before
        # it reads the queued cancel (ADR 0011's reconciliation), under the
        # same command id, which the vehicle acts on once.
        assert 1 <= counts(rig, fleet, "commands")[silent] <= 2
        assert counts(rig, fleet, "notifications")[silent] == 2
        update_id = campaign.release.update_id
        [cancel_report] = [
            s for s in reports(rig, fleet, silent, update_id) if s.state == S.REJECTED
        ]
        assert "CANCEL_UPDATE command" in cancel_report.error_detail
        assert "timed out" in cancel_report.error_detail
        assert not any(s.state == S.COMPLETED for s in reports(rig, fleet, silent, update_id))
    # The cloud's verdict stands: the rejection after TIMED_OUT moves nothing.
    final = rig.cloud.campaigns.get(cid)
    assert counter_values(final) == counter_values(timed_out)
    assert rig.records(cid)[silent].state is U.TIMED_OUT
    registered = rig.cloud.deps.fleet.get(silent)
    assert registered is not None
    assert registered.installed_version == INSTALLED
    assert rig.status_handling()[2] == 0  # no report dead-lettered


# -- 2. two campaigns on the same vehicles ------------------------------------------------


def _first_campaign_holding(
    rig: Rig, fleet: FleetSimulator, vehicles: list[str], held: list[str]
) -> Campaign:
    """Campaign A (normal priority) over `vehicles`: the parked ones complete
    it, the `held` ones (driving) keep it DEFERRED, in flight, not installing."""
    first = rig.create(vehicles, deployment_strategy="immediate", priority="normal")
    rig.cloud.campaigns.start(first.campaign_id)
    parked = [v for v in vehicles if v not in held]

    def under_way() -> bool:
        records = record_states(rig, first.campaign_id)
        seen = states(rig, fleet)
        return (
            all(records.get(v) is U.COMPLETED for v in parked)
            and all(records.get(v) is U.DEFERRED for v in held)
            and all(seen[v] == ("COMPLETED", "", TARGET) for v in parked)
            and all(seen[v][:2] == ("DEFERRED", "VEHICLE_IN_USE") for v in held)
        )

    rig.wait_for(fleet, first.campaign_id, under_way, "A completed or deferred everywhere")
    return first


def test_an_equal_priority_campaign_waits_for_busy_vehicles_and_never_counts_them_failed(
    rig: Rig, newer: str
) -> None:
    vehicles = rig.provision("5V2CWAT", 6)
    everyone = ids(vehicles)
    held, parked = everyone[:3], everyone[3:]
    with rig.running_fleet(vehicles, driving(held), keep_reports=True) as fleet:
        first = _first_campaign_holding(rig, fleet, everyone, held)
        second = rig.create(
            everyone,
            firmware_id=newer,
            deployment_strategy="immediate",
            priority="normal",
            can_install_while_driving=True,
        )
        a, b = first.campaign_id, second.campaign_id
        started = rig.cloud.campaigns.start(b)
        # Equal priority: the busy vehicles are recorded WAITING, not notified.
        assert (started.counters.waiting, started.counters.failures) == (3, 0)
        waiting = rig.records(b)
        assert {v: waiting[v].state for v in held} == dict.fromkeys(held, U.WAITING)
        assert {v: waiting[v].notifications for v in parked} == dict.fromkeys(parked, 1)
        assert {v: waiting[v].notifications for v in held} == dict.fromkeys(held, 0)
        for vehicle in held:
            assert f"vehicle busy with update {first.release.update_id}" in waiting[vehicle].reason
            assert f"campaign {a}" in waiting[vehicle].reason
        rig.wait_for(
            fleet,
            b,
            lambda: rig.cloud.campaigns.get(b).counters.completed == 3,
            "B completed on the free vehicles",
        )
        assert rig.status(b) is C.IN_PROGRESS  # its waiting vehicles are still to come
        # A later monitor pass weighs them again: still busy with A, still waiting.
        at_least(rig, time.time() + 2 * MINUTE_S)
        rig.monitor_pass(b)
        assert {v: rig.records(b)[v].state for v in held} == dict.fromkeys(held, U.WAITING)
        assert {v: counts(rig, fleet, "notifications")[v] for v in held} == dict.fromkeys(held, 1)

        # A's updates end (the fleet manager cancels A): the vehicles drop them...
        rig.cloud.campaigns.cancel(a, reason="superseded by 2.1.0")

        def dropped() -> bool:
            seen = states(rig, fleet)
            return all(seen[v][:2] == ("REJECTED", "CAMPAIGN_CANCELLED") for v in held)

        rig.wait_for(fleet, a, dropped, "the held vehicles dropped A")
        # ...and the next pass notifies B's waiting updates.
        at_least(rig, time.time() + 4 * MINUTE_S)
        rig.monitor_pass(b)
        released = rig.records(b)
        assert not {v for v in held if released[v].state is U.WAITING}
        assert {v: released[v].notifications for v in held} == dict.fromkeys(held, 1)
        rig.wait_status(fleet, b, C.COMPLETED)
        rig.settle(fleet, second)
        seen = states(rig, fleet)
        received = counts(rig, fleet, "notifications")
        reported_b = {v: reports(rig, fleet, v, second.release.update_id) for v in held}
    final_a, final_b = rig.cloud.campaigns.get(a), rig.cloud.campaigns.get(b)
    assert counter_values(final_b) == {
        "pending": 0,
        "in_progress": 0,
        "completed": 6,
        "failed": 0,
        "rolled_back": 0,
        "cancelled": 0,
        "timed_out": 0,
        "waiting": 0,
    }
    assert counter_values(final_a) == {
        "pending": 0,
        "in_progress": 0,
        "completed": 3,
        "failed": 0,
        "rolled_back": 0,
        "cancelled": 3,
        "timed_out": 0,
        "waiting": 0,
    }
    assert final_a.status is C.CANCELLED
    assert seen == dict.fromkeys(everyone, ("COMPLETED", "", NEWER))
    assert received == dict.fromkeys(everyone, 2)  # A's once, B's once: no crossing
    # B reached the held vehicles only once they were free: none answered busy.
    for vehicle, made in reported_b.items():
        assert [s.reason for s in made if s.state == S.REJECTED] == [], vehicle
        assert made[-1].state == S.COMPLETED
    assert {v: rig.records(b)[v].notifications for v in everyone} == dict.fromkeys(everyone, 1)
    assert rig.status_handling()[2] == 0


def test_a_critical_campaign_supersedes_updates_not_yet_installing_and_completes(
    rig: Rig, newer: str
) -> None:
    vehicles = rig.provision("5V2CSUP", 6)
    everyone = ids(vehicles)
    held = everyone[:3]
    with rig.running_fleet(vehicles, driving(held), keep_reports=True) as fleet:
        first = _first_campaign_holding(rig, fleet, everyone, held)
        second = rig.create(
            everyone,
            firmware_id=newer,
            deployment_strategy="immediate",
            priority="critical",
            can_install_while_driving=True,
        )
        a, b = first.campaign_id, second.campaign_id
        started = rig.cloud.campaigns.start(b)
        # Critical over normal: nobody waits; A's deferred updates are cancelled.
        assert (started.counters.waiting, started.counters.failures) == (0, 0)
        assert started.counters.in_progress + started.counters.completed == 6
        superseded = rig.cloud.campaigns.get(a)
        assert (superseded.counters.cancelled, superseded.counters.failures) == (3, 0)
        records_a = rig.records(a)
        for vehicle in held:
            assert records_a[vehicle].state is U.CANCELLED
            assert records_a[vehicle].reason == f"superseded by campaign {b}"
        rig.wait_status(fleet, b, C.COMPLETED)
        rig.settle(fleet, second)
        seen = states(rig, fleet)
        received = counts(rig, fleet, "notifications")
        commanded = counts(rig, fleet, "commands")
        reported_a = {v: reports(rig, fleet, v, first.release.update_id) for v in held}
        reported_b = {v: reports(rig, fleet, v, second.release.update_id) for v in held}
        rig.monitor_pass(a)  # A has nothing outstanding: the pass finishes it
    final_a, final_b = rig.cloud.campaigns.get(a), rig.cloud.campaigns.get(b)
    assert counter_values(final_b) == {
        "pending": 0,
        "in_progress": 0,
        "completed": 6,
        "failed": 0,
        "rolled_back": 0,
        "cancelled": 0,
        "timed_out": 0,
        "waiting": 0,
    }
    assert counter_values(final_a) == {
        "pending": 0,
        "in_progress": 0,
        "completed": 3,
        "failed": 0,
        "rolled_back": 0,
        "cancelled": 3,
        "timed_out": 0,
        "waiting": 0,
    }
    assert final_a.status is C.COMPLETED
    assert seen == dict.fromkeys(everyone, ("COMPLETED", "", NEWER))
    assert received == dict.fromkeys(everyone, 2)
    # Only the superseded vehicles were told to stop A, each once.
    assert commanded == {v: int(v in held) for v in everyone}
    for vehicle in held:
        last_a = reported_a[vehicle][-1]
        assert (last_a.state, last_a.reason) == (S.REJECTED, S.CAMPAIGN_CANCELLED), vehicle
        assert f"superseded by campaign {b}" in last_a.error_detail
        assert not any(s.state == S.REJECTED for s in reported_b[vehicle]), vehicle
        assert reported_b[vehicle][-1].state == S.COMPLETED
    assert rig.status_handling()[2] == 0


# -- 3. a forced re-flash of the running version -------------------------------------------


def test_force_update_reflashes_the_running_version_and_without_it_is_refused(
    rig: Rig,
) -> None:
    vehicles = rig.provision("5V2CFRC", 1)
    [vehicle] = ids(vehicles)
    image_bytes = 32 * 1024
    same = upload_firmware(rig.cloud, INSTALLED, image_bytes=image_bytes)
    body = {"firmware_id": same, "timeout_minutes": 5, "max_retries": 0}
    with rig.running_fleet(vehicles, keep_reports=True) as fleet:
        runtime = fleet.runtimes[vehicle]

        def slots() -> tuple[object, str, str]:
            installer = runtime.flash.installer
            running = installer.running.slot
            image = installer.flash.read_slot(running)
            assert image is not None
            return running, image.version, image.sha256

        slot_before, version_before, sha_before = rig.loop.call(slots)
        factory = factory_image(vehicle, INSTALLED, runtime.config.factory_image_bytes)
        assert (version_before, sha_before) == (INSTALLED, hashlib.sha256(factory).hexdigest())

        # Without force: the cloud's version check refuses it, nothing is sent.
        with pytest.raises(Conflict, match=f"runs {INSTALLED}; set force_update") as refused:
            rig.cloud.devices.update_device(vehicle, body)
        assert refused.value.http_status == 409
        assert rig.cloud.devices.history(vehicle) == []

        update = rig.cloud.devices.update_device(vehicle, {**body, "force_update": True})
        manifest = OTAManifest.FromString(update.manifest)
        assert (manifest.force_update, manifest.version) == (True, INSTALLED)

        def reflashed() -> bool:
            record = rig.cloud.deps.updates.find(vehicle, update.update_id)
            return (
                record is not None
                and record.state is U.COMPLETED
                and states(rig, fleet)[vehicle][0] == "COMPLETED"
            )

        wait_progressing(
            reflashed,
            lambda: (
                fleet_progress(fleet, rig.loop),
                rig.cloud.deps.updates.find(vehicle, update.update_id),
            ),
            what="the forced re-flash",
        )
        slot_after, version_after, sha_after = rig.loop.call(slots)
        made = reports(rig, fleet, vehicle, update.update_id)
    # The other slot now holds the package's image of the same version, and boots.
    assert slot_after != slot_before
    image = (f"v2c image Accord {INSTALLED}\n".encode() * (image_bytes // 24 + 1))[:image_bytes]
    assert (version_after, sha_after) == (INSTALLED, hashlib.sha256(image).hexdigest())
    assert sha_after != sha_before
    states_made = [s.state for s in made]
    assert S.REJECTED not in states_made
    assert S.INSTALLING in states_made
    assert (made[-1].state, made[-1].installed_version) == (S.COMPLETED, INSTALLED)
    record = rig.cloud.deps.updates.get(vehicle, update.update_id)
    assert (record.state, record.from_version, record.to_version) == (
        U.COMPLETED,
        INSTALLED,
        INSTALLED,
    )
    registered = rig.cloud.deps.fleet.get(vehicle)
    assert registered is not None
    assert registered.installed_version == INSTALLED
    assert rig.status_handling()[2] == 0
