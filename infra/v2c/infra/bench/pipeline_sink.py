"""The receiving side of `v2c bench telemetry`'s end-to-end phases, in its own
process (see `phase`): the real `Gateway` with the production telemetry rules
(`v2c.gateway.rules.RULES`), calling the real Lambda-form handlers
(`telemetry_ingest`, `telemetry_batch`), whose service builds itself from the
environment a stack exports (`wiring.handler_environment`) and writes to the
bench's moto server. Gateway and handler metrics share one registry, as in
`v2c gateway run`.

One thing is added to the production wiring, to time "stored": the session
the service's clients are made from carries two botocore hooks. Before a
PutItem or BatchWriteItem on the telemetry table is serialized, the keys of
its items are noted in the call's context; when the answer has arrived and
is a success, every key not listed in `UnprocessedItems` is stamped with
`time.monotonic_ns()` (one clock for every process on Linux, as the
publishers' stamps). So "stored" means: DynamoDB acknowledged the write to
the handler, the moment after which a read sees the item. The service is
the one `default_service()` would build from the same environment; it is
only installed first (`set_default_service`), with that session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any, Final

import boto3

from v2c.infra.bench.common import BenchError, JsonDict, histogram_summary_ms
from v2c.infra.bench.sinks import (
    NOOP_HANDLER,
    PROBE_RULE,
    SinkSpec,
    counter_total,
    run_sink,
    serving_gateway,
    use_fine_latency_buckets,
    wait_for,
)

TELEMETRY_RULES: Final = ("telemetry", "telemetry_batch")
_KEYS: Final = "v2c_bench_item_keys"

StoredKey = tuple[str, str]  # (vehicle_id, sample_key)


@dataclass(frozen=True)
class PipelineSinkSpec:
    sink: SinkSpec  # broker, probe, window, workers; `expected` counts MQTT messages
    environment: tuple[tuple[str, str], ...]  # the handlers' environment
    expected_samples: int


def _item_key(item: Mapping[str, Any]) -> StoredKey:
    return str(item["vehicle_id"]["S"]), str(item["sample_key"]["S"])


class StoredClock:
    """When DynamoDB acknowledged each telemetry item (monotonic ns), by key."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.stored: dict[StoredKey, int] = {}  # filled from worker threads (atomic setdefault)

    def install(self, session: boto3.Session) -> None:
        """Hook every client made from `session` afterwards."""
        for operation in ("PutItem", "BatchWriteItem"):
            session.events.register(f"before-parameter-build.dynamodb.{operation}", self._remember)
            session.events.register(f"after-call.dynamodb.{operation}", self._stamp)

    def _remember(self, params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        if "Item" in params:
            if params.get("TableName") == self.table:
                context[_KEYS] = [_item_key(params["Item"])]
            return
        requests = params.get("RequestItems", {}).get(self.table, [])
        context[_KEYS] = [_item_key(r["PutRequest"]["Item"]) for r in requests if "PutRequest" in r]

    def _stamp(
        self, http_response: Any, parsed: Mapping[str, Any], context: Mapping[str, Any], **_: Any
    ) -> None:
        now = time.monotonic_ns()
        keys = context.get(_KEYS)
        if not keys or http_response.status_code >= 300:
            return  # not ours, or refused (a duplicate's failed condition, throttling)
        left = {
            _item_key(r["PutRequest"]["Item"])
            for r in (parsed.get("UnprocessedItems") or {}).get(self.table, [])
        }
        for key in keys:
            if key not in left:
                self.stored.setdefault(key, now)  # a retry does not move the first write


def _sum_samples(registry: Any, name: str, **labels: str) -> float:
    return sum(
        float(sample.value)
        for metric in registry.collect()
        if metric.name == name
        for sample in metric.samples
        if sample.name == f"{name}_total"
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def _pipeline_sink(spec: PipelineSinkSpec, out: Queue[Any]) -> JsonDict:
    os.environ.update(dict(spec.environment))
    # Imported here, after the environment: the gateway's and the handlers'
    # Loggers are configured at import, in this process only.
    from prometheus_client import REGISTRY

    from v2c.gateway.metrics import GatewayMetrics
    from v2c.gateway.rules import RULES, Rule
    from v2c.handlers.telemetry.config import TelemetryConfig, build_service, set_default_service

    sink = spec.sink
    config = TelemetryConfig.from_env()
    clock = StoredClock(config.telemetry_table)
    session = boto3.Session()
    clock.install(session)
    set_default_service(build_service(config, session))

    rules = tuple(r for r in RULES if r.name in TELEMETRY_RULES)
    rules += (Rule(PROBE_RULE, sink.probe_filter, NOOP_HANDLER, dlq="telemetry", qos=sink.qos),)
    metrics = GatewayMetrics(REGISTRY)
    use_fine_latency_buckets(metrics)

    def settled() -> float:
        return sum(
            counter_total(REGISTRY, name, rule)
            for name in ("v2c_gateway_messages_handled", "v2c_gateway_messages_failed")
            for rule in TELEMETRY_RULES
        )

    try:
        async with serving_gateway(sink, "pipeline", rules, metrics, out) as run:

            def done() -> bool:
                run.check()
                return settled() >= sink.expected

            cpu0 = time.process_time()
            await wait_for(
                done, sink, lambda: f"{settled():.0f} handled, {len(clock.stored)} stored"
            )
            cpu1 = time.process_time()
    finally:
        set_default_service(None)
    gateway = run.gateway
    outcomes = {
        status: int(_sum_samples(REGISTRY, "v2c_telemetry_messages", status=status))
        for status in ("stored", "duplicate", "invalid", "failed")
    }
    if len(clock.stored) != spec.expected_samples or outcomes["stored"] != spec.expected_samples:
        raise BenchError(
            f"{len(clock.stored)} of {spec.expected_samples} samples acknowledged by DynamoDB; "
            f"the handlers counted {outcomes}"
        )
    return {
        "handled": int(
            sum(counter_total(REGISTRY, "v2c_gateway_messages_handled", r) for r in TELEMETRY_RULES)
        ),
        "failed": int(
            sum(counter_total(REGISTRY, "v2c_gateway_messages_failed", r) for r in TELEMETRY_RULES)
        ),
        "outcomes": outcomes,
        "dead_lettered": int(_sum_samples(REGISTRY, "v2c_dlq_messages")),
        "stored_ns": [(vehicle, key, ns) for (vehicle, key), ns in clock.stored.items()],
        "cpu_s": cpu1 - cpu0,
        "max_in_flight": gateway.max_in_flight,
        "max_waiting": gateway.max_waiting,
        "handler_latency_ms": {
            rule: histogram_summary_ms(
                REGISTRY, "v2c_gateway_handler_latency_seconds", {"rule": rule}
            )
            for rule in TELEMETRY_RULES
        },
        "processing_ms": {
            topic: histogram_summary_ms(
                REGISTRY, "v2c_telemetry_processing_seconds", {"topic": topic}
            )
            for topic in ("individual", "batch")
        },
    }


def pipeline_sink_main(spec: PipelineSinkSpec, out: Queue[Any]) -> None:
    run_sink(out, lambda: _pipeline_sink(spec, out))
