"""Every failure mode of a fault profile, one simulated vehicle each, over a real stack.

One vehicle per mode (named by VIN in the profile) and one without faults
take the same immediate campaign. Each ends where the FMEA says, through
the real runtime: conditions that clear by themselves (a vehicle plugged in,
a vehicle parked) defer and then complete; download faults are made on the
wire by the fault proxy (503s, a cut and an outage, a flipped byte);
installer faults happen on the modelled flash; a power cut mid-write
reboots the runtime from disk and the installation starts again. The cloud's
record of each vehicle ends in the state the vehicle reported last.

Same answer on an idle or a loaded machine: the vehicles' clock runs 500x
faster than real time, but what a mode needs at notification time does not
race it (a vehicle in use is still driving, a low one still unplugged, when
the notification is processed: the fault's story starts at the first offer,
`VehicleModel.begin`), and the waits last as long as vehicles and cloud
make progress, not a fixed number of seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

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
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.fleet.identity import vin_for
from v2c.vehicle_sim.ota.device.faults import FaultProfile
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig

if TYPE_CHECKING:
    pass

# A generous per-test bound: the waits below fail on their own when nothing moves.
pytestmark = pytest.mark.timeout(600)

# mode (with parameters) -> (final state, reason, a state seen on the way)
CASES: Final[list[tuple[str, dict[str, object], tuple[str, str], str | None]]] = [
    ("none", {}, ("COMPLETED", ""), None),
    ("low_battery", {"battery_percent": 12}, ("COMPLETED", ""), "DEFERRED"),
    ("in_use", {"duration_s": 600}, ("COMPLETED", ""), "DEFERRED"),
    ("low_storage", {}, ("REJECTED", "INSUFFICIENT_STORAGE"), None),
    ("s3_unavailable", {"failures": 3}, ("FAILED", "S3_UNAVAILABLE"), None),
    ("connection_lost", {"at_percent": 40}, ("COMPLETED", ""), "PAUSED"),
    ("checksum_mismatch", {}, ("FAILED", "CHECKSUM_MISMATCH"), None),
    ("signature_invalid", {}, ("REJECTED", "SIGNATURE_VERIFICATION_FAILED"), None),
    ("critical_dtc", {}, ("FAILED", "CRITICAL_DTC_PRESENT"), None),
    ("extraction", {}, ("FAILED", "EXTRACTION_FAILED"), None),
    ("flash_write", {}, ("FAILED", "FLASH_WRITE_FAILURE"), None),
    ("partition_unavailable", {}, ("FAILED", "PARTITION_UNAVAILABLE"), None),
    (
        "verification_failure",
        {},
        ("ROLLED_BACK", "POST_INSTALL_VERIFICATION_FAILED"),
        "VERIFYING",
    ),
    ("boot_failure", {}, ("ROLLED_BACK", "BOOT_FAILURE"), "REBOOTING"),
    ("power_cut", {"at_step": "write", "torn": True}, ("COMPLETED", ""), "INSTALLING"),
]


def _profile() -> FaultProfile:
    faults = {
        mode: {"vins": [vin_for(i)], **params}
        for i, (mode, params, _final, _seen) in enumerate(CASES)
        if mode != "none"
    }
    return FaultProfile.parse({"name": "one of each", "seed": "one-of-each", "faults": faults})


def test_each_failure_mode_ends_where_the_fmea_says_and_the_cloud_agrees(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    fleet = stack_fleet(
        stack,
        len(CASES),
        models=("Accord",),
        faults=_profile(),
        time_scale=0.002,
        base_dir=tmp_path / "fleet",
        config=RuntimeConfig(keep_reports=True),
    )
    firmware_id = upload_firmware(cloud, "2.0.0", image_bytes=256 * 1024)
    with running_gateway(MqttEndpoint(broker.host, broker.port), patient_rules(), workers=4):
        loop.run(fleet.start(), timeout=180)
        try:
            campaign = cloud.campaigns.create(
                {
                    "name": "one of each",
                    "firmware_id": firmware_id,
                    "target_filter": "model = 'Accord'",
                    "deployment_strategy": "immediate",
                    "pause_threshold_percent": 100,
                    "failure_threshold_percent": 100,
                    "max_retries": 0,
                    "max_concurrent_updates": 100,
                }
            ).campaign
            cloud.campaigns.start(campaign.campaign_id)
            wait_progressing(
                lambda: (
                    cloud.campaigns.get(campaign.campaign_id).status is CampaignStatus.COMPLETED
                ),
                lambda: (
                    fleet_progress(fleet, loop),
                    cloud.campaigns.get(campaign.campaign_id).counters,
                ),
                what="every vehicle finished",
            )
            update_id = campaign.release.update_id
            problems: list[str] = []

            def agreed() -> bool:
                problems[:] = cloud_mismatches(cloud, fleet, loop, update_id)
                return not problems

            wait_progressing(
                agreed,
                lambda: (fleet_progress(fleet, loop), list(problems)),
                what="every cloud record matching its vehicle",
            )
        finally:
            loop.run(fleet.stop())
    runtimes = list(fleet.runtimes.values())
    for (mode, _params, final, seen), runtime in zip(CASES, runtimes, strict=True):
        assert runtime.state == final, f"{mode}: {runtime.state}"
        states = {OTAStatus.State.Name(r.state) for r in runtime.reports}
        if seen is not None:
            assert seen in states, f"{mode}: never {seen} ({sorted(states)})"
        expected_version = "2.0.0" if final[0] == "COMPLETED" else "1.0.0"
        assert runtime.installed_version == expected_version, mode
        assert runtime.errors == 0, mode
    power_cut = runtimes[[c[0] for c in CASES].index("power_cut")]
    assert power_cut.power_cuts == 1
    assert fleet.proxy is not None
    assert fleet.proxy.injected["s3_unavailable"] == 3
    assert fleet.proxy.injected["cut"] == 1
    assert fleet.proxy.injected["corrupt"] == 1
