"""The alert metric of the signing port.

`v2c_signing_failures_total{backend, operation, reason}` counts operations
that failed for good (every attempt used, or a non-retryable error): each
increment is a campaign creation answered 503 (or 500 for a configuration
error), so any increase should page. Retried attempts that then succeeded
are not counted here; they appear in the warning log.

`v2c_signing_available{backend}` (gauge) is 1 when the backend's last
operation (a signature, the public key fetched, a `Signer.probe`: the API
process probes at start and then once a minute) succeeded and 0 when it
failed for good: what the operation that comes next will most likely meet.
HSMSigningServiceDown also fires on any increase of the failure counter, so
a failure between two probes pages even once the gauge is back at 1. In Lambda a failure also
writes the EMF count `SigningFailures` (service `signing`).

`signing_metrics()` is the default registry's one instance (the one the
gateway and the API process serve); tests build their own on their own
registries.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from v2c.handlers.emf_counts import emit_counts
from v2c.handlers.per_registry import PerRegistry
from v2c.handlers.signing.base import SigningFailure


class SigningMetrics:
    """A failure hook that counts into its own registry (or the one given),
    so several signers or test processes never collide on the default one."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.failures = Counter(
            "v2c_signing_failures",
            "Signing operations that failed after every attempt (alert on any increase)",
            ["backend", "operation", "reason"],
            registry=self.registry,
        )
        self.available = Gauge(
            "v2c_signing_available",
            "1 while the signing backend answered its last operation, 0 after one failed for good",
            ["backend"],
            registry=self.registry,
        )

    def __call__(self, failure: SigningFailure) -> None:
        self.failed(failure)

    def failed(self, failure: SigningFailure) -> None:
        self.failures.labels(failure.backend, failure.operation, failure.reason).inc()
        self.available.labels(failure.backend).set(0)
        emit_counts("signing", {"SigningFailures": 1})

    def succeeded(self, backend: str) -> None:
        self.available.labels(backend).set(1)

    def failure_count(
        self, backend: str, operation: str = "sign", reason: str | None = None
    ) -> float:
        """The counter's value for a backend (summed over reasons unless one is given)."""
        total = 0.0
        for metric in self.failures.collect():
            for sample in metric.samples:
                labels = sample.labels
                if (
                    sample.name.endswith("_total")
                    and labels["backend"] == backend
                    and labels["operation"] == operation
                    and (reason is None or labels["reason"] == reason)
                ):
                    total += sample.value
        return total


_METRICS: PerRegistry[SigningMetrics] = PerRegistry(SigningMetrics)


def signing_metrics(registry: CollectorRegistry = REGISTRY) -> SigningMetrics:
    """The registry's one set, registered on first use."""
    return _METRICS.get(registry)
