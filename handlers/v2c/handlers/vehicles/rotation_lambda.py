"""The rotation function's wiring and its three kinds of invocation (the Lambda form).

| variable | default | meaning |
|---|---|---|
| VEHICLE_REGISTRY_TABLE | v2c-vehicle-registry | the registry the certificates are recorded in |
| V2C_CERT_ISSUER, IOT_POLICY_NAME, IOT_THING_TYPE | | the issuer, as `vehicles.config` |
| IOT_DATA_ENDPOINT | | where the answers are published (the account's data endpoint) |
| OTA_DLQ_QUEUE | v2c-ota-dlq | an answer that could not be published |
| CERTIFICATE_OVERLAP_S | 3600 | how long a rotated-out certificate stays active |

Invoked by
* its SQS event source mapping (the IoT rule on `.../certificate/renew`,
  ADR 0009): a batch of requests, answered with a partial-batch response in
  which only what a retry can mend fails (`TransientError`);
* one IoT event (a DLQ replay): that request, its error raised;
* its schedule (EventBridge `Scheduled Event`, or `{"v2c": "certificate_expiry"}`):
  the expiry pass (`RotationService.end_overlaps`).

Locally the gateway hosts the function and its composition root installs a
service over the stack's CA and the gateway's broker connection
(`v2c.infra.local.certificate_rotation`): handlers never build a publisher.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

import boto3
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.config import Config

from v2c.contract.errors import ConfigurationError
from v2c.contract.queue_event import is_sqs_event, record_event
from v2c.handlers.aws_clients import DYNAMODB_CLIENT_CONFIG, aws_client_config
from v2c.handlers.ota.config import OtaConfig, iot_data_url, ota_dead_letters
from v2c.handlers.ota.iot_sink import IotDataSink
from v2c.handlers.per_container import PerContainer
from v2c.handlers.vehicles.config import issuer_from_env
from v2c.handlers.vehicles.metrics import certificate_metrics
from v2c.handlers.vehicles.repository import InventoryRepository
from v2c.handlers.vehicles.rotation import DEFAULT_OVERLAP_MS
from v2c.handlers.vehicles.rotation_service import RotationService

EXPIRY_EVENT: Final = "certificate_expiry"
SCHEDULED: Final = "Scheduled Event"
ENV_OVERLAP: Final = "CERTIFICATE_OVERLAP_S"


def overlap_ms(env: Mapping[str, str]) -> int:
    raw = env.get(ENV_OVERLAP, "").strip()
    if not raw:
        return DEFAULT_OVERLAP_MS
    if not raw.isdigit() or not 0 <= int(raw) <= 30 * 24 * 3600:
        raise ConfigurationError(f"{ENV_OVERLAP} must be 0-2592000 seconds, not {raw!r}")
    return int(raw) * 1000


def build_rotation_service(
    environ: Mapping[str, str] | None = None, session: boto3.Session | None = None
) -> RotationService:
    """The service as a Lambda function builds it: AWS IoT Core issues,
    the IoT data plane answers."""
    env = os.environ if environ is None else environ
    session = session or boto3.Session()
    config = OtaConfig.from_env()
    if config.mqtt_url is not None:
        raise ConfigurationError(
            "OTA_MQTT_URL is set: the local process hosting the rotation function installs "
            "its service (v2c.infra.local.certificate_rotation)"
        )
    local = config.endpoint_url is not None
    ddb: Any = session.client("dynamodb", config=DYNAMODB_CLIENT_CONFIG)
    iot_data: Any = session.client(
        "iot-data",
        config=aws_client_config(local=local).merge(Config(max_pool_connections=8)),
        endpoint_url=iot_data_url(config.iot_data_endpoint, config.endpoint_url),
    )
    repository = InventoryRepository(
        ddb, env.get("VEHICLE_REGISTRY_TABLE") or config.registry_table
    )
    return RotationService(
        repository,
        issuer_from_env(env, session),
        IotDataSink(iot_data, ota_dead_letters(config, session)),
        metrics=certificate_metrics(),
        overlap_ms=overlap_ms(env),
    )


SERVICE: PerContainer[RotationService] = PerContainer(
    build_rotation_service, close=lambda service: service.close()
)


def handle(service: RotationService, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """What the function does with what it was invoked with."""
    if event.get("v2c") == EXPIRY_EVENT or event.get("detail-type") == SCHEDULED:
        return service.end_overlaps().to_json()
    if not is_sqs_event(event):
        answer = service.handle(event)
        return {"request_id": answer.request_id, "status": answer.status.value}

    def one(record: SQSRecord) -> None:
        # A body that is no event raises too: after the receives it moves to
        # the ingest DLQ with the body intact, as every rule's does.
        service.handle(record_event(record.body))

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    response = process_partial_response(
        event=dict(event), record_handler=one, processor=processor, context=context
    )
    return dict(response)
