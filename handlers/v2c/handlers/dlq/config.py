"""The `dlq_admin` Lambda's wiring from environment variables.

| variable | default | meaning |
|---|---|---|
| TELEMETRY_DLQ_BUCKET | - (required) | the telemetry DLQ (S3) |
| OTA_DLQ_QUEUE_URL | - (required) | the OTA DLQ (SQS) |
| INGEST_DLQ_QUEUE_URL | - (required) | the ingest DLQ (SQS: the rules' queues' redrive target) |
| INGEST_QUEUES | - (required) | JSON `{rule: ingest queue name}`: where an ingest record replays |
| RULE_FUNCTION_PREFIX | v2c- | an inbound record replays into function prefix + rule |
| IOT_DATA_ENDPOINT | (SDK default) | the account's `iot:Data-ATS` host for outbound replays |

Every queue is required: an admin function that silently saw only some
queues would report a depth of zero for the others. The API's `/api/v1/dlq`
uses the same service when all are set (`v2c.handlers.api.config`).
`INGEST_QUEUES` is `ResourceNames.ingest_queues`, written by the template and
by the local wiring from that one table.
Both SQS queues are read at most `MAX_SCAN` messages a pass (a listing
hides what it receives for 30 s), so a call's work is bounded whatever the
backlog.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Final

from v2c.contract.dead_letter import Direction
from v2c.contract.errors import ConfigurationError
from v2c.handlers.aws_clients import aws_client_config
from v2c.handlers.dlq.ingest import INGEST_DLQ, IngestDeadLetterStore, parse_ingest_queues
from v2c.handlers.dlq.redrive import IotDataRedriver, LambdaRedriver
from v2c.handlers.dlq.service import DeadLetterService, Redrive
from v2c.handlers.dlq.store import (
    MAX_SCAN,
    DeadLetterStore,
    S3DeadLetterStore,
    SqsDeadLetterStore,
)
from v2c.handlers.per_container import PerContainer

ClientFactory = Callable[[str], Any]

ENV_TELEMETRY_BUCKET: Final = "TELEMETRY_DLQ_BUCKET"
ENV_OTA_QUEUE_URL: Final = "OTA_DLQ_QUEUE_URL"
ENV_INGEST_QUEUE_URL: Final = "INGEST_DLQ_QUEUE_URL"
ENV_INGEST_QUEUES: Final = "INGEST_QUEUES"
REQUIRED: Final = (ENV_TELEMETRY_BUCKET, ENV_OTA_QUEUE_URL, ENV_INGEST_QUEUE_URL, ENV_INGEST_QUEUES)
ENV_FUNCTION_PREFIX: Final = "RULE_FUNCTION_PREFIX"
ENV_ENDPOINT: Final = "AWS_ENDPOINT_URL"
ENV_IOT_DATA_ENDPOINT: Final = "IOT_DATA_ENDPOINT"


def configured(environ: Mapping[str, str]) -> bool:
    """Whether `environ` names every queue (else the API has no `/api/v1/dlq`)."""
    return all(environ.get(name) for name in REQUIRED)


def _boto3_client(service: str) -> Any:
    import boto3

    local = bool(os.environ.get(ENV_ENDPOINT))
    host = os.environ.get(ENV_IOT_DATA_ENDPOINT)
    extra = (
        {"endpoint_url": f"https://{host}"} if service == "iot-data" and host and not local else {}
    )
    return boto3.client(service, config=aws_client_config(local=local), **extra)  # type: ignore[call-overload]


def build_service(
    environ: Mapping[str, str] | None = None, client: ClientFactory | None = None
) -> DeadLetterService:
    """The service over the deployed DLQs; resource names come from the environment."""
    env = os.environ if environ is None else environ
    make = client or _boto3_client
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise ConfigurationError(f"the function's environment lacks {', '.join(missing)}")
    queues = parse_ingest_queues(env[ENV_INGEST_QUEUES])
    sqs = make("sqs")
    stores: dict[str, DeadLetterStore] = {
        "telemetry": S3DeadLetterStore("telemetry", make("s3"), env[ENV_TELEMETRY_BUCKET]),
        "ota": SqsDeadLetterStore("ota", sqs, env[ENV_OTA_QUEUE_URL], max_scan=MAX_SCAN),
        INGEST_DLQ: IngestDeadLetterStore(sqs, env[ENV_INGEST_QUEUE_URL], queues),
    }
    redrivers: dict[Direction, Redrive] = {
        Direction.INBOUND: LambdaRedriver(make("lambda"), env.get(ENV_FUNCTION_PREFIX, "v2c-")),
        Direction.OUTBOUND: IotDataRedriver(make("iot-data")),
    }
    return DeadLetterService(stores, redrivers)


# Clients and stores once per container (`PerContainer`).
SERVICE: PerContainer[DeadLetterService] = PerContainer(lambda: build_service())
default_service = SERVICE.get
