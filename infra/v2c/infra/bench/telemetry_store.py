"""What every store phase of `v2c bench telemetry` shares: the simulated
fleet's samples, and a moto server with the stack's resources.

Used by the in-process phases (`telemetry`) and by the end-to-end phases
through broker and gateway (`telemetry_e2e`), so both store the very same
kind of samples from the same registered vehicles into the same tables.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry

from v2c.handlers.telemetry.config import (
    DYNAMODB_CLIENT_CONFIG,
    TelemetryConfig,
    build_service,
)
from v2c.handlers.telemetry.metrics import TelemetryMetrics
from v2c.handlers.telemetry.model import Arrival, OperationalRecord, Path
from v2c.handlers.telemetry.service import TelemetryService
from v2c.handlers.telemetry.store import DynamoRecordStore
from v2c.handlers.telemetry.validation import validate
from v2c.infra.aws.resources import ensure_resources
from v2c.infra.local.moto_server import MotoServer
from v2c.infra.local.wiring import handler_environment
from v2c.infra.names import ResourceNames
from v2c.infra.settings import AwsSettings, StackSettings
from v2c.vehicle_sim.sampler import TelemetrySampler

REGION: Final = "eu-west-1"
_ENDPOINT_ENV: Final = "AWS_ENDPOINT_URL"


def vin(index: int) -> str:
    return f"VIN-1HGBH41JXMN1091{index:02d}"


def sample_keys(samples: list[Any]) -> list[tuple[str, str]]:
    """(vehicle_id, sample_key) of each sample: the key its item is stored under."""
    return [(s.vehicle_id, validate(s, topic_vehicle_id=s.vehicle_id).key) for s in samples]


@dataclass(frozen=True)
class Workload:
    """One phase's messages: fresh vehicles' recent samples (Timestream refuses
    records older than its memory retention, so no fixed 2025 start)."""

    samples: list[Any]
    received_at_ms: int

    @classmethod
    def make(cls, messages: int, vehicles: int, batch_size: int, seed: int) -> Workload:
        """`messages` samples over `vehicles`, whole batches of `batch_size` per
        vehicle; a distinct `seed` per phase gives distinct sample identities."""
        now_ms = int(time.time() * 1000)
        per_vehicle = -(-messages // vehicles)
        per_vehicle = -(-per_vehicle // batch_size) * batch_size
        start = now_ms - per_vehicle * 1000 - 60_000
        samplers = [
            TelemetrySampler(
                vin(v), epoch=seed, seed=seed * 100 + v, start_ms=start, interval_ms=1000
            )
            for v in range(vehicles)
        ]
        samples: list[Any] = []
        while len(samples) < messages:
            for sampler in samplers:
                samples.extend(sampler.samples(batch_size))
        return cls(samples[:messages], now_ms)

    def by_vehicle(self) -> dict[str, list[Any]]:
        grouped: dict[str, list[Any]] = {}
        for sample in self.samples:
            grouped.setdefault(sample.vehicle_id, []).append(sample)
        return grouped

    def batches(self, size: int) -> list[list[Any]]:
        return [
            chunk[i : i + size]
            for chunk in self.by_vehicle().values()
            for i in range(0, len(chunk), size)
        ]

    def records(self) -> list[OperationalRecord]:
        arrival = Arrival(REGION, Path.INDIVIDUAL, self.received_at_ms)
        return [
            OperationalRecord(validate(s, topic_vehicle_id=s.vehicle_id), arrival, None)
            for s in self.samples
        ]


class BenchStore:
    """A fresh moto server with every resource, and the handlers' wiring onto it."""

    def __init__(self, moto: MotoServer, vehicles: int) -> None:
        self.aws = AwsSettings(endpoint_url=moto.endpoint_url, region=REGION)
        self.names = ResourceNames()
        self.moto = moto
        self.vehicles = vehicles

    def fresh(self) -> None:
        """An empty moto with every resource and the fleet in the registry."""
        self.moto.reset()
        ensure_resources(self.aws, self.names)
        ddb = self.aws.client("dynamodb")
        for v in range(self.vehicles):
            ddb.put_item(
                TableName=self.names.vehicle_registry_table,
                Item={
                    "vehicle_id": {"S": vin(v)},
                    "make": {"S": "Honda"},
                    "model": {"S": "Civic"},
                    "year": {"N": str(2020 + v % 5)},
                },
            )

    def environment(self) -> dict[str, str]:
        """What a handler process gets, exactly as `v2c stack up` exports it."""
        return handler_environment(StackSettings(aws=self.aws, resources=self.names))

    def service(self) -> TelemetryService:
        config = TelemetryConfig.from_env({_ENDPOINT_ENV: str(self.aws.endpoint_url)})
        with _endpoint_env(str(self.aws.endpoint_url)):
            return build_service(
                config, self.aws.session(), metrics=TelemetryMetrics(CollectorRegistry())
            )

    def raw_store(self) -> tuple[Any, DynamoRecordStore]:
        """The handlers' DynamoDB client (botocore retries off) and item shape."""
        ddb = self.aws.session().client(
            "dynamodb", endpoint_url=self.aws.endpoint_url, config=DYNAMODB_CLIENT_CONFIG
        )
        return ddb, DynamoRecordStore(ddb, self.names.telemetry_table)

    def stored_count(self) -> int:
        """Items in the telemetry table: a paginated COUNT query per vehicle
        (one page stops at 1 MB, FIELD_NOTES)."""
        paginator = self.aws.client("dynamodb").get_paginator("query")
        total = 0
        for v in range(self.vehicles):
            pages = paginator.paginate(
                TableName=self.names.telemetry_table,
                KeyConditionExpression="vehicle_id = :v",
                ExpressionAttributeValues={":v": {"S": vin(v)}},
                Select="COUNT",
            )
            total += sum(int(page["Count"]) for page in pages)
        return total


@contextmanager
def _endpoint_env(url: str) -> Iterator[None]:
    """botocore reads the endpoint from the environment, as in Lambda; only
    while the clients are made, then the caller's environment is restored."""
    previous = os.environ.get(_ENDPOINT_ENV)
    os.environ[_ENDPOINT_ENV] = url
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_ENDPOINT_ENV, None)
        else:
            os.environ[_ENDPOINT_ENV] = previous
