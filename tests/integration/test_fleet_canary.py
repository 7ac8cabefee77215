"""The canary gate against a simulated fleet: the issue's end-to-end acceptance.

"A canary campaign over 100 simulated vehicles with 2 % boot failures
completes the canary, passes the gate and rolls out; the same with 15 %
failures pauses the campaign. The final states in DynamoDB match what each
vehicle reported."

Real mosquitto, real moto, the gateway with the production rules, the OTA
services; 100 `VehicleRuntime`s in one `FleetSimulator` on one event loop,
each with its own MQTT session, A/B flash and update agent. A boot failure
is the installer's: the new image hangs, the watchdog resets it three
times, U-Boot falls back, the agent reports ROLLED_BACK BOOT_FAILURE.

No noise, by construction (so no flakes): which vehicles fail is a pure
function of the fault profile's seed and the VIN, and which vehicles form
the canary is a pure function of the campaign id, fixed here by the
creation's idempotency key. The seeds were chosen so that the 2 % profile
hits exactly 2 of the 100 vehicles, one inside the canary of 20 (19/20 =
95 % passes the gate) and one in the rollout; the 15 % profile hits 15, 3
of them in the canary (3/20 = 15 % > the 10 % pause threshold). The test
checks these preconditions first, so a change to the selection algorithms
shows up as such rather than as a mysterious verdict. The thresholds leave
no timing-dependent path: 1 failure can never exceed 10 % of >= 10
finished (the health rule's minimum sample), and the rollback threshold
(50 %) is out of reach of 3 failures, so the 15 % campaign pauses whichever
of the gate or the health check sees it first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fleet_support import (
    LoopThread,
    cloud_mismatches,
    fleet_progress,
    patient_rules,
    upload_firmware,
    wait_progressing,
)
from gateway_support import running_gateway

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.fleet_provisioning import stack_fleet
from v2c.infra.settings import StackSettings
from v2c.vehicle_sim.fleet.simulator import FleetSimulator
from v2c.vehicle_sim.fleet.summary import TERMINAL
from v2c.vehicle_sim.ota.agent.checks import AgentPolicy
from v2c.vehicle_sim.ota.device.faults import FaultMode, FaultProfile
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig

if TYPE_CHECKING:
    pass

# Slow: 100 vehicles end to end through one moto process, ~40 s (2 %) and
# ~7 s (15 %) on a 2-vCPU machine; ~13 status reports per vehicle go through
# the gateway into DynamoDB, and moto serialises them.
# A generous per-test bound: the waits below fail on their own when nothing moves.
pytestmark = pytest.mark.timeout(600)

FLEET = 100
CANARY = 20
IDEMPOTENCY_KEY = "fleet-canary-7"
TIME_SCALE = 0.002  # a 620 s installation in 1.2 s; three hung boots in ~1.1 s


def boot_failures(share: float, seed: str) -> FaultProfile:
    return FaultProfile.parse(
        {"name": f"boot {share:.0%}", "seed": seed, "faults": {"boot_failure": {"share": share}}}
    )


def _campaign(cloud: OtaServices, firmware_id: str) -> Any:
    return cloud.campaigns.create(
        {
            "name": "canary over the simulated fleet",
            "firmware_id": firmware_id,
            "target_filter": "model = 'Accord'",
            "deployment_strategy": "canary",
            "canary_size": CANARY,
            "pause_threshold_percent": 10,
            "failure_threshold_percent": 50,
            "max_concurrent_updates": FLEET,
            "batch_size": FLEET,
        },
        idempotency_key=IDEMPOTENCY_KEY,
    ).campaign


def _canary(cloud: OtaServices, campaign: Any) -> set[str]:
    targets = cloud.deps.plans.read(campaign.campaign_id, 0, campaign.waves[0].end)
    return {t.vehicle_id for t in targets}


def _run_campaign(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
    profile: FaultProfile,
    *,
    expected_failures: int,
    expected_in_canary: int,
    final: CampaignStatus,
) -> tuple[FleetSimulator, Any]:
    fleet = stack_fleet(
        stack,
        FLEET,
        models=("Accord",),
        faults=profile,
        time_scale=TIME_SCALE,
        base_dir=tmp_path / "fleet",
        # Progress at 0 and 100 % only instead of every 10 %: the same walk
        # with 9 fewer reports per vehicle, as moto (one process) limits this test.
        config=RuntimeConfig(policy=AgentPolicy(progress_step_percent=100)),
    )
    failing = {s.vehicle_id for s in fleet.specs if FaultMode.BOOT_FAILURE in s.faults.modes}
    assert len(failing) == expected_failures, "the fault profile's seed no longer picks as planned"
    firmware_id = upload_firmware(cloud, "2.0.0", image_bytes=64 * 1024)
    endpoint = MqttEndpoint(broker.host, broker.port)
    # Four handler workers, not sixteen: moto serialises DynamoDB anyway, and
    # fewer reports of one vehicle racing each other means fewer retried writes.
    with running_gateway(endpoint, patient_rules(), workers=4):
        loop.run(fleet.start(), timeout=180)
        try:
            assert loop.call(lambda: fleet.summary().connected) == FLEET
            campaign = _campaign(cloud, firmware_id)
            canary = _canary(cloud, campaign)
            assert len(canary) == CANARY
            assert len(canary & failing) == expected_in_canary, "the canary draw changed"
            cloud.campaigns.start(campaign.campaign_id)
            update_id = campaign.release.update_id
            # ~40 s on an idle machine, three times that under load: wait as
            # long as vehicles report and the cloud counts, not a fixed time.
            wait_progressing(
                lambda: cloud.campaigns.get(campaign.campaign_id).status is final,
                lambda: (
                    fleet_progress(fleet, loop),
                    cloud.campaigns.get(campaign.campaign_id).counters,
                ),
                what=f"the campaign reached {final.value}",
            )
            # In-flight updates finish after a pause: wait for every vehicle to
            # come to rest (a boot failure passes through REBOOTING, where its
            # record agrees too) and the records to settle.
            problems: list[str] = []

            def agreed() -> bool:
                moving = {
                    state
                    for state in loop.call(lambda: fleet.summary().by_state)
                    if state not in TERMINAL and state != "IDLE"
                }
                problems[:] = [f"vehicles still {s}" for s in sorted(moving)]
                problems.extend(cloud_mismatches(cloud, fleet, loop, update_id))
                return not problems

            wait_progressing(
                agreed,
                lambda: (fleet_progress(fleet, loop), list(problems)),
                what="every cloud record matching what its vehicle reported",
            )
        finally:
            loop.run(fleet.stop(), timeout=30)
    return fleet, cloud.campaigns.get(campaign.campaign_id)


def test_two_percent_boot_failures_pass_the_canary_gate_and_roll_out(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    fleet, campaign = _run_campaign(
        stack,
        cloud,
        broker,
        loop,
        tmp_path,
        boot_failures(0.02, "fleet-boot-2pct-1"),
        expected_failures=2,
        expected_in_canary=1,
        final=CampaignStatus.COMPLETED,
    )
    summary = fleet.summary()
    assert summary.by_state_reason == {
        ("COMPLETED", ""): 98,
        ("ROLLED_BACK", "BOOT_FAILURE"): 2,
    }
    assert campaign.gate is not None
    assert campaign.gate["verdict"] == "pass"
    counters = campaign.counters
    assert (counters.completed, counters.rolled_back, counters.total) == (98, 2, FLEET)
    # The vehicles that fell back run the version they had, and say so.
    for runtime in fleet.runtimes.values():
        expected = "1.0.0" if runtime.state[0] == "ROLLED_BACK" else "2.0.0"
        assert runtime.installed_version == expected
    assert summary.errors == 0


def test_fifteen_percent_boot_failures_pause_the_campaign_after_the_canary(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    fleet, campaign = _run_campaign(
        stack,
        cloud,
        broker,
        loop,
        tmp_path,
        boot_failures(0.15, "fleet-boot-15pct-3"),
        expected_failures=15,
        expected_in_canary=3,
        final=CampaignStatus.PAUSED,
    )
    summary = fleet.summary()
    # The canary finished (17 completed, 3 fell back); nobody else was notified.
    assert summary.by_state_reason == {
        ("IDLE", ""): FLEET - CANARY,
        ("COMPLETED", ""): CANARY - 3,
        ("ROLLED_BACK", "BOOT_FAILURE"): 3,
    }
    assert campaign.status is CampaignStatus.PAUSED
    assert campaign.counters.pending == FLEET - CANARY
    assert summary.notifications == CANARY
    assert summary.errors == 0
