"""Offers and what changes them: a notification, a restart, time, conditions, a cancel.

The first phase of an update (verification, the accept/reject/defer checks,
ACCEPTED) and the events that can arrive in any phase: `start` after a
process start, `tick` for deadlines and retry times, `conditions_changed`
for a deferred update, `cancel` from the cloud (`commands` routes a signed
cancel or rollback command here).
"""

from __future__ import annotations

import hashlib
from typing import Final

from google.protobuf.message import DecodeError

from v2c.contract.errors import CodecError
from v2c.contract.ids import id_text
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus, OTAUpdateAvailable
from v2c.vehicle_sim.ota.agent import fetch, install, reporting
from v2c.vehicle_sim.ota.agent.checks import (
    Decision,
    Stage,
    Verdict,
    authenticate,
    check_manifest,
    check_preconditions,
    judge,
    reject,
)
from v2c.vehicle_sim.ota.agent.effects import (
    BootResult,
    CancelDownload,
    DiscardPackage,
    Dropped,
    Report,
    ScheduleTick,
)
from v2c.vehicle_sim.ota.agent.memory import (
    BOOT_PHASES,
    CANCELLABLE,
    CANCELLED,
    DOWNLOAD_PHASES,
    ActiveUpdate,
    Phase,
)
from v2c.vehicle_sim.ota.agent.state import AgentState, require_active
from v2c.vehicle_sim.ota.agent.vehicle_state import VehicleConditions

S = OTAStatus
# Outcomes a new notification for the same update re-reports instead of redoing.
SETTLED: Final = frozenset({S.State.Name(S.COMPLETED), S.State.Name(S.ROLLED_BACK)})


def fingerprint(notification: OTAUpdateAvailable) -> str:
    """One delivery's identity: the header's message id and the content."""
    return hashlib.sha256(notification.SerializeToString(deterministic=True)).hexdigest()[:32]


def start(st: AgentState, conditions: VehicleConditions, boot: BootResult) -> None:
    st.conditions = conditions
    recent = st.memory.most_recent()
    if recent is not None and not recent[1].delivered:
        status = recent[1].last_status()
        if status is not None:
            st.out.append(Report(status, redelivery=True))
    a = st.active
    if a is None:
        return
    if a.phase in BOOT_PHASES:
        install.after_boot(st, boot)
    elif a.phase in DOWNLOAD_PHASES:
        fetch.request_download(st, a, resume=True)
    elif a.phase is Phase.DOWNLOADED:
        install.try_install(st)
    else:  # DEFERRED
        retry_deferred(st, timer=st.now >= a.retry_at_ms)
        scheduled = any(isinstance(effect, ScheduleTick) for effect in st.out)
        if st.active is a and a.phase is Phase.DEFERRED and not scheduled:
            st.out.append(ScheduleTick(a.retry_at_ms))


def notified(
    st: AgentState, message: bytes | OTAUpdateAvailable, conditions: VehicleConditions
) -> None:
    st.conditions = conditions
    notification = _parse(st, message)
    if notification is None:
        return
    seen = fingerprint(notification)
    if st.memory.seen(seen):
        return  # the same delivery again: nothing at all
    peek = _peek(st, notification)
    if peek is None:
        st.memory.remember_unverified(seen)
        st.dirty = True
        return
    correlation = _correlation(notification)
    manifest = authenticate(notification, st.trusted, st.now)
    if isinstance(manifest, Verdict):
        # Nothing of an unverified message reaches the update it names.
        st.memory.remember_unverified(seen)
        reporting.report_unverified(st, notification, peek, correlation, manifest)
        return
    st.memory.remember(seen)
    st.dirty = True
    update_id = manifest.update_id
    memo = st.memory.memo(update_id)
    active = st.active
    if active is not None and active.update_id == update_id:
        _renotified(st, active, notification)
        return
    if memo is not None and memo.outcome in SETTLED:
        reporting.rereport(st, update_id)
        return
    if memo is not None and memo.outcome == CANCELLED:
        # The cancel overtook its notification (both queued in the session):
        # the answer is the cancel's, and the update stays cancelled.
        cancelled = reject(S.CAMPAIGN_CANCELLED, f"update {update_id} was cancelled before")
        reporting.reject(st, update_id, manifest.campaign_id, correlation, cancelled)
        st.memory.touch(update_id, keep=st.active_update_id).outcome = CANCELLED
        return
    if active is not None:
        busy = reject(S.UPDATE_IN_PROGRESS, f"update {active.update_id} is in progress")
        reporting.reject(st, update_id, manifest.campaign_id, correlation, busy)
        return
    verdict = judge(
        manifest,
        conditions,
        st.policy,
        st.now,
        rollback_floor=st.memory.rollback_floor,
    )
    if verdict.decision is Decision.REJECT:
        reporting.reject(st, update_id, manifest.campaign_id, correlation, verdict)
        return
    st.active = ActiveUpdate(
        update_id=update_id,
        manifest=notification.manifest,
        download_url=notification.download_url,
        correlation_id=correlation,
        received_at_ms=st.now,
        from_version=conditions.installed_version,
    )
    st.memory.touch(update_id).outcome = ""
    if verdict.decision is Decision.DEFER:
        reporting.defer(st, verdict, Stage.ACCEPT)
    else:
        accept(st)


def _renotified(st: AgentState, a: ActiveUpdate, notification: OTAUpdateAvailable) -> None:
    """The active update notified again: re-report where it stands. The
    download URL is outside the signature by design (it expires and is
    re-issued), so a fresh URL for the same signed manifest is taken, and
    a download under way restarts from its partial file with it."""
    reporting.rereport(st, a.update_id)
    url = notification.download_url
    if notification.manifest == a.manifest and url and url != a.download_url:
        a.download_url = url
        if a.phase in DOWNLOAD_PHASES:
            fetch.request_download(st, a, resume=True)


def _parse(st: AgentState, message: bytes | OTAUpdateAvailable) -> OTAUpdateAvailable | None:
    if isinstance(message, OTAUpdateAvailable):
        return message
    try:
        return OTAUpdateAvailable.FromString(message)
    except DecodeError:
        st.out.append(Dropped("the payload is not an OTAUpdateAvailable"))
        return None


def _peek(st: AgentState, notification: OTAUpdateAvailable) -> OTAManifest | None:
    """The *unverified* manifest, only to address an unverified report."""
    try:
        peek = OTAManifest.FromString(notification.manifest)
    except DecodeError:
        peek = None
    if peek is None or not peek.update_id:
        st.out.append(Dropped("the manifest names no update id; nothing to report to"))
        return None
    return peek


def _correlation(notification: OTAUpdateAvailable) -> str:
    try:
        return id_text(notification.header.message_id)
    except CodecError:
        return ""


def tick(st: AgentState, conditions: VehicleConditions | None) -> None:
    if conditions is not None and conditions != st.conditions:
        conditions_changed(st, conditions)
    a = st.active
    if a is None:
        return
    if a.phase is Phase.DEFERRED and st.now >= a.retry_at_ms:
        retry_deferred(st, timer=True)
    elif a.phase in DOWNLOAD_PHASES and st.now >= fetch.download_deadline(st, a):
        st.out.append(CancelDownload(a.update_id))
        reporting.fail(
            st,
            S.DOWNLOAD_TIMEOUT,
            f"not downloaded within {st.policy.download_timeout_s} s "
            f"({a.bytes_downloaded} of {a.parsed.size_bytes} bytes)",
        )


def cancel(st: AgentState, update_id: str, detail: str = "cancelled by the cloud") -> None:
    """Stop `update_id` before its installation, or remember it is cancelled
    so its notification, arriving later, is refused; `detail` goes into the
    REJECTED report. Once installing it is too late, as the cloud's own rule
    says, and after COMPLETED or ROLLED_BACK there is nothing to stop."""
    a = st.active
    if a is not None and a.update_id == update_id:
        if a.phase not in CANCELLABLE:
            return
        if a.phase in DOWNLOAD_PHASES:
            st.out.append(CancelDownload(update_id))
        if a.download_started_ms:
            st.out.append(DiscardPackage(update_id))
        reporting.end(st, S.REJECTED, S.CAMPAIGN_CANCELLED, detail)
        st.memory.touch(update_id).outcome = CANCELLED
        return
    memo = st.memory.memo(update_id)
    if memo is None or memo.outcome in ("", S.State.Name(S.REJECTED), S.State.Name(S.FAILED)):
        # A cancel that overtook its notification: drop the notification later.
        st.memory.touch(update_id, keep=st.active_update_id).outcome = CANCELLED
        st.dirty = True


def conditions_changed(st: AgentState, conditions: VehicleConditions) -> None:
    st.conditions = conditions
    if st.active is not None and st.active.phase is Phase.DEFERRED:
        retry_deferred(st, timer=False)


def retry_deferred(st: AgentState, *, timer: bool) -> None:
    a, conditions = require_active(st), st.conditions
    if conditions is None:
        return
    if a.stage is Stage.ACCEPT:
        verdict = check_manifest(
            a.parsed, conditions, st.now, rollback_floor=st.memory.rollback_floor
        )
        if verdict.accepted:
            verdict = check_preconditions(a.parsed, conditions, st.policy, Stage.ACCEPT)
    else:
        verdict = check_preconditions(a.parsed, conditions, st.policy, Stage.INSTALL)
    if verdict.decision is Decision.ACCEPT:
        if a.stage is Stage.ACCEPT:
            accept(st)
        else:
            install.start_install(st, 1)
    elif verdict.decision is Decision.REJECT:
        if a.stage is Stage.ACCEPT:
            reporting.end(st, S.REJECTED, verdict.reason, verdict.detail)
        else:
            reporting.fail(st, verdict.reason, verdict.detail)
    elif timer or verdict.reason != a.deferred_reason:
        reporting.defer(st, verdict, a.stage)


def accept(st: AgentState) -> None:
    a = require_active(st)
    reporting.report_active(st, S.ACCEPTED)
    a.phase, a.reported_percent, a.download_started_ms = Phase.DOWNLOADING, 0, st.now
    reporting.report_active(st, S.DOWNLOADING, progress=0)
    fetch.request_download(st, a, resume=False)
