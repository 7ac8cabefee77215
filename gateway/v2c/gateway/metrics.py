"""Prometheus metrics of the gateway. Each gateway owns its registry, so two
gateways in one test process do not collide; `serve()` exposes it over HTTP."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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
        self.dlq_messages = Counter(
            "v2c_dlq_messages",
            "Records written to a dead-letter queue",
            ["queue", "reason"],
            registry=r,
        )
        self.dlq_write_failures = Counter(
            "v2c_dlq_write_failures", "Failed attempts to write a DLQ record", ["queue"], registry=r
        )
        self.in_flight = Gauge(
            "v2c_gateway_in_flight", "Messages received and not yet acknowledged", registry=r
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
