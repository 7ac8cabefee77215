"""Status ingest: a vehicle's `OTAStatus` applied to its update record.

Exactly-once in effect on an at-least-once transport: the state machine
(`update_state.apply_status`) accepts a report only above the last applied
sequence, and the repository writes the new record and the campaign's
counter move in one transaction conditioned on the record as read. A
duplicate or stale report changes nothing; a lost race re-reads and applies
again. After a report that moved the success or failure rates, the campaign
reacts at once (pause, roll back, pass a gate, or refill the concurrency
window): the PRD's 60 s is a ceiling, not a polling period.

A report that cannot be applied because it is malformed, names another
vehicle or an unknown update raises a typed error: the gateway (or IoT
Core's error action) dead-letters it with the original payload and reason.

A report about a notification the vehicle could not verify
(`update_state.is_unverified`) is never applied on the vehicle's word: its
update id came from bytes nobody vouches for, and a forged notification
reusing a real update id must not end that update. It is counted
(`v2c_ota_unverified_notifications_total`, the `unverified_notification`
alert) and audited (event `update.unverified_notification`), whatever update
it names, known or not, and is never dead-lettered. One case is the real
update's business: the report's `notification_sha256` equals the digest of
what the cloud signed for that update (the vehicle's key store or clock
failed the cloud's own notification); then the rejection is recorded
(`apply_confirmed_rejection`) like any other.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import DecodeError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from v2c.contract.errors import CodecError, Conflict, InvalidInput, NotFound, TransientError
from v2c.contract.events import InboundEvent
from v2c.contract.ids import id_text
from v2c.contract.notification import signed_part_sha256
from v2c.contract.topics import Domain, Topic
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.service import CampaignService
from v2c.handlers.ota.concurrency import retry_stale
from v2c.handlers.ota.domain.update_state import (
    TERMINAL,
    Command,
    Outcome,
    Transition,
    UpdateState,
    apply_confirmed_rejection,
    apply_status,
    is_unverified,
)
from v2c.handlers.ota.metrics import UNVERIFIED_NOTIFICATIONS
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.v1.ota_pb2 import OTAStatus

logger = logging.getLogger(__name__)

MAX_STATUS_BYTES: Final = 4096
STARTED: Final = frozenset({UpdateState.ACCEPTED, UpdateState.DOWNLOADING})
UNVERIFIED_EVENT: Final = "update.unverified_notification"
UNVERIFIED_ALERT: Final = "unverified_notification"


@dataclass(frozen=True, slots=True)
class StatusReport:
    vehicle_id: str
    update_id: str
    outcome: Outcome
    state: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "vehicle_id": self.vehicle_id,
            "update_id": self.update_id,
            "outcome": self.outcome.value,
            "state": self.state,
            "reason": self.reason,
        }


def parse_status(topic: str, payload: bytes) -> OTAStatus:
    """Decode and check a report against the topic it came on."""
    parsed = Topic.parse(topic)
    if parsed.domain is not Domain.OTA or parsed.kind != "status":
        raise InvalidInput(f"{topic} is not an OTA status topic")
    if len(payload) > MAX_STATUS_BYTES:
        raise InvalidInput(f"status report of {len(payload)} bytes exceeds {MAX_STATUS_BYTES}")
    status = OTAStatus()
    try:
        status.ParseFromString(payload)
    except DecodeError as exc:
        raise CodecError(f"not an OTAStatus message: {exc}") from exc
    if status.vehicle_id != parsed.vehicle_id:
        raise InvalidInput(
            f"report names vehicle {status.vehicle_id!r} but came from {parsed.vehicle_id}"
        )
    if not status.update_id:
        raise InvalidInput("report without update_id")
    if status.sequence < 1:
        raise InvalidInput("report sequence must start at 1")
    return status


def _record_fields(status: OTAStatus, now_ms: int, update: VehicleUpdate) -> dict[str, Any]:
    reason = OTAStatus.Reason.Name(status.reason) if status.reason else ""
    fields: dict[str, Any] = {
        "updated_at_ms": now_ms,
        "reason": reason,
        "error_detail": status.error_detail[:500],
        "progress_percent": min(100, status.progress_percent),
        "bytes_downloaded": max(update.bytes_downloaded, status.bytes_downloaded),
    }
    for name in ("download_duration_ms", "install_duration_ms", "total_duration_ms"):
        value = getattr(status, name)
        if value:
            fields[name] = value
    if status.installed_version:
        fields["installed_version"] = status.installed_version
    return fields


class StatusService:
    def __init__(
        self,
        deps: CampaignServiceDeps,
        campaigns: CampaignService,
        *,
        retry_wait_s: float = 0.2,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._d = deps
        self._campaigns = campaigns
        self._retry_wait_s = retry_wait_s
        self._sleep = sleep

    def ingest(self, event: Mapping[str, Any]) -> StatusReport:
        inbound = InboundEvent.parse(event)
        status = parse_status(str(inbound.topic), inbound.payload)
        kwargs: dict[str, Any] = {}
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        for attempt in Retrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=self._retry_wait_s, max=5),
            retry=retry_if_exception_type(TransientError),
            reraise=True,
            **kwargs,
        ):
            with attempt:
                return self.apply(status)
        raise AssertionError("unreachable")  # pragma: no cover

    def apply(self, status: OTAStatus) -> StatusReport:
        if is_unverified(status):
            return self._unverified(status)
        return self._apply(status, lambda update: apply_status(update.machine, status))

    def _apply(
        self, status: OTAStatus, decide: Callable[[VehicleUpdate], Transition]
    ) -> StatusReport:
        applied: list[tuple[VehicleUpdate, VehicleUpdate, Transition]] = []

        def attempt() -> StatusReport:
            update = self._d.updates.find(status.vehicle_id, status.update_id)
            if update is None:
                raise NotFound(f"no update {status.update_id!r} for vehicle {status.vehicle_id}")
            transition = decide(update)
            report = StatusReport(
                status.vehicle_id,
                status.update_id,
                transition.outcome,
                transition.after.state.value,
                transition.reason,
            )
            if transition.outcome is not Outcome.APPLIED:
                if transition.outcome is Outcome.INVALID:
                    logger.warning("invalid status report", extra=report.to_json())
                return report
            now_ms = int(self._d.clock() * 1000)
            changes = _record_fields(status, now_ms, update)
            after_state = transition.after.state
            if after_state in STARTED and not update.started_at_ms:
                changes["started_at_ms"] = now_ms
            if after_state in TERMINAL:
                changes["completed_at_ms"] = now_ms
            after = update.with_machine(transition.after, **changes)
            self._campaigns.commands.record(update, after, transition.deltas, now_ms)
            applied.append((update, after, transition))
            return report

        report = retry_stale(
            attempt,
            gave_up=f"update {status.update_id} of {status.vehicle_id} keeps changing",
            attempts=self._d.config.conflict_retries,
        )
        # The consequences run once, after the write that won, outside the retry.
        for before, after, transition in applied:
            self._after(before, after, transition)
        return report

    # -- reports about notifications the vehicle could not verify -------------

    def _unverified(self, status: OTAStatus) -> StatusReport:
        update = self._d.updates.find(status.vehicle_id, status.update_id)
        if update is not None and self._signed_by_us(update, status.notification_sha256):
            return self._apply(status, lambda fresh: apply_confirmed_rejection(fresh.machine))
        self._audit_unverified(status, update)
        return StatusReport(
            status.vehicle_id,
            status.update_id,
            Outcome.UNVERIFIED,
            update.state.value if update is not None else "",
            "the vehicle could not verify the notification; no record changed",
        )

    def _signed_by_us(self, update: VehicleUpdate, reported: bytes) -> bool:
        """Whether the vehicle rejected exactly what the cloud signed for `update`."""
        if len(reported) != 32:
            return False
        if update.manifest:
            manifest, signature, key_id = update.manifest, update.signature, update.key_id
        elif update.campaign_id:
            try:
                release = self._d.campaigns.get(update.campaign_id).release
            except NotFound:
                return False
            if release.update_id != update.update_id:
                return False
            manifest, signature, key_id = release.manifest, release.signature, release.key_id
        else:
            return False
        return hmac.compare_digest(signed_part_sha256(manifest, signature, key_id), reported)

    def _audit_unverified(self, status: OTAStatus, update: VehicleUpdate | None) -> None:
        """Count, alert and audit; the claimed ids are data, never keys to act on."""
        known = update is not None
        UNVERIFIED_NOTIFICATIONS.labels("known_update" if known else "unknown_update").inc()
        try:
            message_id = id_text(status.header.message_id)
        except CodecError:
            message_id = status.header.message_id.hex()
        detail = {
            "vehicle_id": status.vehicle_id,
            "claimed_update_id": status.update_id[:128],
            "claimed_campaign_id": status.campaign_id[:128],
            "names_known_update": known,
            "record_state": update.state.value if update is not None else "",
            "flagged": status.notification_unverified,
            "notification_sha256": status.notification_sha256.hex(),
            "report_message_id": message_id,
            "report_sequence": status.sequence,
            "error_detail": status.error_detail[:500],
            "reported_at_ms": status.header.timestamp,
        }
        logger.warning("unverified notification reported", extra=detail)
        self._d.alerts.alert(
            UNVERIFIED_ALERT,
            update.campaign_id if update is not None else "",
            f"{status.vehicle_id} could not verify a notification naming "
            f"{status.update_id[:128]!r}: {status.error_detail[:200]}",
        )
        self._d.events.publish(UNVERIFIED_EVENT, detail)

    def _after(self, before: VehicleUpdate, after: VehicleUpdate, transition: Transition) -> None:
        """Consequences outside the record: the registry's installed version,
        rollback bookkeeping, and the campaign's reaction."""
        if after.state in TERMINAL and after.installed_version:
            self._d.fleet.set_installed_version(after.vehicle_id, after.installed_version)
        elif after.state is UpdateState.COMPLETED:
            self._d.fleet.set_installed_version(after.vehicle_id, after.to_version)
        if after.kind is UpdateKind.ROLLBACK and after.state in TERMINAL:
            self._finish_rollback(after)
        finished = before.state not in TERMINAL and after.state in TERMINAL
        if (
            after.kind is UpdateKind.CAMPAIGN
            and after.campaign_id
            and (transition.affects_rates or finished)
        ):
            self._campaigns.on_outcome(after.campaign_id)

    def _finish_rollback(self, rollback: VehicleUpdate) -> None:
        now_ms = int(self._d.clock() * 1000)
        self._d.rollbacks.finish(
            rollback.vehicle_id, rollback.update_id, rollback.state.value, now_ms
        )
        if rollback.state is not UpdateState.COMPLETED or not rollback.reverts_update_id:
            return
        original = self._d.updates.find(rollback.vehicle_id, rollback.reverts_update_id)
        if original is None or not original.campaign_id:
            return
        campaign_id = original.campaign_id
        # A record that keeps changing under a revert is left to its writers.
        with contextlib.suppress(Conflict):
            self._campaigns.commands.apply(original, Command.REVERT, reason="campaign rollback")
        self._campaigns.rollbacks.finish_if_done(campaign_id)
