"""Certificate expiry as Prometheus series: the FMEA's detection for certificate expiration.

* `v2c_vehicle_certificates_expiring{within_days="7"|"30"}` (gauge): active
  vehicles whose live certificate expires within that many days, expired
  ones included. Set by each expiry pass (`RotationService.end_overlaps`
  reads the whole registry anyway); alert on `within_days="7"` above 0: the
  vehicle's own rotation starts 7 days before the end, so a vehicle still
  there has not managed to rotate;
* `v2c_vehicle_certificate_rotations_total{outcome}` (counter): rotation
  requests by outcome (`issued`, `repeated`, `rejected`);
* `v2c_vehicle_certificates_revoked_total` (counter): old certificates
  revoked when their overlap ended.

One instance per registry, as `dlq.metrics` keeps its counter: the gateway
serves the default registry, which the handlers it hosts share.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Final
from weakref import WeakKeyDictionary

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

WINDOWS_DAYS: Final = (7, 30)


class CertificateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.expiring = Gauge(
            "v2c_vehicle_certificates_expiring",
            "Active vehicles whose certificate expires within the days (expired included)",
            ("within_days",),
            registry=registry,
        )
        self.rotations = Counter(
            "v2c_vehicle_certificate_rotations",
            "Certificate rotation requests by outcome",
            ("outcome",),
            registry=registry,
        )
        self.revoked = Counter(
            "v2c_vehicle_certificates_revoked",
            "Rotated-out certificates revoked at the end of their overlap",
            registry=registry,
        )

    def set_expiring(self, counts: Mapping[int, int]) -> None:
        for days, count in counts.items():
            self.expiring.labels(within_days=str(days)).set(count)


_METRICS: WeakKeyDictionary[CollectorRegistry, CertificateMetrics] = WeakKeyDictionary()
_LOCK = threading.Lock()


def certificate_metrics(registry: CollectorRegistry = REGISTRY) -> CertificateMetrics:
    """The registry's one set, registered on first use."""
    with _LOCK:
        metrics = _METRICS.get(registry)
        if metrics is None:
            metrics = _METRICS[registry] = CertificateMetrics(registry)
        return metrics
