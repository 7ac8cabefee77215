"""How the agent speaks: every report, and the moves that end in one from any phase.

`report` is the one place sequences are assigned, so numbering per
(vehicle, update) is strictly increasing by construction and survives
restarts with the memory. `end`, `fail` and `defer` are transitions every
phase can take (a failure while downloading or installing, a deferral at
accept or at install time), kept here so the phase modules import this one
and never each other in a circle.
"""

from __future__ import annotations

from typing import Final

from v2c.contract.notification import signed_part_sha256
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus, OTAUpdateAvailable
from v2c.vehicle_sim.ota.agent.checks import Stage, Verdict
from v2c.vehicle_sim.ota.agent.effects import (
    DiscardPackage,
    Reason,
    Report,
    ScheduleTick,
    State,
)
from v2c.vehicle_sim.ota.agent.memory import Phase
from v2c.vehicle_sim.ota.agent.reports import (
    clip,
    duration_ms,
    joined,
    stamp,
    stamp_unverified,
)
from v2c.vehicle_sim.ota.agent.state import AgentState, require_active, running_version

S = OTAStatus
NO_REASON: Final[Reason] = S.REASON_UNSPECIFIED
MAX_CLAIMED_ID: Final = 128  # ids copied from an unverified manifest into a report


def end(
    st: AgentState,
    state: State,
    reason: Reason = NO_REASON,
    detail: str = "",
    *,
    installed_version: str = "",
    attempts: int = 0,
    progress: int = 0,
) -> None:
    """The terminal report of the active update, with its durations and
    the version the vehicle runs; the update stops being active. A cancel
    that came too late (`late_command`) is said here, after the outcome."""
    a = require_active(st)
    report_active(
        st,
        state,
        reason=reason,
        detail=joined(detail, a.late_command),
        attempts=attempts,
        progress=progress,
        installed_version=installed_version or running_version(st),
        install_duration_ms=duration_ms(a.install_started_ms, st.now),
        total_duration_ms=duration_ms(a.received_at_ms, st.now),
    )
    st.memory.touch(a.update_id).outcome = S.State.Name(state)
    st.active = None


def report_active(
    st: AgentState,
    state: State,
    *,
    reason: Reason = NO_REASON,
    detail: str = "",
    progress: int = 0,
    retry_after_s: int = 0,
    attempts: int = 0,
    installed_version: str = "",
    install_duration_ms: int = 0,
    total_duration_ms: int = 0,
) -> None:
    a = require_active(st)
    report(
        st,
        a.update_id,
        OTAStatus(
            campaign_id=a.campaign_id,
            state=state,
            reason=reason,
            error_detail=clip(detail),
            progress_percent=progress,
            bytes_downloaded=a.bytes_downloaded,
            retry_after_sec=retry_after_s,
            attempts=attempts,
            download_duration_ms=duration_ms(a.download_started_ms, a.download_finished_ms),
            install_duration_ms=install_duration_ms,
            total_duration_ms=total_duration_ms,
            installed_version=installed_version,
        ),
        a.correlation_id,
    )


def reject(
    st: AgentState, update_id: str, campaign_id: str, correlation: str, verdict: Verdict
) -> None:
    """REJECTED for an update that never became active."""
    report(
        st,
        update_id,
        OTAStatus(
            campaign_id=campaign_id,
            state=S.REJECTED,
            reason=verdict.reason,
            error_detail=clip(verdict.detail),
            installed_version=running_version(st),
        ),
        correlation,
    )
    memo = st.memory.touch(update_id, keep=st.active_update_id)
    memo.outcome = S.State.Name(S.REJECTED)


def report_unverified(
    st: AgentState,
    notification: OTAUpdateAvailable,
    claimed: OTAManifest,
    correlation: str,
    verdict: Verdict,
) -> None:
    """REJECTED SIGNATURE_VERIFICATION_FAILED for a notification that failed
    verification, flagged and numbered apart (`reports.stamp_unverified`):
    it names the update the unverified manifest claims and touches nothing
    of that update (memo, sequence, outcome), so a forged message reusing
    a real id cannot end, renumber or suppress the real update."""
    st.memory.unverified_reports += 1
    st.dirty = True
    status = OTAStatus(
        vehicle_id=st.vehicle_id,
        update_id=claimed.update_id[:MAX_CLAIMED_ID],
        campaign_id=claimed.campaign_id[:MAX_CLAIMED_ID],
        state=S.REJECTED,
        reason=S.SIGNATURE_VERIFICATION_FAILED,
        error_detail=clip(verdict.detail),
        installed_version=running_version(st),
        notification_sha256=signed_part_sha256(
            notification.manifest, notification.signature, notification.key_id
        ),
    )
    status.header.correlation_id = correlation
    stamp_unverified(status, st.vehicle_id, st.memory.unverified_reports, st.now)
    st.out.append(Report(status))


def rereport(st: AgentState, update_id: str) -> None:
    """The last report again, under the next sequence."""
    memo = st.memory.memo(update_id)
    status = memo.last_status() if memo is not None else None
    if status is not None:
        report(st, update_id, status, status.header.correlation_id)


def report(st: AgentState, update_id: str, status: OTAStatus, correlation: str) -> None:
    memo = st.memory.touch(update_id, keep=st.active_update_id)
    memo.sequence += 1
    status.vehicle_id = st.vehicle_id
    status.update_id = update_id
    status.header.correlation_id = correlation
    stamp(status, st.vehicle_id, memo.sequence, st.now)
    memo.last_report = status.SerializeToString()
    memo.delivered = False
    st.out.append(Report(status))


def fail(st: AgentState, reason: Reason, detail: str, *, attempts: int = 0) -> None:
    a = require_active(st)
    if a.download_started_ms:
        st.out.append(DiscardPackage(a.update_id))
    end(st, S.FAILED, reason, detail, attempts=attempts)


def defer(st: AgentState, verdict: Verdict, stage: Stage) -> None:
    a = require_active(st)
    a.phase, a.stage, a.deferred_reason = Phase.DEFERRED, stage, verdict.reason
    a.retry_at_ms = st.now + verdict.retry_after_s * 1000
    report_active(
        st,
        S.DEFERRED,
        reason=verdict.reason,
        detail=verdict.detail,
        retry_after_s=verdict.retry_after_s,
        progress=100 if stage is Stage.INSTALL else 0,
    )
    st.out.append(ScheduleTick(a.retry_at_ms))
