"""Pre- and post-update steps end to end (BR-OTA-027): a campaign names them, the
cloud signs them into the manifest, each simulated vehicle runs them around its
installation, and a failing pre-update step leaves the vehicle on its version.

Real mosquitto, real moto, the gateway with the production rules, the OTA
services and a `FleetSimulator`; the vehicles' actions are simulated as instant
steps (`RuntimeConfig.failing_update_steps` names the ones that fail).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_support import LoopThread, fleet_progress, patient_rules, upload_firmware
from fleet_support import wait_progressing as wait
from gateway_support import running_gateway

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.fleet_provisioning import stack_fleet
from v2c.infra.settings import StackSettings
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.agent.checks import AgentPolicy
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig

pytestmark = pytest.mark.timeout(600)

FLEET = 3
STEPS = {
    "pre_update_steps": [
        {"action": "stop_service", "argument": "navigation"},
        {"action": "backup_config", "argument": "infotainment"},
    ],
    "post_update_steps": [{"action": "restart_service", "argument": "navigation"}],
}


def _run(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
    failing: frozenset[str],
    final: CampaignStatus,
) -> tuple[dict[str, list[OTAStatus]], dict[str, str], CampaignStatus, int, int]:
    fleet = stack_fleet(
        stack,
        FLEET,
        models=("Accord",),
        time_scale=0.002,
        base_dir=tmp_path / "fleet",
        config=RuntimeConfig(
            policy=AgentPolicy(progress_step_percent=100),
            keep_reports=True,
            failing_update_steps=failing,
        ),
    )
    firmware_id = upload_firmware(cloud, "2.0.0", image_bytes=64 * 1024)
    with running_gateway(MqttEndpoint(broker.host, broker.port), patient_rules(), workers=4):
        loop.run(fleet.start(), timeout=180)
        try:
            campaign = cloud.campaigns.create(
                {
                    "name": "with steps",
                    "firmware_id": firmware_id,
                    "target_filter": "model = 'Accord'",
                    "deployment_strategy": "immediate",
                    "max_concurrent_updates": FLEET,
                    "batch_size": FLEET,
                    # one failed pre-step of three must not pause or roll back
                    "failure_threshold_percent": 100,
                    "pause_threshold_percent": 100,
                    **STEPS,
                }
            ).campaign
            cid = campaign.campaign_id
            cloud.campaigns.start(cid)
            wait(
                lambda: cloud.campaigns.get(cid).status is final,
                lambda: (fleet_progress(fleet, loop), cloud.campaigns.get(cid).counters),
                what=f"the campaign {final.value}",
            )
            reports = loop.call(lambda: {v: list(r.reports) for v, r in fleet.runtimes.items()})
            versions = loop.call(
                lambda: {v: r.installed_version for v, r in fleet.runtimes.items()}
            )
            done = cloud.campaigns.get(cid)
        finally:
            loop.run(fleet.stop(), timeout=30)
    return reports, versions, done.status, done.counters.completed, done.counters.failed


def test_every_vehicle_runs_the_signed_steps_around_its_installation(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    reports, versions, status, completed, failed = _run(
        stack, cloud, broker, loop, tmp_path, frozenset(), CampaignStatus.COMPLETED
    )
    assert (status, completed, failed) == (CampaignStatus.COMPLETED, FLEET, 0)
    assert versions == dict.fromkeys(versions, "2.0.0")
    for vehicle, sent in reports.items():
        states = [OTAStatus.State.Name(r.state) for r in sent]
        # INSTALLING begins at 0 %, then each of the two pre-steps is reported
        # (2 %, 4 %) before the slot write's own progress.
        installing = [r.progress_percent for r in sent if r.state == OTAStatus.INSTALLING]
        assert installing[:3] == [0, 2, 4], vehicle
        assert states[-1] == "COMPLETED"
        assert sent[-1].error_detail == "", vehicle  # the post-step worked


def test_a_failing_pre_update_step_fails_the_update_before_anything_is_written(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    reports, versions, _status, completed, failed = _run(
        stack,
        cloud,
        broker,
        loop,
        tmp_path,
        frozenset({"backup_config"}),
        CampaignStatus.COMPLETED,
    )
    assert (completed, failed) == (0, FLEET)
    assert versions == dict.fromkeys(versions, "1.0.0")  # the running slot untouched
    for vehicle, sent in reports.items():
        last = sent[-1]
        assert OTAStatus.State.Name(last.state) == "FAILED", vehicle
        assert OTAStatus.Reason.Name(last.reason) == "PRE_UPDATE_STEP_FAILED"
        assert "pre-update step 2/2 backup_config(infotainment) failed" in last.error_detail
