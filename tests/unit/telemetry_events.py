"""Telemetry events and in-memory services for the telemetry unit tests."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from v2c.handlers.dlq.store import InMemoryDeadLetterStore
from v2c.handlers.telemetry.dedup import DedupWindow
from v2c.handlers.telemetry.metrics import TelemetryMetrics
from v2c.handlers.telemetry.registry import StaticRegistry
from v2c.handlers.telemetry.service import TelemetryService
from v2c.handlers.telemetry.store import InMemoryRecordStore, RecordStore
from v2c.handlers.telemetry.timeseries import InMemoryTimeSeriesSink, TimeSeriesSink

VIN = "VIN-1HGBH41JXMN109186"
OTHER_VIN = "VIN-5YJ3E1EA7KF317000"
REGION = "eu-west-1"
RECEIVED_AT = 1_735_689_600_000 + 3_600_000  # an hour after the sampler's default start


def event(
    kind: str,
    payload: bytes,
    *,
    vehicle_id: str = VIN,
    properties: dict[str, Any] | None = None,
    received_at: int = RECEIVED_AT,
) -> dict[str, Any]:
    """The event the gateway builds (`v2c.gateway.event.build_event`)."""
    return {
        "rule": "telemetry" if kind == "vehicle" else "telemetry_batch",
        "topic": f"v2c/v1/{REGION}/{vehicle_id}/telemetry/{kind}",
        "region": REGION,
        "vehicle_id": vehicle_id,
        "domain": "telemetry",
        "kind": kind,
        "qos": 1,
        "payload": base64.b64encode(payload).decode("ascii"),
        "properties": properties or {},
        "received_at": received_at,
    }


def counter(metrics: TelemetryMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@dataclass
class Harness:
    """A service over in-memory ports, and the ports to look into."""

    records: RecordStore = field(default_factory=InMemoryRecordStore)
    timeseries: TimeSeriesSink = field(default_factory=InMemoryTimeSeriesSink)
    dlq: InMemoryDeadLetterStore = field(
        default_factory=lambda: InMemoryDeadLetterStore("telemetry")
    )
    registry: StaticRegistry = field(default_factory=StaticRegistry)
    metrics: TelemetryMetrics = field(default_factory=lambda: TelemetryMetrics(CollectorRegistry()))

    def service(self, window: DedupWindow | None = None) -> TelemetryService:
        return TelemetryService(
            records=self.records,
            dead_letters=self.dlq,
            timeseries=self.timeseries,
            registry=self.registry,
            window=window,
            metrics=self.metrics,
        )
