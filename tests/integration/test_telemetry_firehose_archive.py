"""The time-series archive against the real moto server: the telemetry service, built
from the environment as the Lambda form builds it, writes its points through a
Firehose DirectPut stream into S3, and the NDJSON there reads back sample for sample."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from prometheus_client import CollectorRegistry
from telemetry_support import (
    REGION,
    VINS,
    batch_event,
    dlq_store,
    lambda_environment,
    register_vehicles,
    single_event,
)

from v2c.handlers.telemetry.config import TelemetryConfig, build_service
from v2c.handlers.telemetry.metrics import TelemetryMetrics
from v2c.handlers.telemetry.service import TelemetryService
from v2c.handlers.telemetry.timeseries import SIGNALS
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.sampler import TelemetrySampler

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

# Names of this test's own: the stack's stream and bucket are provisioned elsewhere.
STREAM = "v2c-test-timeseries"
BUCKET = "v2c-test-timeseries-archive"
PREFIX = "telemetry/"
SINGLES, BATCHES = 60, 2  # per vehicle: 60 singles as one queue batch, two envelopes of 25
Telemetry = telemetry_pb2.Telemetry


def _s3(stack: AwsStack) -> Any:
    return stack.aws.client("s3")


@pytest.fixture
def archive(aws_stack: AwsStack) -> None:
    """A bucket and a DirectPut stream delivering into it under `PREFIX`."""
    region = aws_stack.aws.region
    placement: dict[str, Any] = {}  # us-east-1 refuses its own name as a constraint
    if region != "us-east-1":
        placement["CreateBucketConfiguration"] = {"LocationConstraint": region}
    _s3(aws_stack).create_bucket(Bucket=BUCKET, **placement)
    firehose: Any = aws_stack.aws.client("firehose")
    firehose.create_delivery_stream(
        DeliveryStreamName=STREAM,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/v2c-firehose",
            "BucketARN": f"arn:aws:s3:::{BUCKET}",
            "Prefix": PREFIX,
            "ErrorOutputPrefix": "errors/",
            "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 60},
            "CompressionFormat": "UNCOMPRESSED",
        },
    )


@pytest.fixture
def service(
    aws_stack: AwsStack, archive: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TelemetryService]:
    """The service as a Lambda builds it, with this test's stream named in the environment."""
    with lambda_environment(aws_stack, monkeypatch):
        monkeypatch.setenv("TIMESERIES_SINK", "firehose")
        monkeypatch.setenv("TIMESERIES_STREAM", STREAM)
        config = TelemetryConfig.from_env()
        built = build_service(
            config, boto3.Session(), metrics=TelemetryMetrics(CollectorRegistry())
        )
        try:
            yield built
        finally:
            built.close()


def _archived(stack: AwsStack) -> dict[str, list[dict[str, Any]]]:
    """Every object under the prefix, as its NDJSON lines, by key."""
    s3 = _s3(stack)
    objects: dict[str, list[dict[str, Any]]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().decode()
            assert body.endswith("\n")
            objects[item["Key"]] = [json.loads(line) for line in body.splitlines()]
    return objects


def _operational(stack: AwsStack) -> dict[tuple[str, int], dict[str, Any]]:
    ddb = stack.aws.client("dynamodb")
    items = {}
    for page in ddb.get_paginator("scan").paginate(TableName=stack.names.telemetry_table):
        for item in page["Items"]:
            items[(item["vehicle_id"]["S"], int(item["sequence"]["N"]))] = item
    return items


def test_samples_from_every_path_land_in_s3_as_ndjson_that_reads_back_sample_for_sample(
    aws_stack: AwsStack, service: TelemetryService
) -> None:
    register_vehicles(aws_stack, VINS)
    drives = {vin: TelemetrySampler(vin, seed=n).samples(SINGLES + 25 * BATCHES)
              for n, vin in enumerate(VINS)}  # fmt: skip

    # A queue batch of every vehicle's singles (one call of the sink), then the envelopes.
    singles = [single_event(s) for drive in drives.values() for s in drive[:SINGLES]]
    reports = service.ingest_many(singles)
    for drive in drives.values():
        for start in range(SINGLES, len(drive), 25):
            reports.append(service.ingest_batch(batch_event(drive[start : start + 25])))

    assert sum(r.dead_lettered for r in reports) == 0
    assert dlq_store(aws_stack).depth() == 0
    objects = _archived(aws_stack)
    # under the stream's prefix, then Firehose's arrival hour, then the object name
    key_shape = re.compile(rf"{PREFIX}\d{{4}}/\d{{2}}/\d{{2}}/\d{{2}}/{STREAM}-")
    assert all(key_shape.match(key) for key in objects), list(objects)
    lines = [line for records in objects.values() for line in records]
    sent = [sample for drive in drives.values() for sample in drive]
    assert len(lines) == len(sent) == 5 * 110
    # the queue batch of 300 singles from 5 vehicles went in one call: one object
    assert max(len({line["vehicle_id"] for line in records}) for records in objects.values()) == 5
    assert len(objects) == 1 + 5 * BATCHES
    by_identity = {(line["vehicle_id"], line["sequence"]): line for line in lines}
    assert set(by_identity) == {(s.vehicle_id, s.sequence) for s in sent}
    operational = _operational(aws_stack)
    for sample in sent:
        line = by_identity[(sample.vehicle_id, sample.sequence)]
        item = operational[(sample.vehicle_id, sample.sequence)]
        assert list(line)[7:] == list(SIGNALS)
        assert (line["region"], line["model"]) == (REGION, item["model"]["S"])
        assert line["message_id"] == item["message_id"]["S"]
        assert line["timestamp_ms"] == sample.header.timestamp
        assert line["time_us"] // 1000 == sample.header.timestamp
        assert line["time_source"] == "vehicle"
        assert line["rpm"] == sample.rpm
        assert line["odometer_km"] == float(item["odometer_km"]["N"])
        assert line["ignition_on"] is sample.ignition_on
        assert (line["speed_kmh"] is None) == (not sample.HasField("speed_kmh"))
        assert (line["latitude"] is None) == (not sample.HasField("gps"))
    assert {line["model"] for line in lines} == {"Civic", "Accord"}
    first = by_identity[(VINS[0], drives[VINS[0]][0].sequence)]
    assert re.fullmatch(r"2025-01-01T\d{2}:\d{2}:\d{2}\.\d{3}Z", first["timestamp"])
