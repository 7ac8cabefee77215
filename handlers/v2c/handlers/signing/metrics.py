"""The alert metric of the signing port.

`v2c_signing_failures_total{backend, operation, reason}` counts operations
that failed for good (every attempt used, or a non-retryable error): each
increment is a campaign creation answered 503 (or 500 for a configuration
error), so any increase should page. Retried attempts that then succeeded
are not counted here; they appear in the warning log.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

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

    def __call__(self, failure: SigningFailure) -> None:
        self.failures.labels(failure.backend, failure.operation, failure.reason).inc()

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
