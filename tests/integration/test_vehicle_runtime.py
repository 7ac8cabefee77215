"""One simulated vehicle's OTA runtime against a real stack.

Real mosquitto, real moto (S3, DynamoDB, KMS), the gateway with the
production rules table, a campaign created through the OTA services and a
real update package in the firmware registry. The vehicle runs the update
agent behind its asyncio runtime: QoS 2 over its own persistent MQTT
session, the package over HTTP Range requests from the presigned moto URL,
the A/B flash, reboot, verification, commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fleet_support import (
    LoopThread,
    patient_rules,
    trusted_keys,
    upload_firmware,
    wait_progressing,
)
from gateway_support import running_gateway

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.fleet import Vehicle as RegistryEntry
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.settings import StackSettings
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.mqtt_async import MqttTarget
from v2c.vehicle_sim.ota.device.fault_proxy import DownloadFaultProxy
from v2c.vehicle_sim.ota.device.faults import ConnectionLost, VehicleFaults
from v2c.vehicle_sim.ota.device.runtime import VehicleRuntime
from v2c.vehicle_sim.ota.device.sim_time import SimTime
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig, VehicleSpec
from v2c.vehicle_sim.vehicle import Vehicle

if TYPE_CHECKING:
    pass


S = OTAStatus
VIN = "VIN-5V2CRTM0000000001"


def _progress(loop: LoopThread, vehicle: VehicleRuntime) -> tuple[int, int, int]:
    """What moves while one vehicle updates: reports made, delivered, notifications."""
    result: tuple[int, int, int] = loop.call(
        lambda: (vehicle.report_count, vehicle.delivered, vehicle.notifications)
    )
    return result


def test_a_vehicle_downloads_installs_reboots_verifies_and_commits_a_campaign_update(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    # Given a registered vehicle running 1.0.0 and a 2.0.0 package in the registry
    spec = VehicleSpec(VIN, "Accord", "eu-west-1", installed_version="1.0.0")
    cloud.deps.fleet.put([RegistryEntry(VIN, "Accord", "eu-west-1", 2024, "Honda", "", "1.0.0")])
    firmware_id = upload_firmware(cloud, "2.0.0")
    endpoint = MqttEndpoint(broker.host, broker.port)
    with running_gateway(endpoint, patient_rules()):
        # And the vehicle's runtime, connected over its own MQTT session
        sim = SimTime(0.002)
        car = Vehicle(
            tmp_path / "vehicle",
            spec,
            MqttTarget(broker.host, broker.port),
            trusted_keys(cloud),
            sim=sim,
            config=RuntimeConfig(keep_reports=True),
        )
        vehicle = car.ota
        loop.run(car.start())
        assert vehicle.installed_version == "1.0.0"
        # When a campaign targets it
        campaign = cloud.campaigns.create(
            {"name": "one", "firmware_id": firmware_id, "target_devices": [VIN]}
        ).campaign
        cloud.campaigns.start(campaign.campaign_id)
        # Then the cloud's record ends COMPLETED with the version the vehicle runs
        wait_progressing(
            lambda: cloud.campaigns.get(campaign.campaign_id).status is CampaignStatus.COMPLETED,
            lambda: _progress(loop, vehicle),
            what="the campaign completed",
        )
        loop.run(car.stop())
    record = cloud.deps.updates.get(VIN, campaign.release.update_id)
    assert record.state is UpdateState.COMPLETED
    assert record.installed_version == "2.0.0"
    assert cloud.deps.fleet.get(VIN).installed_version == "2.0.0"  # type: ignore[union-attr]
    # And the vehicle really runs 2.0.0 from its other slot, committed
    assert vehicle.installed_version == "2.0.0"
    states = [S.State.Name(r.state) for r in vehicle.reports]
    assert states[0] == "ACCEPTED"
    assert states[-1] == "COMPLETED"
    for expected in ("DOWNLOADING", "DOWNLOADED", "INSTALLING", "REBOOTING", "VERIFYING"):
        assert expected in states
    assert [r.sequence for r in vehicle.reports] == list(range(1, len(states) + 1))
    assert record.last_sequence == vehicle.reports[-1].sequence
    # the simulated durations are the FMEA's, not the milliseconds the disk took
    assert vehicle.reports[-1].install_duration_ms >= 600_000
    assert vehicle.errors == 0


def test_a_vehicle_killed_mid_download_resumes_from_its_partial_file_when_rebuilt(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    # Given a vehicle whose link drops at 40 % of the package and stays down
    faults = VehicleFaults.of(ConnectionLost(at_percent=40))
    spec = VehicleSpec(VIN, "Accord", "eu-west-1", installed_version="1.0.0", faults=faults)
    cloud.deps.fleet.put([RegistryEntry(VIN, "Accord", "eu-west-1", 2024, "Honda", "", "1.0.0")])
    firmware_id = upload_firmware(cloud, "2.0.0", image_bytes=1024 * 1024)
    endpoint = MqttEndpoint(broker.host, broker.port)
    sim = SimTime(0.002)
    directory = tmp_path / "vehicle"

    def runtime(proxy: DownloadFaultProxy | None) -> Vehicle:
        return Vehicle(
            directory,
            spec,
            MqttTarget(broker.host, broker.port),
            trusted_keys(cloud),
            sim=sim,
            fault_proxy=proxy,
            config=RuntimeConfig(keep_reports=True),
        )

    with running_gateway(endpoint, patient_rules()):
        down = DownloadFaultProxy(outage_requests=1_000_000)
        loop.run(down.start())
        first_car = runtime(down)
        first = first_car.ota
        loop.run(first_car.start())
        campaign = cloud.campaigns.create(
            {"name": "resume", "firmware_id": firmware_id, "target_devices": [VIN]}
        ).campaign
        cloud.campaigns.start(campaign.campaign_id)
        update_id = campaign.release.update_id
        wait_progressing(
            lambda: cloud.deps.updates.get(VIN, update_id).state is UpdateState.PAUSED,
            lambda: _progress(loop, first),
            what="the cloud saw the download paused",
        )
        paused_at = cloud.deps.updates.get(VIN, update_id).bytes_downloaded
        assert paused_at >= 0.4 * 1024 * 1024 * 0.9
        # When the process dies (tasks cancelled, objects dropped) ...
        loop.run(first_car.stop())
        loop.run(down.stop())
        last_sequence = first.reports[-1].sequence
        # ... and a new runtime is built on the same directory, the link healed
        second_car = runtime(None)
        second = second_car.ota
        loop.run(second_car.start())
        # Then it resumes from the partial file and completes
        wait_progressing(
            lambda: cloud.campaigns.get(campaign.campaign_id).status is CampaignStatus.COMPLETED,
            lambda: _progress(loop, second),
            what="the campaign completed after the restart",
        )
        loop.run(second_car.stop())
    resumed = [r for r in second.reports if r.state == S.DOWNLOADING]
    assert resumed, "the rebuilt runtime reported its download"
    assert resumed[0].bytes_downloaded >= paused_at  # resumed, not restarted from byte 0
    assert down.injected["cut"] == 1
    # numbering survived the restart: at most the unconfirmed last report is
    # re-sent under its own number, every new report continues above it
    fresh = [r.sequence for r in second.reports if r.sequence > last_sequence]
    assert fresh == list(range(last_sequence + 1, last_sequence + 1 + len(fresh)))
    assert all(r.sequence >= last_sequence for r in second.reports)
    record = cloud.deps.updates.get(VIN, update_id)
    assert record.state is UpdateState.COMPLETED
    assert record.installed_version == second.installed_version == "2.0.0"
