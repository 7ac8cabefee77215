"""Prometheus metrics of the telemetry handlers, named as in spec 001.

They live in prometheus_client's default REGISTRY unless a registry is
injected (tests pass their own, so counters start at zero and two services in
one process do not collide). The default instance is created once per
process by `default_metrics()` (a `PerContainer`): registering the same
names twice raises.
`v2c gateway run` keeps its own metrics in that REGISTRY too and serves it,
so one endpoint shows both; `v2c_dlq_messages_total` is one counter for the
gateway's and the handlers' dead letters (`v2c.handlers.dlq.metrics`).

The Lambda form also emits CloudWatch EMF through Powertools, from the
per-invocation `IngestReport` (see `v2c.handlers.telemetry_ingest`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from v2c.contract.errors import InvalidInput
from v2c.handlers.dlq.metrics import dlq_messages
from v2c.handlers.per_container import PerContainer
from v2c.handlers.telemetry.timeseries import rejection_kind

if TYPE_CHECKING:
    from v2c.handlers.telemetry.report import IngestReport
    from v2c.handlers.telemetry.timeseries import PointFailure

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PUBLISH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
RATIO_BUCKETS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)


class TelemetryMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else REGISTRY
        self.messages = Counter(
            "v2c_telemetry_messages",
            "Telemetry samples by outcome: stored, duplicate, invalid, failed (dead-lettered)",
            ["region", "topic", "status"],
            registry=r,
        )
        self.duplicates = Counter(
            "v2c_telemetry_duplicate",
            "Samples discarded as duplicates (QoS 1 redelivery, batch resend)",
            ["region", "topic"],
            registry=r,
        )
        self.processing = Histogram(
            "v2c_telemetry_processing_seconds",
            "Handler time per message or batch",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_latency = Histogram(
            "v2c_telemetry_store_latency_seconds",
            "From the gateway's receipt to the stored record",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # The vehicle's own clock to ours: buffering offline and batching
        # included, so the buckets reach hours (a vehicle back from a tunnel).
        self.publish_to_stored = Histogram(
            "v2c_telemetry_publish_to_stored_seconds",
            "From the sample's own timestamp (the vehicle's clock) to its stored record",
            ["topic"],
            buckets=PUBLISH_BUCKETS,
            registry=r,
        )
        self.compression_ratio = Histogram(
            "v2c_batch_compression_ratio",
            "1 - batch payload bytes / bytes of the same samples sent individually",
            ["region"],
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.decompression_errors = Counter(
            "v2c_batch_decompression_errors",
            "Batches that could not be checked or decompressed (alert: > 0.1 %)",
            ["region", "reason"],
            registry=r,
        )
        self.dynamodb_errors = Counter(
            "v2c_dynamodb_write_errors",
            "Failed DynamoDB attempts (retried or not), by error type",
            ["region", "error_type"],
            registry=r,
        )
        # The store's rejections (the record's fault), whatever the sink: the
        # name predates the sink choice and stays for existing dashboards.
        self.timestream_rejected = Counter(
            "v2c_timestream_rejected_records",
            "Time-series records the store rejected",
            ["region", "reason"],
            registry=r,
        )
        self.timeseries_rejected = Counter(
            "v2c_timeseries_rejected_records",
            "Time-series points not written: refused, or failed after the sink's retries",
            ["region", "sink", "reason"],
            registry=r,
        )
        # Shared with the gateway's dead letters (one counter per registry).
        self.dlq_messages = dlq_messages(r)
        self.enrichment_failures = Counter(
            "v2c_telemetry_enrichment_failures",
            "Registry lookups that failed (records stored without make/model/year)",
            ["region"],
            registry=r,
        )
        self.dedup_check_failures = Counter(
            "v2c_telemetry_dedup_check_failures",
            "Durable duplicate checks that failed (idempotent writes went ahead)",
            ["region"],
            registry=r,
        )

    def count_rejections(self, region: str, sink: str, failures: Sequence[PointFailure]) -> None:
        """Points not written, by sink; reason: the rejection's kind, else the error's."""
        for _point, error in failures:
            if isinstance(error, InvalidInput):
                kind = rejection_kind(error.detail)
                self.timestream_rejected.labels(region, kind).inc()
            else:
                kind = error.reason
            self.timeseries_rejected.labels(region, sink, kind).inc()

    def samples_stored(self, topic: str, timestamps_ms: Iterable[int]) -> None:
        """Samples just stored (each once: never a duplicate, never a retry
        of one already stored): how old each was, by its own timestamp; a
        vehicle clock ahead of ours counts 0."""
        now = time.time()
        histogram = self.publish_to_stored.labels(topic)
        for timestamp_ms in timestamps_ms:
            histogram.observe(max(0.0, now - timestamp_ms / 1000))

    def message_done(
        self, region: str, received_at_ms: int, report: IngestReport, started: float
    ) -> None:
        """One message's outcome: counts by status, duplicates, publish → stored
        latency and processing time (`started`: `time.perf_counter()`)."""
        topic = report.topic.value
        labels = (region, topic)
        for status, count in (
            ("stored", report.stored),
            ("duplicate", report.duplicates),
            ("invalid", report.invalid),
            ("failed", report.failed),
        ):
            if count:
                self.messages.labels(*labels, status).inc(count)
        if report.duplicates:
            self.duplicates.labels(*labels).inc(report.duplicates)
        if report.stored:
            waited = max(0.0, time.time() - received_at_ms / 1000)
            self.store_latency.labels(topic).observe(waited)
        self.processing.labels(topic).observe(time.perf_counter() - started)


# The process-wide instance on prometheus_client's default REGISTRY.
METRICS: PerContainer[TelemetryMetrics] = PerContainer(TelemetryMetrics)
default_metrics = METRICS.get
