"""Builds the cloud-side objects from a stack description: the one place that
knows which resource backs which dead-letter queue and how services reach the
broker. Commands and the stack call these; nothing else reads settings.

It is also where the local processes that host handlers (`v2c gateway run`,
`v2c api serve`) give the OTA services their notification sink: in AWS the
handlers publish through the IoT data plane; locally through the gateway's
MQTT publisher, which handlers may not import (they run as Lambda functions,
where no gateway exists). `use_local_ota_services` installs the builder
before any handler runs, so `ota.config.default_services()` builds services
that publish to the broker `OTA_MQTT_URL` names.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.dlq.ingest import INGEST_DLQ, IngestDeadLetterStore
from v2c.handlers.dlq.store import DeadLetterStore, S3DeadLetterStore, SqsDeadLetterStore
from v2c.infra.settings import LOCAL_CREDENTIAL, StackSettings

if TYPE_CHECKING:
    from v2c.handlers.ota.config import OtaConfig, OtaServices
    from v2c.handlers.vehicles.service import VehicleService

TELEMETRY_DLQ = "telemetry"
OTA_DLQ = "ota"


def service_endpoint(settings: StackSettings) -> MqttEndpoint:
    """The broker as the gateway, the publishers and the tools see it: the service
    listener with the service identity when the stack has one (every stack
    does), else plain TCP to `port` (a private test broker)."""
    mqtt = settings.require_mqtt()
    if mqtt.ca_file and mqtt.service_cert and mqtt.service_key:
        return MqttEndpoint(
            mqtt.host,
            mqtt.port,
            ca_file=str(mqtt.ca_file),
            cert_file=str(mqtt.service_cert),
            key_file=str(mqtt.service_key),
        )
    return MqttEndpoint(mqtt.host, mqtt.port)


def dead_letter_stores(settings: StackSettings) -> dict[str, DeadLetterStore]:
    """Telemetry failures to the S3 DLQ bucket, OTA failures to the SQS DLQ, and
    what SQS moved out of the rules' ingest queues (locally the gateway
    dead-letters itself, so that one is usually empty)."""
    names = settings.resources
    sqs = settings.aws.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=names.ota_dlq_queue)["QueueUrl"]
    ingest_url = sqs.get_queue_url(QueueName=names.ingest_dlq_queue)["QueueUrl"]
    return {
        TELEMETRY_DLQ: S3DeadLetterStore(
            TELEMETRY_DLQ, settings.aws.client("s3"), names.telemetry_dlq_bucket
        ),
        OTA_DLQ: SqsDeadLetterStore(OTA_DLQ, sqs, queue_url),
        INGEST_DLQ: IngestDeadLetterStore(sqs, ingest_url, names.ingest_queues),
    }


def handler_environment(settings: StackSettings) -> dict[str, str]:
    """The environment a Lambda-form handler expects, as the SAM template sets it.

    Handlers configure themselves from environment variables only (they may
    not import `v2c.infra`), so a gateway run against a stack exports these
    before it loads its rules; otherwise the handlers would fall back to
    their defaults and boto3 to real AWS. Endpoint and dummy credentials only
    for a local stack: against real AWS boto3 resolves both as usual. Time
    series go to the stack's Firehose stream, or to Timestream when the stack
    names a database (the opt-in, as `converge` creates one only then).
    """
    aws, names = settings.aws, settings.resources
    environment = {
        "AWS_REGION": aws.region,
        "AWS_DEFAULT_REGION": aws.region,
        "TELEMETRY_TABLE": names.telemetry_table,
        "VEHICLE_REGISTRY_TABLE": names.vehicle_registry_table,
        "TELEMETRY_DLQ_BUCKET": names.telemetry_dlq_bucket,
        "TIMESERIES_SINK": "timestream" if names.timestream_database else "firehose",
        "TIMESERIES_STREAM": names.timeseries_stream,
        "CAMPAIGNS_TABLE": names.campaigns_table,
        "VEHICLE_UPDATES_TABLE": names.vehicle_updates_table,
        "ROLLBACKS_TABLE": names.rollbacks_table,
        "FIRMWARE_TABLE": names.firmware_table,
        "FIRMWARE_BUCKET": names.firmware_bucket,
        "OTA_DLQ_QUEUE": names.ota_dlq_queue,
        "INGEST_QUEUES": json.dumps(names.ingest_queues, sort_keys=True),
        "EVENT_BUS": names.event_bus,
        "OTA_SIGNER": "kms",
        "OTA_SIGNING_KEY": names.signing_key_alias,
    }
    if names.timestream_database:  # the opt-in: a stack that names a database
        environment["TIMESTREAM_DATABASE"] = names.timestream_database
        environment["TIMESTREAM_TABLE"] = names.timestream_table
    if settings.mqtt is not None:
        # Notifications leave through the broker's service listener, as a service.
        endpoint = service_endpoint(settings)
        scheme = "mqtts" if endpoint.uses_tls else "mqtt"
        environment["OTA_MQTT_URL"] = f"{scheme}://{endpoint.host}:{endpoint.port}"
        tls_files = {
            "OTA_MQTT_CA_FILE": endpoint.ca_file,
            "OTA_MQTT_CERT_FILE": endpoint.cert_file,
            "OTA_MQTT_KEY_FILE": endpoint.key_file,
        }
        environment.update({k: v for k, v in tls_files.items() if v is not None})
    if aws.endpoint_url is not None:
        environment["AWS_ENDPOINT_URL"] = aws.endpoint_url
        environment["AWS_ACCESS_KEY_ID"] = LOCAL_CREDENTIAL
        environment["AWS_SECRET_ACCESS_KEY"] = LOCAL_CREDENTIAL
    return environment


def local_ota_services(config: OtaConfig | None = None) -> OtaServices:
    """The OTA services as a local process hosts them: notifications through
    the broker `OTA_MQTT_URL` names (QoS 2, a publisher of their own), else,
    without one, through the IoT data plane as in AWS. Closing the services
    stops the publisher."""
    # Imported here: most callers of this module (the CLI's every command)
    # need neither the OTA services nor the gateway's publisher.
    import boto3

    from v2c.gateway.ota_sink import MqttNotificationSink
    from v2c.gateway.publisher import OutboundPublisher
    from v2c.handlers.ota.config import OtaConfig, build_services, ota_dead_letters

    config = config or OtaConfig.from_env()
    endpoint = config.mqtt_endpoint()
    if endpoint is None:
        return build_services(config)
    session = boto3.Session()
    # A client id of its own per process: two clients with one id make the
    # broker close each in turn (session takeover) and lose QoS 2 messages.
    client_id = f"v2c-ota-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    publisher = OutboundPublisher(endpoint, client_id, ota_dead_letters(config, session))
    publisher.start()
    try:
        services = build_services(config, session, sink=MqttNotificationSink(publisher))
    except BaseException:
        publisher.stop()
        raise

    def close() -> None:
        services.close()
        publisher.stop()

    return replace(services, close=close)


def use_local_ota_services() -> None:
    """Make this process's OTA handlers build `local_ota_services()` on first use."""
    from v2c.handlers.ota.config import SERVICES

    SERVICES.build_with(local_ota_services)


def local_vehicle_services(settings: StackSettings, ota: OtaServices) -> VehicleService:
    """The vehicle inventory as the local API process serves it: certificates
    from the stack's CA and broker, `device.deleted` consumed in process
    (`v2c.infra.local.vehicle_service`)."""
    from v2c.infra.local.vehicle_service import local_vehicle_service

    return local_vehicle_service(settings, ota)
