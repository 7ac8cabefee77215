"""Status ingest: vehicles' `OTAStatus` reports applied to their update records, a batch at a time.

The function is fed by a queue in batches of up to 100 reports (ADR 0009);
a direct invocation (a DLQ replay) is a batch of one. A batch costs one
read of the records it names (`UpdateStore.find_reported`), the pure
decisions (`report_batch.fold_reports`: several reports about one update
applied in sequence order, duplicates and stale reports changing nothing:
exactly-once in effect on an at-least-once transport), a few conditional
transactions, each holding changed records and one summed counter write per
campaign (`updates.reports.ReportRecorder`, which re-reads only the records
that lost a race), and then one reaction per campaign touched (pause, roll
back, pass a gate, finish, refill the concurrency window) instead of one per
report: under a burst the campaign is read and judged once, on counters
that already include the whole batch. The PRD's 60 s is a ceiling, not a
polling period.

Every report still gets its own answer: a `StatusReport`, or the error that
kept it from being applied. A report that is malformed, names another
vehicle or an unknown update is refused (`retryable=False`: the caller
dead-letters it with the original payload and reason); a transient failure
(a read left unprocessed, a chunk throttled, a campaign reaction that could
not run) is tried again here, then answered as retryable so the queue
delivers that report again. A redelivered report whose record already moved
is a duplicate; a duplicate of the report that ended an update makes its
campaign react once more, since the first delivery may have crashed before
the reaction.

A REJECTED UPDATE_IN_PROGRESS is no failure of the update it names: the
vehicle holds another update (another campaign's, one the cloud could not
see). `update_state.apply_busy` makes the record WAITING (counter
`waiting`, reason UPDATE_IN_PROGRESS), which moves no rate and so makes no
campaign react; the monitor notifies it again once the vehicle is free
(`campaigns.coordination`). A report after a timeout is applied by the same
rules as after a cancel: the vehicle's final word replaces TIMED_OUT.

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
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import DecodeError
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential

from v2c.contract.errors import (
    CodecError,
    Conflict,
    InvalidInput,
    NotFound,
    TransientError,
    V2CError,
)
from v2c.contract.events import InboundEvent
from v2c.contract.ids import id_text
from v2c.contract.notification import signed_part_sha256
from v2c.contract.topics import Domain, Topic
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.service import CampaignService
from v2c.handlers.ota.campaigns.timeouts import CANCEL_REASON as TIMEOUT_CANCEL_REASON
from v2c.handlers.ota.domain.report_batch import Report, Step, missed_the_cancel
from v2c.handlers.ota.domain.update_state import (
    TERMINAL,
    Command,
    Outcome,
    UpdateState,
    is_unverified,
)
from v2c.handlers.ota.metrics import (
    UNVERIFIED_NOTIFICATIONS,
    UNVERIFIED_REASON,
    records_written,
    signature_failures,
    signature_reason,
)
from v2c.handlers.ota.stores import UpdateKey
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.handlers.ota.updates.reports import Decided, ReportRecorder
from v2c.handlers.ota.vehicle_commands import CommandTarget, cancel_update
from v2c.v1.ota_pb2 import OTAStatus

logger = logging.getLogger(__name__)

MAX_STATUS_BYTES: Final = 4096
UNVERIFIED_EVENT: Final = "update.unverified_notification"
UNVERIFIED_ALERT: Final = "unverified_notification"
TRANSIENT_ATTEMPTS: Final = 3


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


def _answer(step: Step) -> StatusReport:
    status, transition = step.report.status, step.transition
    report = StatusReport(
        status.vehicle_id,
        status.update_id,
        transition.outcome,
        transition.after.state.value,
        transition.reason,
    )
    if transition.outcome is Outcome.INVALID:
        logger.warning("invalid status report", extra=report.to_json())
    return report


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
        self._recorder = ReportRecorder(
            deps.campaigns, deps.updates, deps.clock, deps.config.conflict_retries
        )

    # -- events in ---------------------------------------------------------------

    def ingest(self, event: Mapping[str, Any]) -> StatusReport:
        """One IoT event (a direct invocation, a DLQ replay): its report, or its error raised."""
        [answer] = self.ingest_batch([event])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def ingest_batch(self, events: Sequence[Mapping[str, Any]]) -> list[StatusReport | Exception]:
        """Every event of a queue batch: per event, its `StatusReport` or the
        exception that kept it from being applied (never raised: one report's
        fault is its own). Transient failures are tried again, for the
        reports that had them only, before they are answered."""
        answers: dict[int, StatusReport | Exception] = {}
        pending: dict[int, OTAStatus] = {}
        for index, event in enumerate(events):
            try:
                inbound = InboundEvent.parse(event)
                pending[index] = parse_status(str(inbound.topic), inbound.payload)
            except Exception as exc:  # a bug on one input fails that input alone
                answers[index] = exc

        def attempt() -> dict[int, OTAStatus]:
            nonlocal pending
            results = self.apply_batch(list(pending.values()))
            for index, result in zip(list(pending), results, strict=True):
                answers[index] = result
            pending = {
                index: status
                for (index, status), result in zip(pending.items(), results, strict=True)
                if isinstance(result, TransientError)
            }
            return pending

        if pending:
            kwargs: dict[str, Any] = {} if self._sleep is None else {"sleep": self._sleep}
            Retrying(
                stop=stop_after_attempt(TRANSIENT_ATTEMPTS),
                wait=wait_exponential(multiplier=self._retry_wait_s, max=5),
                retry=retry_if_result(bool),
                retry_error_callback=lambda _state: None,
                **kwargs,
            )(attempt)
        return [answers[index] for index in range(len(events))]

    # -- decoded reports -----------------------------------------------------------

    def apply(self, status: OTAStatus) -> StatusReport:
        """One decoded report; its error raises."""
        [answer] = self.apply_batch([status])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def apply_batch(self, statuses: Sequence[OTAStatus]) -> list[StatusReport | V2CError]:
        """Per report, in the order given, its `StatusReport` or its error:
        read once, decide, write in chunks, react once per campaign."""
        answers: dict[int, StatusReport | V2CError] = {}
        keys: list[UpdateKey] = [(s.vehicle_id, s.update_id) for s in statuses]
        read = self._d.updates.find_reported(keys)
        reports: defaultdict[UpdateKey, list[Report]] = defaultdict(list)
        for index, (status, key) in enumerate(zip(statuses, keys, strict=True)):
            if key in read.unread:
                answers[index] = read.unread[key]
                continue
            update = read.found.get(key)
            try:
                if is_unverified(status):
                    if update is not None and self._signed_by_us(
                        update, status.notification_sha256
                    ):
                        reports[key].append(Report(index, status, confirmed_rejection=True))
                    else:
                        answers[index] = self._unverified(status, update)
                elif update is None:
                    answers[index] = NotFound(
                        f"no update {status.update_id!r} for vehicle {status.vehicle_id}"
                    )
                else:
                    reports[key].append(Report(index, status))
            except TransientError as exc:
                answers[index] = exc
        recorded = self._recorder.record(read.found, reports)
        for key, error in recorded.failed.items():
            for report in reports[key]:
                answers[report.index] = error
        for decided in recorded.done.values():
            for step in decided.folded.steps:
                answers[step.report.index] = _answer(step)
        self._count(list(recorded.done.values()))
        for decided, error in self._after(list(recorded.done.values())):
            for step in decided.folded.steps:
                answers[step.report.index] = error
        self._cancel_again([d for d in recorded.done.values() if missed_the_cancel(d.folded)])
        return [answers[index] for index in range(len(statuses))]

    @staticmethod
    def _count(done: Sequence[Decided]) -> None:
        """The written records' metrics: updates that ended, and the signature
        failures among the reports applied (a confirmed rejection included); a
        report answered as a duplicate or stale counts nothing, so a
        redelivery is never counted twice."""
        records_written((d.before, d.after) for d in done if d.folded.changed)
        reasons = [
            reason
            for decided in done
            for step in decided.folded.steps
            if step.transition.outcome is Outcome.APPLIED
            and (reason := signature_reason(step.report.status)) is not None
        ]
        if reasons:
            signature_failures(reasons)

    def _cancel_again(self, missed: Sequence[Decided]) -> None:
        """Send the cancel again to each vehicle that reported work on an
        update the cloud stopped (ADR 0011's reconciliation). One per-vehicle
        command per update, the same id every time, so the vehicle acts once
        however many of its reports come back; a failure to send waits for the
        vehicle's next report."""
        for decided in missed:
            update = decided.after
            timed_out = update.state is UpdateState.TIMED_OUT
            command = cancel_update(
                campaign_id=update.campaign_id,
                update_id=update.update_id,
                # a timeout's own command again (same id: the vehicle acts once)
                reason=TIMEOUT_CANCEL_REASON if timed_out else f"cancelled: {update.reason}"[:200],
                now_ms=int(self._d.clock() * 1000),
                vehicle_id=update.vehicle_id,
            )
            try:
                self._d.commands.send(command, [CommandTarget(update.vehicle_id, update.region)])
            except TransientError as exc:
                logger.warning(
                    "cancel not sent again",
                    extra={"vehicle_id": update.vehicle_id, "error": str(exc)},
                )

    # -- reports about notifications the vehicle could not verify -------------

    def _unverified(self, status: OTAStatus, update: VehicleUpdate | None) -> StatusReport:
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
        """Alert, audit and count; the claimed ids are data, never keys to act on.
        Counted once the audit event is out: a publish that fails raises a
        TransientError, the report comes back, and would otherwise count twice."""
        known = update is not None
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
        UNVERIFIED_NOTIFICATIONS.labels("known_update" if known else "unknown_update").inc()
        signature_failures([signature_reason(status) or UNVERIFIED_REASON])

    # -- consequences outside the records ----------------------------------------

    def _after(self, decided: list[Decided]) -> list[tuple[Decided, TransientError]]:
        """What follows the writes, once: the registry's installed version and
        rollback bookkeeping per record that ended, then per campaign the
        rollback's end and the campaign's reaction. Returns the records whose
        consequences failed transiently: their reports are answered with that
        error, so they come back, as duplicates that make the reaction due again."""
        failed: list[tuple[Decided, TransientError]] = []
        reacting: defaultdict[str, list[Decided]] = defaultdict(list)
        rolling_back: defaultdict[str, list[Decided]] = defaultdict(list)
        ended = [
            record
            for record in decided
            if record.after.state in TERMINAL
            and (record.folded.changed or record.folded.repeats_the_end)
        ]
        try:
            self._record_installed(ended)
        except TransientError as exc:
            return [(record, exc) for record in ended]
        for record in ended:
            folded, after = record.folded, record.after
            try:
                self._record_end(after, rolling_back, record)
            except TransientError as exc:
                failed.append((record, exc))
                continue
            if (
                after.kind is UpdateKind.CAMPAIGN
                and after.campaign_id
                and (folded.affects_rates or folded.finished or folded.repeats_the_end)
            ):
                reacting[after.campaign_id].append(record)
        failed += self._per_campaign(rolling_back, self._campaigns.rollbacks.finish_if_done)
        completed = {
            campaign_id: [r for r in records if r.after.state is UpdateState.COMPLETED]
            for campaign_id, records in reacting.items()
        }
        completed = {campaign_id: records for campaign_id, records in completed.items() if records}
        # Before the reaction: an update that completed while its campaign
        # rolls back gets its rollback (`CampaignService.on_completed`).
        failed += self._per_campaign(
            completed,
            lambda campaign_id: self._campaigns.on_completed(
                campaign_id, [record.after for record in completed[campaign_id]]
            ),
        )
        failed += self._per_campaign(reacting, self._campaigns.on_outcome)
        return failed

    def _per_campaign(
        self, records: Mapping[str, list[Decided]], react: Callable[[str], object]
    ) -> Iterable[tuple[Decided, TransientError]]:
        for campaign_id, about in sorted(records.items()):
            try:
                react(campaign_id)
            except TransientError as exc:
                yield from ((record, exc) for record in about)
            except V2CError as exc:  # the reports are applied: a DLQ record would be a lie
                logger.warning(
                    "campaign reaction refused",
                    extra={"campaign_id": campaign_id, "error": str(exc)},
                )

    def _record_installed(self, ended: Sequence[Decided]) -> None:
        """The registry's installed version of every vehicle whose update
        ended here, in one call for the batch (one fleet-index delta per
        model, not one per report)."""
        versions: dict[str, str] = {}
        for record in ended:
            after = record.after
            if after.installed_version:
                versions[after.vehicle_id] = after.installed_version
            elif after.state is UpdateState.COMPLETED:
                versions[after.vehicle_id] = after.to_version
        if versions:
            self._d.fleet.set_installed_versions(versions)

    def _record_end(
        self,
        after: VehicleUpdate,
        rolling_back: defaultdict[str, list[Decided]],
        record: Decided,
    ) -> None:
        """A finished rollback's bookkeeping."""
        if after.kind is UpdateKind.ROLLBACK:
            campaign_id = self._finish_rollback(after)
            if campaign_id:
                rolling_back[campaign_id].append(record)

    def _finish_rollback(self, rollback: VehicleUpdate) -> str:
        """Record how a rollback ended and revert the update it undid; the
        campaign whose rollback may now be over ("" for none)."""
        finished_ms = rollback.completed_at_ms or int(self._d.clock() * 1000)
        self._d.rollbacks.finish(
            rollback.vehicle_id, rollback.update_id, rollback.state.value, finished_ms
        )
        if rollback.state is not UpdateState.COMPLETED or not rollback.reverts_update_id:
            return ""
        original = self._d.updates.find(rollback.vehicle_id, rollback.reverts_update_id)
        if original is None or not original.campaign_id:
            return ""
        # A record that keeps changing under a revert is left to its writers.
        with contextlib.suppress(Conflict):
            self._campaigns.commands.apply(original, Command.REVERT, reason="campaign rollback")
        return original.campaign_id
