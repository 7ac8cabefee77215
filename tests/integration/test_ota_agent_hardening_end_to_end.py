"""Issue #11, vehicle agent: unverified messages and slow servers cannot hurt a real update.

Real mosquitto, real moto (S3, DynamoDB, KMS), the gateway with the
production rules table and `ota_status` handler, and the real vehicle
runtime (agent, downloader, A/B flash) over its own persistent MQTT session.

* A forged notification reusing a real update id (signed by a key the
  vehicle does not trust, under the trusted key's id) is published the way
  the cloud publishes, through the OTA services' notifier: before the genuine
  one, and while the genuine one is downloading. The genuine update's record
  is untouched by it, and the update completes.
* A download server trickling a few bytes at a time is given up by the
  minimum-progress rule (DOWNLOAD_TIMEOUT, long before the overall
  deadline); the slot is free and the next genuine update is installed.

Nothing waits on wall-clock time to decide: the tests wait for the events
they expect (reports, records, counters); the download hold is a
`threading.Event` released by the test.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import requests
from fleet_support import LoopThread, trusted_keys, upload_firmware
from gateway_support import running_gateway, wait_until
from http_fileserver import FileServer
from prometheus_client import REGISTRY

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.rules import RULES
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.fleet import Vehicle as RegistryEntry
from v2c.handlers.ota.notifier import Notification
from v2c.handlers.signing.manifest import sign_manifest
from v2c.handlers.signing.software import SoftwareSigner
from v2c.infra.local.broker import MosquittoBroker
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus
from v2c.vehicle_sim.mqtt_async import MqttTarget
from v2c.vehicle_sim.ota.agent.memory import Phase
from v2c.vehicle_sim.ota.device.fault_proxy import DownloadFaultProxy
from v2c.vehicle_sim.ota.device.faults import VehicleFaults
from v2c.vehicle_sim.ota.device.runtime import VehicleRuntime
from v2c.vehicle_sim.ota.device.sim_time import SimTime
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig, VehicleSpec
from v2c.vehicle_sim.vehicle import Vehicle

if TYPE_CHECKING:
    pass


S = OTAStatus
VIN = "VIN-5V2CRTM0000000011"
REGION = "eu-west-1"
UNVERIFIED = "v2c_ota_unverified_notifications_total"


class Redirect(DownloadFaultProxy):
    """Sends the downloads of chosen firmware to a local HTTP server (with
    fault knobs) instead of S3; everything else goes to S3 as usual."""

    def __init__(self, routes: dict[str, str]) -> None:
        super().__init__()
        self.routes = routes
        self.redirected = 0

    def url_for(self, vehicle_id: str, faults: VehicleFaults, url: str) -> str:
        for firmware_id, target in self.routes.items():
            if firmware_id in url:
                self.redirected += 1
                return target
        return url


def register(cloud: OtaServices) -> None:
    cloud.deps.fleet.put([RegistryEntry(VIN, "Accord", REGION, 2024, "Honda", "", "1.0.0")])


def runtime(
    directory: Path,
    cloud: OtaServices,
    broker: MosquittoBroker,
    *,
    proxy: DownloadFaultProxy | None = None,
    config: RuntimeConfig | None = None,
) -> Vehicle:
    return Vehicle(
        directory,
        VehicleSpec(VIN, "Accord", REGION, installed_version="1.0.0"),
        MqttTarget(broker.host, broker.port),
        trusted_keys(cloud),
        sim=SimTime(0.002),
        fault_proxy=proxy,
        config=config or RuntimeConfig(keep_reports=True),
    )


def publish_forged(cloud: OtaServices, update_id: str, campaign_id: str, firmware_id: str) -> None:
    """A notification naming the real update, signed by an attacker's key
    under the cloud's key id, sent the way the cloud sends notifications
    (its notifier and publisher, with a valid download URL)."""
    attacker = SoftwareSigner.generate(key_id=cloud.deps.signer.key_id)
    manifest = OTAManifest(
        update_id=update_id,
        campaign_id=campaign_id,
        version="6.6.6",
        size_bytes=1024,
        checksum_sha256=b"\x66" * 32,
        target_model="Accord",
        expires_at=4_000_000_000_000,
    )
    signed = sign_manifest(attacker, manifest)
    sent = cloud.deps.notifier.send(
        Notification(
            vehicle_id=VIN,
            region=REGION,
            update_id=update_id,
            device_update_id="forged",
            firmware_id=firmware_id,
            manifest=signed.manifest,
            signature=signed.signature,
            key_id=signed.key_id,
        )
    )
    assert sent, "the forged notification was not published"


def unverified_count() -> float:
    return REGISTRY.get_sample_value(UNVERIFIED, {"target": "known_update"}) or 0.0


def reports_of(loop: LoopThread, vehicle: VehicleRuntime) -> list[OTAStatus]:
    reports: list[OTAStatus] = loop.call(lambda: list(vehicle.reports))
    return reports


def genuine(reports: list[OTAStatus]) -> list[OTAStatus]:
    return [r for r in reports if not r.notification_unverified]


def check_forged_report(report: OTAStatus, update_id: str) -> None:
    assert report.notification_unverified
    assert (report.update_id, report.state, report.reason) == (
        update_id,
        S.REJECTED,
        S.SIGNATURE_VERIFICATION_FAILED,
    )
    assert report.sequence == 1  # the vehicle's first unverified notification


def test_a_forged_notification_before_the_genuine_one_leaves_its_record_untouched(
    cloud: OtaServices, broker: MosquittoBroker, loop: LoopThread, tmp_path: Path
) -> None:
    register(cloud)
    firmware_id = upload_firmware(cloud, "2.0.0")
    directory = tmp_path / "vehicle"
    with running_gateway(MqttEndpoint(broker.host, broker.port), RULES):
        # Given a vehicle that subscribed once and is now offline (the broker
        # keeps its session and queues its QoS 2 messages in order)
        first_car = runtime(directory, cloud, broker)
        loop.run(first_car.start())
        loop.run(first_car.stop())
        campaign = cloud.campaigns.create(
            {"name": "forged-first", "firmware_id": firmware_id, "target_devices": [VIN]}
        ).campaign
        update_id = campaign.release.update_id
        counted = unverified_count()
        # When a forged notification for the real update id is queued first,
        # then the campaign sends the genuine one
        publish_forged(cloud, update_id, campaign.campaign_id, firmware_id)
        cloud.campaigns.start(campaign.campaign_id)
        assert cloud.deps.updates.get(VIN, update_id).state is UpdateState.NOTIFIED
        car = runtime(directory, cloud, broker)
        vehicle = car.ota
        loop.run(car.start())
        # Then the cloud counts the vehicle's rejection of the forged one ...
        wait_until(lambda: unverified_count() >= counted + 1, what="the forged report ingested")
        # ... and the genuine update completes all the same
        wait_until(
            lambda: cloud.campaigns.get(campaign.campaign_id).status is CampaignStatus.COMPLETED,
            timeout=60,
            what="the campaign completed",
        )
        loop.run(car.stop())
    reports = reports_of(loop, vehicle)
    check_forged_report(reports[0], update_id)  # the forged one came first
    real = genuine(reports)
    assert [r.sequence for r in real] == list(range(1, len(real) + 1))
    assert (real[0].state, real[-1].state) == (S.ACCEPTED, S.COMPLETED)
    record = cloud.deps.updates.get(VIN, update_id)
    assert (record.state, record.reason) == (UpdateState.COMPLETED, "")
    assert record.last_sequence == real[-1].sequence
    assert record.installed_version == vehicle.installed_version == "2.0.0"
    counters = cloud.campaigns.get(campaign.campaign_id).counters
    assert (counters.completed, counters.failed) == (1, 0)
    assert vehicle.errors == 0


def test_a_forged_notification_during_the_download_leaves_the_record_untouched(
    cloud: OtaServices, broker: MosquittoBroker, loop: LoopThread, tmp_path: Path
) -> None:
    register(cloud)
    firmware_id = upload_firmware(cloud, "2.0.0")
    # The package, served by a local server that holds every request until released
    package = tmp_path / "package.swu"
    package.write_bytes(
        requests.get(cloud.deps.packages.download_url(firmware_id), timeout=30).content
    )
    release = threading.Event()
    with (
        running_gateway(MqttEndpoint(broker.host, broker.port), RULES),
        FileServer(package) as server,
    ):
        server.faults.hold = release
        proxy = Redirect({firmware_id: server.url})
        car = runtime(tmp_path / "vehicle", cloud, broker, proxy=proxy)
        vehicle = car.ota
        try:
            loop.run(car.start())
            campaign = cloud.campaigns.create(
                {"name": "forged-during", "firmware_id": firmware_id, "target_devices": [VIN]}
            ).campaign
            update_id = campaign.release.update_id
            cloud.campaigns.start(campaign.campaign_id)
            # Given the genuine update downloading (held open by the server)
            wait_until(
                lambda: loop.call(lambda: vehicle.agent.phase) is Phase.DOWNLOADING,
                what="the vehicle downloading",
            )
            sequence = loop.call(lambda: vehicle.agent.last_sequence(update_id))
            wait_until(
                lambda: cloud.deps.updates.get(VIN, update_id).last_sequence == sequence,
                what="the cloud seeing the download",
            )
            before = cloud.deps.updates.get(VIN, update_id)
            assert before.state is UpdateState.DOWNLOADING
            counted = unverified_count()
            # When a forged notification for the same update id arrives
            publish_forged(cloud, update_id, campaign.campaign_id, firmware_id)
            wait_until(
                lambda: any(r.notification_unverified for r in reports_of(loop, vehicle)),
                what="the vehicle rejecting the forged notification",
            )
            wait_until(lambda: unverified_count() >= counted + 1, what="the forged report ingested")
            # Then the record is exactly as the genuine reports left it
            assert cloud.deps.updates.get(VIN, update_id) == before
            assert loop.call(lambda: vehicle.agent.last_sequence(update_id)) == sequence
            assert loop.call(lambda: vehicle.agent.phase) is Phase.DOWNLOADING
            # And once the server lets the bytes through, the update completes
            release.set()
            wait_until(
                lambda: (
                    cloud.campaigns.get(campaign.campaign_id).status is CampaignStatus.COMPLETED
                ),
                timeout=60,
                what="the campaign completed",
            )
        finally:
            release.set()
            loop.run(car.stop())
    assert proxy.redirected >= 1
    reports = reports_of(loop, vehicle)
    [forged] = [r for r in reports if r.notification_unverified]
    check_forged_report(forged, update_id)
    real = genuine(reports)
    assert [r.sequence for r in real] == list(range(1, len(real) + 1))
    assert real[-1].state == S.COMPLETED
    record = cloud.deps.updates.get(VIN, update_id)
    assert (record.state, record.last_sequence) == (UpdateState.COMPLETED, real[-1].sequence)
    counters = cloud.campaigns.get(campaign.campaign_id).counters
    assert (counters.completed, counters.failed) == (1, 0)
    assert vehicle.installed_version == "2.0.0"
    assert vehicle.errors == 0


def test_a_trickling_download_fails_by_minimum_progress_and_frees_the_slot(
    cloud: OtaServices, broker: MosquittoBroker, loop: LoopThread, tmp_path: Path
) -> None:
    register(cloud)
    slow_firmware = upload_firmware(cloud, "2.0.0")
    next_firmware = upload_firmware(cloud, "2.1.0")
    package = tmp_path / "slow.swu"
    package.write_bytes(
        requests.get(cloud.deps.packages.download_url(slow_firmware), timeout=30).content
    )
    # A server that sends 64 bytes every 20 ms: never silent for the stall
    # timeout; the rule here asks 64 KiB per second of transfer (the overall
    # deadline is at least 120 s of real time away).
    config = RuntimeConfig(
        keep_reports=True, min_progress_bytes=64 * 1024, min_progress_window_real_s=1.0
    )
    with (
        running_gateway(MqttEndpoint(broker.host, broker.port), RULES),
        FileServer(package) as server,
    ):
        server.faults.trickle_bytes = 64
        server.faults.trickle_interval_s = 0.02
        proxy = Redirect({slow_firmware: server.url})
        car = runtime(tmp_path / "vehicle", cloud, broker, proxy=proxy, config=config)
        vehicle = car.ota
        try:
            loop.run(car.start())
            slow = cloud.devices.update_device(VIN, {"firmware_id": slow_firmware})
            # The slow update fails DOWNLOAD_TIMEOUT by the rule, and the cloud agrees
            wait_until(
                lambda: cloud.deps.updates.get(VIN, slow.update_id).state is UpdateState.FAILED,
                timeout=60,
                what="the trickling download given up",
            )
            failed = cloud.deps.updates.get(VIN, slow.update_id)
            assert failed.reason == "DOWNLOAD_TIMEOUT"
            assert "minimum progress" in failed.error_detail
            assert not loop.call(lambda: vehicle.busy)  # the slot is free
            # The next genuine update is accepted and installed
            server.faults.clear()
            following = cloud.devices.update_device(VIN, {"firmware_id": next_firmware})
            wait_until(
                lambda: (
                    cloud.deps.updates.get(VIN, following.update_id).state is UpdateState.COMPLETED
                ),
                timeout=60,
                what="the next update installed",
            )
        finally:
            loop.run(car.stop())
    assert proxy.redirected >= 1
    reports = reports_of(loop, vehicle)
    slow_reports = [r for r in reports if r.update_id == slow.update_id]
    assert (slow_reports[-1].state, slow_reports[-1].reason) == (S.FAILED, S.DOWNLOAD_TIMEOUT)
    assert not [r for r in reports if r.reason == S.UPDATE_IN_PROGRESS]
    assert vehicle.installed_version == "2.1.0"
    assert vehicle.errors == 0
