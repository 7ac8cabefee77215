"""Signed commands reach a vehicle over the real broker and stop its update.

Real mosquitto, real moto, the gateway with the production rules and a
campaign through the OTA services, as in `test_vehicle_runtime`. The
vehicle's download cannot finish: its link drops at 40 % of the package and
stays down (the download fault proxy), so the update is reliably "not yet
installing" when the command comes. The command is signed by the cloud's
own signer and published on the vehicle's `.../commands/request` at the
contract's QoS for commands (1). The campaign is cancelled through the
services, which record the cancel and publish the campaign's CANCEL_UPDATE
themselves; the test then publishes the same decision again from a client of
its own (the same command id, signed again, a new message): whichever copy
arrives first is acted on, the other changes nothing, so the test does not
depend on how the services publish, and shows a vehicle acts on a command once.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from fleet_support import (
    LoopThread,
    patient_rules,
    trusted_keys,
    upload_firmware,
    wait_progressing,
)
from gateway_support import running_gateway
from mqtt_clients import paho_client

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.contract.topics import Domain, qos_for
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.fleet import Vehicle as RegistryEntry
from v2c.handlers.ota.vehicle_commands import cancel_update
from v2c.handlers.signing.command import sign_command
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

S = OTAStatus
VIN = "VIN-5V2CRTM0000000002"
REASON = "bad build found"
SPEC = VehicleSpec(
    VIN,
    "Accord",
    "eu-west-1",
    installed_version="1.0.0",
    faults=VehicleFaults.of(ConnectionLost(at_percent=40)),
)


def _vehicle(
    directory: Path, broker: MosquittoBroker, cloud: OtaServices, proxy: DownloadFaultProxy
) -> Vehicle:
    return Vehicle(
        directory,
        SPEC,
        MqttTarget(broker.host, broker.port),
        trusted_keys(cloud),
        sim=SimTime(0.002),
        fault_proxy=proxy,
        config=RuntimeConfig(keep_reports=True),
    )


def _start_campaign(cloud: OtaServices, loop: LoopThread, car: Vehicle) -> tuple[str, str]:
    """A campaign for the vehicle, waited on until its download is stuck."""
    cloud.deps.fleet.put([RegistryEntry(VIN, "Accord", "eu-west-1", 2024, "Honda", "", "1.0.0")])
    firmware_id = upload_firmware(cloud, "2.0.0", image_bytes=1024 * 1024)
    campaign = cloud.campaigns.create(
        {"name": "stopped", "firmware_id": firmware_id, "target_devices": [VIN]}
    ).campaign
    cloud.campaigns.start(campaign.campaign_id)
    update_id = campaign.release.update_id
    wait_progressing(
        lambda: cloud.deps.updates.get(VIN, update_id).state is UpdateState.PAUSED,
        lambda: _progress(loop, car.ota),
        what="the cloud saw the download paused",
    )
    assert _package_files(loop, car.ota, update_id), "part of the package is on board"
    return campaign.campaign_id, update_id


def _package_files(loop: LoopThread, runtime: VehicleRuntime, update_id: str) -> list[Path]:
    files: list[Path] = loop.call(lambda: list(runtime.flash.packages_dir.glob(f"{update_id}.*")))
    return files


def _progress(loop: LoopThread, runtime: VehicleRuntime) -> tuple[int, int, int]:
    result: tuple[int, int, int] = loop.call(
        lambda: (runtime.report_count, runtime.delivered, runtime.commands)
    )
    return result


def _send_cancel(
    broker: MosquittoBroker, cloud: OtaServices, campaign_id: str, update_id: str
) -> str:
    """The campaign's CANCEL_UPDATE (the decision `campaigns.cancel` took, so
    the same command id), signed and published again; its id."""
    command = cancel_update(
        campaign_id=campaign_id,
        update_id=update_id,
        reason=REASON,
        now_ms=int(time.time() * 1000),
    )
    envelope = sign_command(cloud.deps.signer, command)
    envelope.header.message_id = uuid.uuid4().bytes
    envelope.header.correlation_id = command.command_id
    with paho_client(broker) as client:
        client.publish(SPEC.command_topic(), envelope.SerializeToString(), qos_for(Domain.COMMANDS))
    return command.command_id


def _cancelled(loop: LoopThread, runtime: VehicleRuntime) -> bool:
    state: tuple[str, str] = loop.call(lambda: runtime.state)
    return state == ("REJECTED", "CAMPAIGN_CANCELLED")


def _assert_stopped(
    loop: LoopThread, runtime: VehicleRuntime, cloud: OtaServices, update_id: str, sent: str
) -> None:
    """The vehicle stopped on a cancel command and kept its version and nothing else."""
    reports: list[OTAStatus] = loop.call(lambda: list(runtime.reports))
    snapshot = loop.call(runtime.agent.snapshot)
    rejected = [r for r in reports if r.state == S.REJECTED]
    assert len(rejected) == 1, "the vehicle answers a cancel once"
    assert rejected[0].reason == S.CAMPAIGN_CANCELLED
    assert f"CANCEL_UPDATE command {sent}: {REASON}" in rejected[0].error_detail
    assert rejected[0].installed_version == "1.0.0"
    assert not any(r.state == S.INSTALLING for r in reports)
    assert loop.call(lambda: (runtime.installed_version, runtime.busy)) == ("1.0.0", False)
    assert _package_files(loop, runtime, update_id) == [], "the partial package is discarded"
    # one decision, however many copies: one command id acted on
    assert snapshot["commands"] == [sent]
    assert runtime.errors == 0
    wait_progressing(
        lambda: cloud.deps.updates.get(VIN, update_id).state is UpdateState.CANCELLED,
        lambda: _progress(loop, runtime),
        what="the cloud's record cancelled",
    )


def test_a_vehicle_stuck_downloading_stops_on_a_signed_cancel_and_keeps_its_version(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    with running_gateway(MqttEndpoint(broker.host, broker.port), patient_rules()):
        proxy = DownloadFaultProxy(outage_requests=1_000_000)
        loop.run(proxy.start())
        car = _vehicle(tmp_path / "vehicle", broker, cloud, proxy)
        loop.run(car.start())
        try:
            campaign_id, update_id = _start_campaign(cloud, loop, car)
            cloud.campaigns.cancel(campaign_id, reason=REASON)
            sent = _send_cancel(broker, cloud, campaign_id, update_id)
            wait_progressing(
                lambda: _cancelled(loop, car.ota),
                lambda: _progress(loop, car.ota),
                what="the vehicle reported the cancel",
            )
            assert car.ota.commands >= 1
            _assert_stopped(loop, car.ota, cloud, update_id, sent)
        finally:
            loop.run(car.stop())
            loop.run(proxy.stop())


def test_an_offline_vehicle_gets_the_cancel_from_its_session_when_it_reconnects(
    stack: StackSettings,
    cloud: OtaServices,
    broker: MosquittoBroker,
    loop: LoopThread,
    tmp_path: Path,
) -> None:
    directory = tmp_path / "vehicle"
    with running_gateway(MqttEndpoint(broker.host, broker.port), patient_rules()):
        proxy = DownloadFaultProxy(outage_requests=1_000_000)
        loop.run(proxy.start())
        first = _vehicle(directory, broker, cloud, proxy)
        loop.run(first.start())  # connected once: the broker holds its subscriptions
        try:
            campaign_id, update_id = _start_campaign(cloud, loop, first)
        finally:
            loop.run(first.stop())  # offline; the persistent session stays
        try:
            cloud.campaigns.cancel(campaign_id, reason=REASON)
            sent = _send_cancel(broker, cloud, campaign_id, update_id)  # queued by the broker
            # the vehicle comes back (the link for its download still down)
            second = _vehicle(directory, broker, cloud, proxy)
            loop.run(second.start())
            try:
                wait_progressing(
                    lambda: _cancelled(loop, second.ota),
                    lambda: _progress(loop, second.ota),
                    what="the reconnected vehicle reported the queued cancel",
                )
                assert second.ota.commands >= 1
                _assert_stopped(loop, second.ota, cloud, update_id, sent)
            finally:
                loop.run(second.stop())
        finally:
            loop.run(proxy.stop())
