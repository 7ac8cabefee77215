"""The simulator's Prometheus exporter: the vehicle side of the alerts.

The cloud sees only what arrives; a fleet that cannot connect, or whose
telemetry the broker keeps refusing, shows up here first. One process-wide
set (`SIM_METRICS`) in a registry of its own (a simulator in a test process
never mixes with the cloud's default registry), counted always (an increment
on the event loop is cheap) and served only when asked (`serve`, which
`v2c sim --metrics-port N` calls):

* `v2c_connection_attempts_total{result}`: `success` for every connection the
  broker accepted (gmqtt's own reconnects included), `failure` for every
  attempt of `AsyncMqttSession.connect` that failed (TCP, TLS, a refused
  CONNACK, a timeout);
* `v2c_telemetry_publish_total{status}`: telemetry publishes (singles, batch
  envelopes, heartbeats) by how they ended: `success` for every delivered
  PUBACK, `failure` only for what the vehicle gives up: a message the broker
  refused for good (a reason code at or above 0x80 other than busy or quota),
  a sample too large ever to send, a sample the full offline buffer pushed
  out. A PUBACK that never came, 0x10 (no subscribers) or a quota code is
  not a failure: the message goes again and counts when it ends;
* `v2c_local_buffer_depth`: the deepest offline telemetry buffer among this
  process's vehicles, read when scraped (each buffer's depth is an int it
  keeps in memory: no disk read).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sized
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

LOOPBACK: Final = "127.0.0.1"
SUCCESS: Final = "success"
FAILURE: Final = "failure"


class SimMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        attempts = Counter(
            "v2c_connection_attempts",
            "Vehicle connection attempts by result",
            ["result"],
            registry=r,
        )
        publishes = Counter(
            "v2c_telemetry_publish",
            "Telemetry publishes delivered (success) or given up (failure: refused, dropped)",
            ["status"],
            registry=r,
        )
        # The children, bound once: the hot paths only increment.
        self.connect_success = attempts.labels(SUCCESS)
        self.connect_failure = attempts.labels(FAILURE)
        self.publish_success = publishes.labels(SUCCESS)
        self.publish_failure = publishes.labels(FAILURE)
        self.buffer_depth = Gauge(
            "v2c_local_buffer_depth",
            "Samples waiting in the deepest offline telemetry buffer of this simulator",
            registry=r,
        )
        self.buffer_depth.set_function(self.deepest)
        self._buffers: weakref.WeakSet[Sized] = weakref.WeakSet()
        self._lock = threading.Lock()  # the scrape thread reads what the loop adds

    def track_buffer(self, buffer: Sized) -> None:
        with self._lock:
            self._buffers.add(buffer)

    def untrack_buffer(self, buffer: Sized) -> None:
        with self._lock:
            self._buffers.discard(buffer)

    def deepest(self) -> float:
        with self._lock:
            buffers = list(self._buffers)
        return float(max((len(b) for b in buffers), default=0))

    def serve(self, port: int, addr: str = LOOPBACK) -> WSGIServer:
        """`GET /metrics` on `addr:port` from a daemon thread, until the process
        ends or the returned server's `shutdown()`."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server


# The process's one set: every vehicle of the simulator counts into it.
SIM_METRICS: Final = SimMetrics()
