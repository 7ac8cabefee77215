"""Prometheus metrics of the gateway; `serve()` exposes its registry over HTTP.

By default each gateway owns a registry, so two gateways in one test process
do not collide. `v2c gateway run` passes prometheus_client's default REGISTRY
instead, the one the handlers it runs count into (`v2c_telemetry_*`), so its
endpoint serves both. The DLQ counter is the registry's one
`v2c_dlq_messages_total` (`v2c.handlers.dlq.metrics`), shared with the
handlers' own dead letters rather than a second family of the same name."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from v2c.handlers.dlq.metrics import dlq_messages

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "v2c_gateway_messages_received", "Messages received per rule", ["rule"], registry=r
        )
        self.handled = Counter(
            "v2c_gateway_messages_handled", "Messages whose handler returned", ["rule"], registry=r
        )
        self.failed = Counter(
            "v2c_gateway_messages_failed",
            "Messages whose handler failed, by reason",
            ["rule", "reason"],
            registry=r,
        )
        self.unrouted = Counter(
            "v2c_gateway_messages_unrouted", "Messages no rule matched", registry=r
        )
        self.latency = Histogram(
            "v2c_gateway_handler_latency_seconds",
            "Handler latency per rule",
            ["rule"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dlq_messages = dlq_messages(r)
        self.dlq_write_failures = Counter(
            "v2c_dlq_write_failures", "Failed attempts to write a DLQ record", ["queue"], registry=r
        )
        self.in_flight = Gauge(
            "v2c_gateway_in_flight", "Messages being handled now (inside the window)", registry=r
        )
        # Read when scraped (`set_function`), never written per message.
        self.waiting = Gauge(
            "v2c_gateway_waiting",
            "Messages received, waiting for a slot (window or per-vehicle cap), not acknowledged",
            registry=r,
        )
        self.abandoned = Gauge(
            "v2c_gateway_abandoned_handler_calls",
            "Handler calls still running after their timeout (their threads were replaced)",
            registry=r,
        )
        self.connected = Gauge(
            "v2c_gateway_connected", "1 while connected to the broker", registry=r
        )
        self.published = Counter(
            "v2c_outbound_published", "Cloud-to-vehicle publishes completed", ["source"], registry=r
        )
        self.publish_failures = Counter(
            "v2c_outbound_publish_failures", "Failed publish attempts", ["source"], registry=r
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
