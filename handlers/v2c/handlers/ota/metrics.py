"""OTA metrics and alerts (Prometheus, on the gateway's endpoint locally).

An alert is a counter increment plus an ERROR log line with the campaign and
the reason: Prometheus alerting rules (or a CloudWatch metric filter on the
Lambda's logs) turn either into a page.
"""

from __future__ import annotations

import logging
from typing import Final

from prometheus_client import Counter

from v2c.handlers.signing.base import SigningFailure

logger = logging.getLogger("v2c.ota.alerts")

ALERTS: Final = Counter(
    "v2c_ota_alerts", "OTA alerts raised (auto-pause, auto-rollback, gate, stall)", ["alert"]
)
SIGNING_FAILURES: Final = Counter(
    "v2c_ota_signing_failures", "Signing operations that failed for good", ["backend", "reason"]
)
STATUS_REPORTS: Final = Counter(
    "v2c_ota_status_reports", "OTA status reports by outcome", ["outcome"]
)
NOTIFICATIONS: Final = Counter("v2c_ota_notifications", "OTA notifications by result", ["result"])
UNVERIFIED_NOTIFICATIONS: Final = Counter(
    "v2c_ota_unverified_notifications",
    "Notifications vehicles could not verify (forged or damaged); no update record changed",
    ["target"],  # known_update: the claimed id names a real update of that vehicle
)


class PrometheusAlerts:
    def alert(self, name: str, campaign_id: str, detail: str) -> None:
        ALERTS.labels(name).inc()
        logger.error("OTA alert %s", name, extra={"campaign_id": campaign_id, "detail": detail})


def signing_failed(failure: SigningFailure) -> None:
    """The signer's failure hook: the alert metric for an HSM/KMS outage."""
    SIGNING_FAILURES.labels(failure.backend, failure.reason).inc()
    ALERTS.labels("signing_unavailable").inc()
    logger.error(
        "OTA alert signing_unavailable",
        extra={"backend": failure.backend, "reason": failure.reason, "attempts": failure.attempts},
    )
