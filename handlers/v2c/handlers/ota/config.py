"""The OTA handlers' wiring from environment variables (the Lambda form).

Like `telemetry.config`: resources by name from the environment (the SAM
template sets them, the local stack exports them into the gateway), boto3
finds region, credentials and endpoint itself (`AWS_ENDPOINT_URL` locally).

| variable | default | meaning |
|---|---|---|
| CAMPAIGNS_TABLE | v2c-campaigns | |
| VEHICLE_UPDATES_TABLE | v2c-vehicle-updates | |
| VEHICLE_REGISTRY_TABLE | v2c-vehicle-registry | |
| ROLLBACKS_TABLE | v2c-rollbacks | |
| FIRMWARE_TABLE | v2c-firmware | |
| FIRMWARE_BUCKET | v2c-firmware | packages, campaign plans and the fleet index |
| OTA_DLQ_QUEUE | v2c-ota-dlq | failed notifications and refused status reports |
| EVENT_BUS | v2c-events | EventBridge bus; empty: no events |
| OTA_SIGNER | kms | `kms`, or `software` (development only) |
| OTA_SIGNING_KEY | alias/v2c-ota-signing | KMS key (alias, id, ARN); for `software` a PEM file |
| OTA_SIGNING_KEY_ID | (fingerprint) | the key id vehicles know the key by |
| OTA_MQTT_URL | (none) | `mqtts://host:port` (`mqtt://`: no TLS): local broker (see below) |
| OTA_MQTT_CA_FILE | (none) | with `mqtts`: the CA (PEM) that verifies the broker |
| OTA_MQTT_CERT_FILE | (none) | with `mqtts`: the service client certificate (PEM) |
| OTA_MQTT_KEY_FILE | (none) | with `mqtts`: its private key (PEM) |
| OTA_PLANNER_FUNCTION | (none) | plans large campaigns after creation answered (AWS: the monitor) |
| OTA_NOTIFY_CHUNK | 99 | targets per dispatch write (1-99: + the campaign = 100 items) |
| OTA_NOTIFY_WINDOW | 32 | IoT data plane publishes in flight at once (`send_many`) |
| IOT_DATA_ENDPOINT | (SDK default) | the account's `iot:Data-ATS` host for notifications |

Without `OTA_MQTT_URL` notifications go through the IoT data plane. With it,
the process hosting the handlers (the local gateway, the local API server)
must inject the sink that publishes to that broker
(`v2c.infra.local.wiring.use_local_ota_services`): handlers run as Lambda
functions, where no gateway exists, so they never build its publisher.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

import boto3
from botocore.config import Config

from v2c.contract.dead_letter import DeadLetterRecord
from v2c.contract.errors import ConfigurationError
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.aws_clients import DYNAMODB_CLIENT_CONFIG, aws_client_config
from v2c.handlers.dlq.store import DeadLetterStore, SqsDeadLetterStore
from v2c.handlers.ota.campaigns.deps import MAX_NOTIFY_CHUNK, CampaignConfig, CampaignServiceDeps
from v2c.handlers.ota.campaigns.plan_store import PlanStore
from v2c.handlers.ota.campaigns.planning_queue import (
    BackgroundPlanning,
    LambdaPlanning,
    PlanningQueue,
)
from v2c.handlers.ota.campaigns.repository import CampaignRepository
from v2c.handlers.ota.campaigns.rollback_log import RollbackLog
from v2c.handlers.ota.campaigns.service import CampaignService
from v2c.handlers.ota.devices import DeviceService
from v2c.handlers.ota.events import EventBridgePublisher
from v2c.handlers.ota.firmware.service import FirmwareService
from v2c.handlers.ota.firmware_catalog import FirmwareCatalog
from v2c.handlers.ota.fleet import FleetRegistry
from v2c.handlers.ota.fleet_index.store import FleetIndex
from v2c.handlers.ota.iot_sink import DEFAULT_WINDOW as IOT_NOTIFY_WINDOW
from v2c.handlers.ota.iot_sink import IotDataSink
from v2c.handlers.ota.metrics import PrometheusAlerts, signing_failed, signing_succeeded
from v2c.handlers.ota.notifier import NotificationSink, Notifier
from v2c.handlers.ota.stats import StatsService
from v2c.handlers.ota.status import StatusService
from v2c.handlers.ota.updates.repository import UpdateRepository
from v2c.handlers.ota.updates.scan import UpdateScan
from v2c.handlers.ota.vehicle_commands import VehicleCommands
from v2c.handlers.per_container import PerContainer
from v2c.handlers.signing.base import Signer
from v2c.handlers.signing.kms import KmsSigner
from v2c.handlers.signing.software import SoftwareSigner

OTA_DLQ_NAME: Final = "ota"


@dataclass(frozen=True, slots=True)
class OtaConfig:
    campaigns_table: str = "v2c-campaigns"
    updates_table: str = "v2c-vehicle-updates"
    registry_table: str = "v2c-vehicle-registry"
    rollbacks_table: str = "v2c-rollbacks"
    firmware_table: str = "v2c-firmware"
    firmware_bucket: str = "v2c-firmware"
    ota_dlq_queue: str = "v2c-ota-dlq"
    event_bus: str = "v2c-events"
    signer: str = "kms"
    signing_key: str = "alias/v2c-ota-signing"
    signing_key_id: str | None = None
    mqtt_url: str | None = None
    mqtt_ca_file: str | None = None
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None
    planner_function: str | None = None
    endpoint_url: str | None = None
    notify_chunk: int = MAX_NOTIFY_CHUNK
    notify_window: int = IOT_NOTIFY_WINDOW
    iot_data_endpoint: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OtaConfig:
        env = os.environ if environ is None else environ
        d = cls()
        config = cls(
            campaigns_table=env.get("CAMPAIGNS_TABLE") or d.campaigns_table,
            updates_table=env.get("VEHICLE_UPDATES_TABLE") or d.updates_table,
            registry_table=env.get("VEHICLE_REGISTRY_TABLE") or d.registry_table,
            rollbacks_table=env.get("ROLLBACKS_TABLE") or d.rollbacks_table,
            firmware_table=env.get("FIRMWARE_TABLE") or d.firmware_table,
            firmware_bucket=env.get("FIRMWARE_BUCKET") or d.firmware_bucket,
            ota_dlq_queue=env.get("OTA_DLQ_QUEUE") or d.ota_dlq_queue,
            event_bus=env.get("EVENT_BUS", d.event_bus),
            signer=env.get("OTA_SIGNER") or d.signer,
            signing_key=env.get("OTA_SIGNING_KEY") or d.signing_key,
            signing_key_id=env.get("OTA_SIGNING_KEY_ID") or None,
            mqtt_url=env.get("OTA_MQTT_URL") or None,
            mqtt_ca_file=env.get("OTA_MQTT_CA_FILE") or None,
            mqtt_cert_file=env.get("OTA_MQTT_CERT_FILE") or None,
            mqtt_key_file=env.get("OTA_MQTT_KEY_FILE") or None,
            planner_function=env.get("OTA_PLANNER_FUNCTION") or None,
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            notify_chunk=_count(env, "OTA_NOTIFY_CHUNK", d.notify_chunk, MAX_NOTIFY_CHUNK),
            notify_window=_count(env, "OTA_NOTIFY_WINDOW", d.notify_window, 1_000),
            iot_data_endpoint=env.get("IOT_DATA_ENDPOINT") or None,
        )
        if config.signer not in ("kms", "software"):
            raise ConfigurationError(f"OTA_SIGNER must be kms or software, not {config.signer!r}")
        if config.mqtt_url is None:
            return config
        scheme = urlparse(config.mqtt_url).scheme
        if scheme not in ("mqtt", "mqtts"):
            raise ConfigurationError(
                f"OTA_MQTT_URL must look like mqtts://host:port, not {config.mqtt_url!r}"
            )
        if scheme == "mqtts" and not config.mqtt_ca_file:
            raise ConfigurationError("OTA_MQTT_URL is mqtts://: set OTA_MQTT_CA_FILE")
        if (config.mqtt_cert_file is None) != (config.mqtt_key_file is None):
            raise ConfigurationError("set OTA_MQTT_CERT_FILE and OTA_MQTT_KEY_FILE together")
        return config

    def mqtt_endpoint(self) -> MqttEndpoint | None:
        """The broker `OTA_MQTT_URL` names, for the local wiring's publisher;
        None: notifications go through the IoT data plane."""
        if self.mqtt_url is None:
            return None
        url = urlparse(self.mqtt_url)
        tls = url.scheme == "mqtts"
        return MqttEndpoint(
            host=url.hostname or "127.0.0.1",
            port=url.port or (8883 if tls else 1883),
            ca_file=self.mqtt_ca_file if tls else None,
            cert_file=self.mqtt_cert_file if tls else None,
            key_file=self.mqtt_key_file if tls else None,
        )


def _count(env: Mapping[str, str], name: str, default: int, most: int) -> int:
    raw = env.get(name) or ""
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {raw!r}") from None
    if not 1 <= value <= most:
        raise ConfigurationError(f"{name} must be 1-{most}, not {value}")
    return value


@dataclass(frozen=True)
class OtaServices:
    deps: CampaignServiceDeps
    campaigns: CampaignService
    status: StatusService
    devices: DeviceService
    stats: StatsService
    firmware: FirmwareService
    # The OTA DLQ: `ota_status` dead-letters the reports it refuses itself,
    # since it is fed in batches (`status_batch`).
    dead_letters: DeadLetterStore
    close: Callable[[], None]


def _signer(config: OtaConfig, session: boto3.Session) -> Signer:
    signer: Signer
    if config.signer == "software":
        pem = Path(config.signing_key).read_bytes()
        signer = SoftwareSigner.from_pem(
            pem, key_id=config.signing_key_id, on_failure=signing_failed
        )
    else:
        kms: Any = session.client(
            "kms", config=aws_client_config(local=config.endpoint_url is not None)
        )
        signer = KmsSigner(
            kms, config.signing_key, key_id=config.signing_key_id, on_failure=signing_failed
        )
    signer.on_success = signing_succeeded
    return signer


class LazySqsDeadLetters:
    """The OTA DLQ, its queue URL looked up on first use: building the
    services (a Lambda cold start, the API's OpenAPI generation, a unit test)
    must not need SQS to answer."""

    name = OTA_DLQ_NAME

    def __init__(self, client: Any, queue: str) -> None:
        self._client = client
        self._queue = queue
        self._store: SqsDeadLetterStore | None = None
        self._lock = threading.Lock()

    def _real(self) -> SqsDeadLetterStore:
        with self._lock:
            if self._store is None:
                url = self._client.get_queue_url(QueueName=self._queue)["QueueUrl"]
                self._store = SqsDeadLetterStore(OTA_DLQ_NAME, self._client, url)
            return self._store

    def put(self, record: DeadLetterRecord) -> None:
        self._real().put(record)

    def list(self) -> Iterator[DeadLetterRecord]:
        return self._real().list()

    def get(self, record_id: str) -> DeadLetterRecord:
        return self._real().get(record_id)

    def delete(self, record_id: str) -> None:
        self._real().delete(record_id)

    def replace(self, record: DeadLetterRecord) -> None:
        self._real().replace(record)

    def depth(self) -> int:
        return self._real().depth()


def ota_dead_letters(config: OtaConfig, session: boto3.Session) -> LazySqsDeadLetters:
    """The OTA DLQ as the notification sinks write it (the local one too)."""
    sqs: Any = session.client(
        "sqs", config=aws_client_config(local=config.endpoint_url is not None)
    )
    return LazySqsDeadLetters(sqs, config.ota_dlq_queue)


def _sink(
    config: OtaConfig, session: boto3.Session, dead_letters: DeadLetterStore
) -> tuple[NotificationSink, Callable[[], None]]:
    """The Lambda form's sink: the IoT data plane. A broker URL needs the
    publisher of the process that hosts the handlers (the gateway, the API
    server), which that process's composition root injects
    (`v2c.infra.local.wiring.use_local_ota_services`): handlers run as Lambda
    functions, where no gateway exists, so they never build one themselves."""
    if config.mqtt_url is not None:
        raise ConfigurationError(
            "OTA_MQTT_URL is set, but no notification sink was injected for it: "
            "the process hosting the handlers must install its services "
            "(v2c.infra.local.wiring.use_local_ota_services)"
        )
    # One pooled connection per publish in flight (`send_many`'s window).
    pool = Config(max_pool_connections=max(32, config.notify_window))
    iot: Any = session.client(
        "iot-data",
        config=aws_client_config(local=config.endpoint_url is not None).merge(pool),
        endpoint_url=iot_data_url(config.iot_data_endpoint, config.endpoint_url),
    )
    return IotDataSink(iot, dead_letters, window=config.notify_window), lambda: None


def iot_data_url(host: str | None, endpoint_url: str | None) -> str | None:
    """The `iot-data` client's endpoint: the account's data endpoint when
    configured, unless every client points elsewhere (moto, locally: None,
    botocore then takes `AWS_ENDPOINT_URL`)."""
    return f"https://{host}" if host and not endpoint_url else None


def _then(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        try:
            first()
        finally:
            second()

    return both


def _planning(config: OtaConfig, session: boto3.Session) -> PlanningQueue:
    """Where a large campaign is planned after creation answered: the
    planner function (AWS), else a worker thread of this process (a local
    API server; in a Lambda without the variable the monitor plans it)."""
    if config.planner_function is None:
        return BackgroundPlanning()
    client: Any = session.client(
        "lambda", config=aws_client_config(local=config.endpoint_url is not None)
    )
    return LambdaPlanning(client, config.planner_function)


def build_services(
    config: OtaConfig,
    session: boto3.Session | None = None,
    *,
    sink: NotificationSink | None = None,
    signer: Signer | None = None,
    dead_letters: DeadLetterStore | None = None,
) -> OtaServices:
    session = session or boto3.Session()
    local = config.endpoint_url is not None
    if dead_letters is None:
        dead_letters = ota_dead_letters(config, session)
    ddb: Any = session.client("dynamodb", config=DYNAMODB_CLIENT_CONFIG)
    s3: Any = session.client("s3", config=aws_client_config(local=local))
    close: Callable[[], None] = lambda: None  # noqa: E731
    if sink is None:
        sink, close = _sink(config, session, dead_letters)
    signer = signer or _signer(config, session)
    packages = FirmwareCatalog(ddb, s3, config.firmware_table, config.firmware_bucket)
    events_client: Any = session.client("events", config=aws_client_config(local=local))
    planning = _planning(config, session)
    deps = CampaignServiceDeps(
        campaigns=CampaignRepository(ddb, config.campaigns_table),
        updates=UpdateRepository(ddb, config.updates_table),
        plans=PlanStore(s3, config.firmware_bucket),
        fleet=FleetRegistry(
            ddb, config.registry_table, index=FleetIndex(s3, config.firmware_bucket)
        ),
        packages=packages,
        signer=signer,
        notifier=Notifier(sink, packages),
        events=EventBridgePublisher(events_client, config.event_bus),
        alerts=PrometheusAlerts(),
        rollbacks=RollbackLog(ddb, config.rollbacks_table),
        commands=VehicleCommands(sink, signer),
        planning=planning,
        config=CampaignConfig(notify_chunk=config.notify_chunk),
    )
    campaigns = CampaignService(deps)
    if isinstance(planning, BackgroundPlanning):
        planning.bind(campaigns.plan)
        close = _then(close, planning.close)
    firmware = FirmwareService.from_clients(
        ddb,
        s3,
        table=config.firmware_table,
        bucket=config.firmware_bucket,
        usage=deps.campaigns,
        events=deps.events,
    )
    return OtaServices(
        deps,
        campaigns,
        StatusService(deps, campaigns),
        DeviceService(deps, campaigns),
        StatsService(
            deps.campaigns,
            deps.updates,
            records=UpdateScan(ddb, config.updates_table),
            packages=packages,
        ),
        firmware,
        dead_letters,
        close,
    )


def _close(services: OtaServices) -> None:
    services.close()


# The container's services, built from the environment on first use and kept
# for the life of the Lambda container (`PerContainer`: tests and the local
# stack install their own, or a builder with the local notification sink).
SERVICES: PerContainer[OtaServices] = PerContainer(
    lambda: build_services(OtaConfig.from_env()), close=_close
)
default_services = SERVICES.get
set_default_services = SERVICES.install
