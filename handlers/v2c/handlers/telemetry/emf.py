"""CloudWatch metrics of the Lambda form: EMF lines through Powertools.

In AWS Lambda, CloudWatch turns an EMF line on stdout into metrics, so the
report of each invocation becomes one line. Outside Lambda (the gateway runs
the same handlers thousands of times a second) Prometheus is the metrics
path and an EMF line per message would only flood stdout, so nothing is
emitted unless `AWS_LAMBDA_FUNCTION_NAME` is set (the Lambda runtime sets
it). `EphemeralMetrics` per invocation, not the shared `Metrics` singleton:
the gateway runs handlers on many threads at once, and a shared metric set
would let one invocation flush another's half-built metrics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from v2c.handlers.telemetry.report import IngestReport

NAMESPACE: Final = "v2c"
SERVICE: Final = "telemetry"
ENV_LAMBDA: Final = "AWS_LAMBDA_FUNCTION_NAME"


def in_lambda(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get(ENV_LAMBDA))


def emit(report: IngestReport, region: str) -> None:
    """One EMF line for one invocation (a no-op outside Lambda)."""
    if not in_lambda():
        return
    metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    metrics.add_dimension(name="region", value=region or "unknown")
    metrics.add_dimension(name="topic", value=report.topic.value)
    for name, value in (
        ("TelemetryReceived", report.received),
        ("TelemetryStored", report.stored),
        ("TelemetryDuplicates", report.duplicates),
        ("TelemetryInvalid", report.invalid),
        ("TelemetryFailed", report.failed),
        ("DeadLettered", report.dead_lettered),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    if report.compression_ratio is not None:
        metrics.add_metric(
            name="BatchCompressionRatio",
            unit=MetricUnit.Percent,
            value=round(report.compression_ratio * 100, 2),
        )
    if report.batch_id:
        metrics.add_metadata(key="batch_id", value=report.batch_id)
    metrics.flush_metrics()
