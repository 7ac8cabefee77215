"""One `v2c_dlq_messages` counter per registry, whoever writes dead letters:
the gateway's and the telemetry handlers' metrics can share a registry (as
`v2c gateway run` does) and their dead letters add up in one family."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from v2c.gateway.metrics import GatewayMetrics
from v2c.handlers.dlq.metrics import topic_region
from v2c.handlers.telemetry.metrics import TelemetryMetrics


def test_gateway_and_telemetry_metrics_share_one_registry_and_one_dlq_counter() -> None:
    registry = CollectorRegistry()
    gateway = GatewayMetrics(registry)
    telemetry = TelemetryMetrics(registry)  # used to raise: v2c_dlq_messages registered twice

    gateway.dlq_messages.labels(
        queue="telemetry", region="eu-west-1", message_type="telemetry", reason="handler_error"
    ).inc()
    telemetry.dlq_messages.labels(
        queue="telemetry", region="eu-west-1", message_type="individual", reason="invalid_field"
    ).inc()

    text = generate_latest(registry).decode()
    assert text.count("# TYPE v2c_dlq_messages_total counter") == 1
    total = sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "v2c_dlq_messages"
        for sample in metric.samples
        if sample.name == "v2c_dlq_messages_total"
    )
    assert total == 2


def test_separate_registries_keep_separate_dlq_counters() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.dlq_messages.labels(
        queue="ota", region="us-east-1", message_type="ota_status", reason="transient"
    ).inc()
    assert first.dlq_messages is not second.dlq_messages
    labels = {
        "queue": "ota",
        "region": "us-east-1",
        "message_type": "ota_status",
        "reason": "transient",
    }
    assert second.registry.get_sample_value("v2c_dlq_messages_total", labels) is None


def test_the_region_is_read_from_the_topic_or_unknown() -> None:
    assert topic_region("v2c/v1/eu-west-1/VIN-1HGBH41JXMN109186/telemetry/vehicle") == "eu-west-1"
    assert topic_region("not/a-topic") == "unknown"
    assert topic_region("") == "unknown"
