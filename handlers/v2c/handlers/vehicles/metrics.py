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
* `v2c_vehicle_certificates_expired` (gauge): active vehicles whose live
  certificate has expired (the broker refuses them), from the same pass;
  CertificateExpired alerts on it above 0;
* `v2c_certificate_expiry_days{subject}` (gauge): days left on the soonest
  certificate of a subject; this module sets `vehicle_min` (the soonest
  unexpired live certificate of an active vehicle; absent with no such
  vehicle) from the same pass. Expired ones are left out (they are the
  count above): one parked vehicle with a lapsed certificate would
  otherwise hold the gauge below 0 for good and hide every other vehicle's
  approaching end. The stack's own certificates (`fleet_ca`, `service`) are
  read where their files are: the API process (`v2c.infra.local.api_metrics`).

In Lambda the pass also writes the EMF gauges `CertificatesExpiringWithin7Days`
(expired included) and `CertificatesExpired` (service `vehicles`), which the
template's alarms read (expiring soon: their difference).

One instance per registry, as `dlq.metrics` keeps its counter: the gateway
serves the default registry, which the handlers it hosts share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from v2c.handlers.emf_counts import emit_gauges
from v2c.handlers.per_registry import PerRegistry

WINDOWS_DAYS: Final = (7, 30)
DAY_MS: Final = 24 * 3600 * 1000
EXPIRY_DAYS: Final = "v2c_certificate_expiry_days"
VEHICLE_MIN: Final = "vehicle_min"


def expiry_days_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        EXPIRY_DAYS,
        "Days left on the soonest certificate of the subject (negative: expired)",
        ("subject",),
        registry=registry,
    )


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
        self.expired = Gauge(
            "v2c_vehicle_certificates_expired",
            "Active vehicles whose live certificate has expired",
            registry=registry,
        )
        self.expiry_days = expiry_days_gauge(registry)

    def set_expiring(
        self,
        counts: Mapping[int, int],
        soonest_ms: int | None = None,
        now_ms: int = 0,
        *,
        expired: int = 0,
    ) -> None:
        """One expiry pass's result: the counts per window, the expired
        count and, when some active vehicle has an unexpired live
        certificate, when the soonest of those expires."""
        for days, count in counts.items():
            self.expiring.labels(within_days=str(days)).set(count)
        self.expired.set(expired)
        if soonest_ms is None:
            if self._has_vehicle_min():
                self.expiry_days.remove(VEHICLE_MIN)
        else:
            self.expiry_days.labels(VEHICLE_MIN).set(round((soonest_ms - now_ms) / DAY_MS, 3))
        levels = {"CertificatesExpired": float(expired)}
        if 7 in counts:
            levels["CertificatesExpiringWithin7Days"] = counts[7]
        emit_gauges("vehicles", levels)

    def _has_vehicle_min(self) -> bool:
        return any(
            sample.labels.get("subject") == VEHICLE_MIN
            for metric in self.expiry_days.collect()
            for sample in metric.samples
        )


_METRICS: PerRegistry[CertificateMetrics] = PerRegistry(CertificateMetrics)


def certificate_metrics(registry: CollectorRegistry = REGISTRY) -> CertificateMetrics:
    """The registry's one set, registered on first use."""
    return _METRICS.get(registry)
