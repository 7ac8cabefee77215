"""Cancel and rollback reach the vehicles: the issue's closed-loop acceptance (#15).

"Automatic rollback after the failure threshold: every vehicle that was in
flight or completed ends on the previous version, and the counters say so."
"Campaign cancel during a wave: vehicles not yet installing stay on the old
version, none reports COMPLETED afterwards."

Real mosquitto, real moto, the gateway with the production rules, the OTA
services, a `FleetSimulator` of vehicles with A/B flash and update agents.
Which vehicles are "in flight, not installing" is deterministic: the
`in_use` fault keeps a vehicle driving (DEFERRED VEHICLE_IN_USE) for a
simulated year, far beyond the test, so the cancel or the rollback always
finds it before its installation; which vehicles fail to boot is a pure
function of the profile's seed and the VIN. The test checks those draws
first, so a change to the selection shows up as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fleet_support import (
    LoopThread,
    fleet_progress,
    patient_rules,
    upload_firmware,
    wait_progressing,
)
from gateway_support import running_gateway

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.fleet_provisioning import stack_fleet
from v2c.infra.settings import StackSettings
from v2c.vehicle_sim.fleet.simulator import FleetSimulator
from v2c.vehicle_sim.ota.agent.checks import AgentPolicy
from v2c.vehicle_sim.ota.device.faults import FaultMode, FaultProfile
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig

pytestmark = pytest.mark.timeout(600)

FLEET = 12
TIME_SCALE = 0.002
A_YEAR_S = 365 * 24 * 3600.0


def _fleet(
    stack: StackSettings, tmp_path: Path, profile: dict[str, Any]
) -> tuple[FleetSimulator, set[str], set[str]]:
    fleet = stack_fleet(
        stack,
        FLEET,
        models=("Accord",),
        faults=FaultProfile.parse(profile),
        time_scale=TIME_SCALE,
        base_dir=tmp_path / "fleet",
        config=RuntimeConfig(policy=AgentPolicy(progress_step_percent=100)),
    )
    driving = {s.vehicle_id for s in fleet.specs if FaultMode.IN_USE in s.faults.modes}
    failing = {s.vehicle_id for s in fleet.specs if FaultMode.BOOT_FAILURE in s.faults.modes}
    return fleet, driving, failing - driving


def _states(fleet: FleetSimulator, loop: LoopThread) -> dict[str, tuple[str, str, str]]:
    result: dict[str, tuple[str, str, str]] = loop.call(
        lambda: {vid: (*r.state, r.installed_version) for vid, r in fleet.runtimes.items()}
    )
    return result


def _wait(
    fleet: FleetSimulator,
    loop: LoopThread,
    cloud: OtaServices,
    campaign_id: str,
    done: Any,
    what: str,
) -> None:
    wait_progressing(
        done,
        lambda: (fleet_progress(fleet, loop), cloud.campaigns.get(campaign_id).counters),
        what=what,
    )


def test_campaign_cancel_during_a_wave_stops_every_vehicle_not_yet_installing(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    fleet, driving, _ = _fleet(
        stack,
        tmp_path,
        {
            "name": "half of them driving",
            "seed": "cancel-wave-1",
            "faults": {"in_use": {"share": 0.5, "duration_s": A_YEAR_S}},
        },
    )
    assert 3 <= len(driving) <= FLEET - 3, "the fault profile's seed no longer picks as planned"
    parked = {s.vehicle_id for s in fleet.specs} - driving
    firmware_id = upload_firmware(cloud, "2.0.0", image_bytes=64 * 1024)
    with running_gateway(MqttEndpoint(broker.host, broker.port), patient_rules(), workers=4):
        loop.run(fleet.start(), timeout=180)
        try:
            campaign = cloud.campaigns.create(
                {
                    "name": "cancelled mid-wave",
                    "firmware_id": firmware_id,
                    "target_filter": "model = 'Accord'",
                    "deployment_strategy": "immediate",
                    "max_concurrent_updates": FLEET,
                    "batch_size": FLEET,
                },
            ).campaign
            cid = campaign.campaign_id
            cloud.campaigns.start(cid)

            def wave_under_way() -> bool:
                states = _states(fleet, loop)
                return all(states[v][0] == "COMPLETED" for v in parked) and all(
                    states[v][:2] == ("DEFERRED", "VEHICLE_IN_USE") for v in driving
                )

            _wait(fleet, loop, cloud, cid, wave_under_way, "the parked vehicles done")
            cloud.campaigns.cancel(cid, reason="bad build found")

            def all_stopped() -> bool:
                states = _states(fleet, loop)
                return all(states[v][:2] == ("REJECTED", "CAMPAIGN_CANCELLED") for v in driving)

            _wait(fleet, loop, cloud, cid, all_stopped, "every driving vehicle stopped")
            states = _states(fleet, loop)
            busy = loop.call(lambda: {v for v, r in fleet.runtimes.items() if r.busy})
            # The vehicles that had not started installing run the old version,
            # hold no update and keep no package; those that finished keep theirs.
            assert {v: states[v][2] for v in driving} == dict.fromkeys(driving, "1.0.0")
            assert {v: states[v][2] for v in parked} == dict.fromkeys(parked, "2.0.0")
            assert busy == set()
            # Nothing more from them: a deferred update would be retried every
            # in-use retry period (600 simulated s); three periods pass in silence.
            reports_stopped = loop.call(
                lambda: {v: fleet.runtimes[v].report_count for v in driving}
            )
            loop.run(fleet.sim.sleep(1800), timeout=60)
            assert (
                loop.call(lambda: {v: fleet.runtimes[v].report_count for v in driving})
                == reports_stopped
            )
            assert {v: _states(fleet, loop)[v][0] for v in driving} == dict.fromkeys(
                driving, "REJECTED"
            )
            # The cloud agrees: cancelled, counted, nobody completed since.
            final = cloud.campaigns.get(cid)
            assert final.status is CampaignStatus.CANCELLED
            counters = final.counters
            assert counters.completed == len(parked)
            assert counters.cancelled == len(driving)
            assert counters.total == FLEET
            update_id = campaign.release.update_id
            for vid in driving:
                record = cloud.deps.updates.find(vid, update_id)
                assert record is not None
                assert record.state is UpdateState.CANCELLED
        finally:
            loop.run(fleet.stop(), timeout=30)
    assert fleet.summary().errors == 0


def test_automatic_rollback_returns_every_vehicle_in_flight_or_completed(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    fleet, driving, failing = _fleet(
        stack,
        tmp_path,
        {
            "name": "a bad build",
            "seed": "rollback-wave-2",
            "faults": {
                "in_use": {"share": 0.3, "duration_s": A_YEAR_S},
                "boot_failure": {"share": 0.4},
            },
        },
    )
    finishing = {s.vehicle_id for s in fleet.specs} - driving
    assert len(driving) >= 2, "the fault profile's seed changed"
    assert len(failing) >= 3, "the fault profile's seed changed"
    assert len(finishing - failing) >= 2, "the fault profile's seed changed"
    upload_firmware(cloud, "1.0.0", image_bytes=64 * 1024)  # what to roll back to
    firmware_id = upload_firmware(cloud, "2.0.0", image_bytes=64 * 1024)
    with running_gateway(MqttEndpoint(broker.host, broker.port), patient_rules(), workers=4):
        loop.run(fleet.start(), timeout=180)
        try:
            campaign = cloud.campaigns.create(
                {
                    "name": "rolled back on its own",
                    "firmware_id": firmware_id,
                    "target_filter": "model = 'Accord'",
                    "deployment_strategy": "immediate",
                    "max_concurrent_updates": FLEET,
                    "batch_size": FLEET,
                    "failure_threshold_percent": 20,
                    "auto_rollback": True,
                },
            ).campaign
            cid = campaign.campaign_id
            cloud.campaigns.start(cid)

            def everyone_back() -> bool:
                states = _states(fleet, loop)
                status = cloud.campaigns.get(cid).status
                return (
                    status is CampaignStatus.ROLLED_BACK
                    and all(s[2] == "1.0.0" and s[0] != "IDLE" for s in states.values())
                    and not loop.call(lambda: any(r.busy for r in fleet.runtimes.values()))
                )

            _wait(fleet, loop, cloud, cid, everyone_back, "every vehicle back on 1.0.0")
            states = _states(fleet, loop)
            for vid in driving:
                assert states[vid][:2] == ("REJECTED", "CAMPAIGN_CANCELLED"), vid
            final = cloud.campaigns.get(cid)
            counters = final.counters
            # Nobody counts as completed: each completion was reverted, each
            # boot failure fell back on its own, and whoever had not started
            # installing when the threshold broke (the driving vehicles at
            # least) was stopped by the command.
            assert counters.completed == 0
            assert counters.total == FLEET
            assert counters.rolled_back + counters.cancelled == FLEET
            assert counters.cancelled >= len(driving)
            assert counters.rolled_back >= len(failing)
            rows = cloud.deps.rollbacks.for_campaign(cid)
            assert rows, "no rollback recorded"
            assert {r["to_version"] for r in rows} == {"1.0.0"}
        finally:
            loop.run(fleet.stop(), timeout=30)
    assert fleet.summary().errors == 0
