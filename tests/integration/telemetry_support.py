"""Telemetry services against the real moto server, and ways to look into it."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
from prometheus_client import CollectorRegistry

from v2c.contract.batch_codec import encode_envelope
from v2c.handlers.dlq.store import S3DeadLetterStore
from v2c.handlers.telemetry.config import DYNAMODB_CLIENT_CONFIG, set_default_service
from v2c.handlers.telemetry.dedup import DedupWindow
from v2c.handlers.telemetry.metrics import TelemetryMetrics
from v2c.handlers.telemetry.registry import CachedRegistry, DynamoVehicleRegistry
from v2c.handlers.telemetry.service import TelemetryService
from v2c.handlers.telemetry.store import DynamoRecordStore, RetryPolicy
from v2c.handlers.telemetry.timeseries import TimestreamSink
from v2c.v1 import telemetry_pb2

if TYPE_CHECKING:
    import pytest
    from moto_fixtures import AwsStack

REGION = "eu-west-1"
# Five vehicles of the registry (valid VINs: no I, O or Q).
VINS = tuple(f"VIN-1HGBH41JXMN10918{i}" for i in range(5))
Telemetry = telemetry_pb2.Telemetry


@contextmanager
def lambda_environment(stack: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What the SAM template (or `v2c stack up`) gives a handler: names default.

    The handlers' service is built from this environment on the first
    message, and forgotten again on the way out, so no test inherits another's.
    """
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.aws.endpoint_url or "")
    monkeypatch.setenv("AWS_REGION", stack.aws.region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", stack.aws.region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    set_default_service(None)
    try:
        yield
    finally:
        set_default_service(None)


def dynamodb(stack: AwsStack, endpoint_url: str | None = None) -> Any:
    """A DynamoDB client as the handlers build it: botocore retries off."""
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url or stack.aws.endpoint_url,
        region_name=stack.aws.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=DYNAMODB_CLIENT_CONFIG,
    )


def dlq_store(stack: AwsStack) -> S3DeadLetterStore:
    return S3DeadLetterStore("telemetry", stack.aws.client("s3"), stack.names.telemetry_dlq_bucket)


# The stack provisions no Timestream (it is never a default): the tests of the
# Timestream sink name a database of their own, as a deployment opting in does.
TIMESTREAM_DATABASE = "v2c-telemetry-ts"


def timestream_database(stack: AwsStack) -> str:
    from v2c.infra.aws.converge import timestream

    timestream(
        stack.aws.client("timestream-write"), TIMESTREAM_DATABASE, stack.names.timestream_table
    )
    return TIMESTREAM_DATABASE


def build_service(
    stack: AwsStack,
    *,
    dynamodb_url: str | None = None,
    timestream_client: Any = None,
    metrics: TelemetryMetrics | None = None,
    retry: RetryPolicy | None = None,
) -> TelemetryService:
    """A service over moto, optionally reaching DynamoDB (or Timestream) through a proxy."""
    ddb = dynamodb(stack, dynamodb_url)
    names = stack.names
    database = timestream_database(stack)
    return TelemetryService(
        records=DynamoRecordStore(ddb, names.telemetry_table, retry=retry),
        dead_letters=dlq_store(stack),
        timeseries=TimestreamSink(
            timestream_client or stack.aws.client("timestream-write"),
            database,
            names.timestream_table,
        ),
        registry=CachedRegistry(DynamoVehicleRegistry(ddb, names.vehicle_registry_table)),
        window=DedupWindow(),
        metrics=metrics or TelemetryMetrics(CollectorRegistry()),
    )


def register_vehicles(stack: AwsStack, vins: Iterable[str]) -> None:
    ddb = stack.aws.client("dynamodb")
    for index, vin in enumerate(vins):
        ddb.put_item(
            TableName=stack.names.vehicle_registry_table,
            Item={
                "vehicle_id": {"S": vin},
                "make": {"S": "Honda"},
                "model": {"S": "Civic" if index % 2 else "Accord"},
                "year": {"N": str(2020 + index)},
            },
        )


def stored_per_vehicle(stack: AwsStack, vins: Iterable[str]) -> dict[str, int]:
    """Items per vehicle: a paginated COUNT query (one page stops at 1 MB)."""
    ddb = stack.aws.client("dynamodb")
    paginator = ddb.get_paginator("query")
    counts = {}
    for vin in vins:
        pages = paginator.paginate(
            TableName=stack.names.telemetry_table,
            KeyConditionExpression="vehicle_id = :v",
            ExpressionAttributeValues={":v": {"S": vin}},
            Select="COUNT",
        )
        counts[vin] = sum(page["Count"] for page in pages)
    return counts


def stored_keys(stack: AwsStack) -> list[tuple[str, str]]:
    """Every (vehicle_id, sample_key), duplicates kept: a paginated scan."""
    ddb = stack.aws.client("dynamodb")
    keys = []
    for page in ddb.get_paginator("scan").paginate(
        TableName=stack.names.telemetry_table, ProjectionExpression="vehicle_id, sample_key"
    ):
        keys += [(i["vehicle_id"]["S"], i["sample_key"]["S"]) for i in page["Items"]]
    return keys


def timestream_records(stack: AwsStack) -> list[dict[str, Any]]:
    """What moto's Timestream table holds (moto's state API: there is no query)."""
    url = f"{stack.aws.endpoint_url}/moto-api/data.json"
    with urllib.request.urlopen(url, timeout=30) as answer:
        state = json.load(answer)
    tables = state.get("timestreamwrite", {}).get("TimestreamTable", [])
    return [r for t in tables if t["name"] == stack.names.timestream_table for r in t["records"]]


def event(kind: str, vin: str, payload: bytes, **properties: Any) -> dict[str, Any]:
    return {
        "rule": "telemetry" if kind == "vehicle" else "telemetry_batch",
        "topic": f"v2c/v1/{REGION}/{vin}/telemetry/{kind}",
        "region": REGION,
        "vehicle_id": vin,
        "qos": 1,
        "payload": base64.b64encode(payload).decode("ascii"),
        "properties": properties,
        "received_at": 1_735_700_000_000,
    }


def single_event(sample: Telemetry, **properties: Any) -> dict[str, Any]:
    return event("vehicle", sample.vehicle_id, sample.SerializeToString(), **properties)


def batch_event(samples: Sequence[Telemetry], **properties: Any) -> dict[str, Any]:
    return event("batch", samples[0].vehicle_id, encode_envelope(samples), **properties)
