"""OTA metrics and alerts (Prometheus, on the gateway's and the API's endpoints locally).

An alert is a counter increment plus an ERROR log line with the campaign and
the reason: Prometheus alerting rules (or a CloudWatch metric filter on the
Lambda's logs) turn either into a page.

The recording functions (`updates_ended`, `rollback_started`,
`signature_failures`, `signing_failed`, `signing_succeeded`) are the one way
the services count what happened: each counts into Prometheus and, in Lambda,
writes the matching EMF line (`emf_counts`), so the CloudWatch alarms and the
Prometheus rules read the same events. They are called where the event is
written, never where it is merely decided: an update ends when its record's
write succeeded (`updates.commands.UpdateCommands.record` for the cloud's
commands, the status service for reports), a rollback when the campaign's
status change (or the device's rollback) went through.

* `v2c_ota_update_outcomes_total{outcome, reason}`: an update attempt
  ending, i.e. its record leaving a non-terminal state for a terminal one:
  completed, failed (REJECTED included), rolled_back, cancelled, timed_out;
  `reason` the OTAStatus reason name the vehicle gave, NONE for none (the
  cloud's own cancels and timeouts). One change between end states is never
  a second outcome: the vehicle's late final word over the cloud's guess
  (TIMED_OUT, then COMPLETED) keeps the first. The one exception is
  `reverted`: a campaign rollback turning a completed update into
  rolled_back (`Command.REVERT`) counts apart, because the fleet's rollback
  of good firmware is no vehicle's failure: the rates' numerators and
  denominators name their outcomes and leave `reverted` out. A retried
  update (failed, then pending again) is a new attempt: its next end counts
  again. Rollback updates themselves (kind `rollback`) are not outcomes:
  `v2c_ota_rollbacks_total` counts the rollback;
* `v2c_ota_rollbacks_total{trigger}`: campaign rollbacks by trigger (manual,
  failure_rate, health_check, timeout, error_threshold) and a fleet manager's
  rollback of one vehicle (`device`);
* `v2c_ota_signature_verification_failures_total{reason}`: reports of a
  vehicle that could not verify what it was sent (SIGNATURE_VERIFICATION_FAILED,
  or NOTIFICATION_UNVERIFIED when the flag came without that reason).
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Final

from prometheus_client import Counter

from v2c.handlers.emf_counts import emit_counts
from v2c.handlers.ota.domain.rollback_rules import RollbackTrigger
from v2c.handlers.ota.domain.update_state import TERMINAL, UpdateState
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.handlers.signing.base import SigningFailure
from v2c.handlers.signing.metrics import signing_metrics
from v2c.v1.ota_pb2 import OTAStatus

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


UPDATE_OUTCOMES: Final = Counter(
    "v2c_ota_update_outcomes",
    "Updates that ended, by outcome and the vehicle's reason (NONE: none given)",
    ["outcome", "reason"],
)
ROLLBACKS: Final = Counter("v2c_ota_rollbacks", "Rollbacks started, by trigger", ["trigger"])
SIGNATURE_FAILURES: Final = Counter(
    "v2c_ota_signature_verification_failures",
    "Vehicle reports of a signature it could not verify",
    ["reason"],
)

SERVICE: Final = "ota"
NO_REASON: Final = "NONE"
DEVICE_TRIGGER: Final = "device"  # a fleet manager's rollback of one vehicle
UNVERIFIED_REASON: Final = "NOTIFICATION_UNVERIFIED"
SIGNATURE_REASON: Final = OTAStatus.Reason.Name(OTAStatus.SIGNATURE_VERIFICATION_FAILED)
_REASONS: Final = frozenset(OTAStatus.Reason.keys()) - {"REASON_UNSPECIFIED"}

# The update's terminal state -> (outcome label, EMF metric).
OUTCOME_OF: Final[dict[UpdateState, tuple[str, str]]] = {
    UpdateState.COMPLETED: ("completed", "UpdatesCompleted"),
    UpdateState.FAILED: ("failed", "UpdatesFailed"),
    UpdateState.REJECTED: ("failed", "UpdatesFailed"),
    UpdateState.ROLLED_BACK: ("rolled_back", "UpdatesRolledBack"),
    UpdateState.CANCELLED: ("cancelled", "UpdatesCancelled"),
    UpdateState.TIMED_OUT: ("timed_out", "UpdatesTimedOut"),
}
# A completed update a campaign rollback reverted: its own outcome, in no rate.
REVERTED: Final = ("reverted", "UpdatesReverted")
ROLLBACK_TRIGGERS: Final = (*(t.value for t in RollbackTrigger), DEVICE_TRIGGER)

# Every series a rule may name exists from the start (at 0), so `increase()`
# sees the first event and a rule over a series that never moved is no error.
for _outcome, _ in {*OUTCOME_OF.values(), REVERTED}:
    UPDATE_OUTCOMES.labels(_outcome, NO_REASON)
for _trigger in ROLLBACK_TRIGGERS:
    ROLLBACKS.labels(_trigger)
SIGNATURE_FAILURES.labels(SIGNATURE_REASON)


def reason_label(reason: str) -> str:
    """An OTAStatus reason name as it is, anything else (free text, "") NONE:
    the label's values stay the enum's few."""
    return reason if reason in _REASONS else NO_REASON


def ended(before: VehicleUpdate, after: VehicleUpdate) -> tuple[str, str] | None:
    """(outcome, reason) when writing `after` over `before` ends the update, else None.

    Only a change out of a non-terminal state is an outcome: an update that
    already ended and changes its end state (the vehicle's word after a
    timeout or cancel) was counted when it first ended. Completed to
    rolled_back is the campaign rollback's revert (a vehicle cannot report
    past COMPLETED): `reverted`, which no rate reads."""
    if after.state is before.state or after.state not in TERMINAL:
        return None
    if after.kind is UpdateKind.ROLLBACK:
        return None
    if before.state in TERMINAL:
        if before.state is UpdateState.COMPLETED and after.state is UpdateState.ROLLED_BACK:
            return REVERTED[0], NO_REASON
        return None
    return OUTCOME_OF[after.state][0], reason_label(after.reason)


_EMF_OF_OUTCOME: Final = dict([*OUTCOME_OF.values(), REVERTED])


def updates_ended(outcomes: Iterable[tuple[str, str]]) -> None:
    """Count ended updates, each (outcome, reason); one EMF line for them all."""
    tally = Tally(outcomes)
    emf: Tally[str] = Tally()
    for (outcome, reason), count in tally.items():
        UPDATE_OUTCOMES.labels(outcome, reason).inc(count)
        emf[_EMF_OF_OUTCOME[outcome]] += count
    emit_counts(SERVICE, emf)


def records_written(pairs: Iterable[tuple[VehicleUpdate, VehicleUpdate]]) -> None:
    """The records just written (before, after): count those that ended."""
    updates_ended(o for before, after in pairs if (o := ended(before, after)) is not None)


def never_notified_cancelled(count: int) -> None:
    """Targets a cancel or a rollback stopped before they were notified: they
    have no record, only their share of the campaign's counters (moved in the
    campaign's status change), and end cancelled all the same."""
    if count > 0:
        UPDATE_OUTCOMES.labels("cancelled", NO_REASON).inc(count)
        emit_counts(SERVICE, {"UpdatesCancelled": count})


def rollback_started(trigger: str) -> None:
    """A campaign rollback (its status changed) or a device rollback (sent)."""
    ROLLBACKS.labels(trigger).inc()
    emit_counts(SERVICE, {"Rollbacks": 1})


def signature_reason(status: OTAStatus) -> str | None:
    """The label of a report about a signature the vehicle could not verify, else None."""
    if status.reason == OTAStatus.SIGNATURE_VERIFICATION_FAILED:
        return SIGNATURE_REASON
    if status.notification_unverified:
        return UNVERIFIED_REASON
    return None


def signature_failures(reasons: Iterable[str]) -> None:
    tally = Tally(reasons)
    for reason, count in tally.items():
        SIGNATURE_FAILURES.labels(reason).inc(count)
    emit_counts(SERVICE, {"SignatureVerificationFailures": sum(tally.values())})


class PrometheusAlerts:
    def alert(self, name: str, campaign_id: str, detail: str) -> None:
        ALERTS.labels(name).inc()
        logger.error("OTA alert %s", name, extra={"campaign_id": campaign_id, "detail": detail})


def signing_failed(failure: SigningFailure) -> None:
    """The signer's failure hook: the alert metric for an HSM/KMS outage
    (`v2c_signing_failures_total`, `v2c_signing_available` 0, EMF
    `SigningFailures`), and the OTA alert."""
    SIGNING_FAILURES.labels(failure.backend, failure.reason).inc()
    signing_metrics().failed(failure)
    ALERTS.labels("signing_unavailable").inc()
    logger.error(
        "OTA alert signing_unavailable",
        extra={"backend": failure.backend, "reason": failure.reason, "attempts": failure.attempts},
    )


def signing_succeeded(backend: str) -> None:
    """The signer's success hook: the backend answers (`v2c_signing_available` 1)."""
    signing_metrics().succeeded(backend)
