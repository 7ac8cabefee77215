"""The update agent's state, persistence and report numbering.

`AgentCore` owns what the machine (`machine.py`) moves: the active update,
the bounded memory and the effect list of the event being handled. Every
report goes through `_report`, the one place sequences are assigned, so
numbering per (vehicle, update) is strictly increasing by construction and
survives restarts with the memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from v2c.contract.keyset import TrustedKeySet
from v2c.contract.notification import signed_part_sha256
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus, OTAUpdateAvailable
from v2c.vehicle_sim.ota.checks import AgentPolicy, Verdict
from v2c.vehicle_sim.ota.effects import Effect, Reason, Report, SaveState, State
from v2c.vehicle_sim.ota.memory import ActiveUpdate, Memory, Phase, load_snapshot, snapshot
from v2c.vehicle_sim.ota.reports import clip, duration_ms, stamp, stamp_unverified
from v2c.vehicle_sim.ota.vehicle_state import VehicleConditions

S = OTAStatus
NO_REASON: Final[Reason] = S.REASON_UNSPECIFIED
MAX_CLAIMED_ID: Final = 128  # ids copied from an unverified manifest into a report


class AgentCore:
    def __init__(
        self, vehicle_id: str, trusted: TrustedKeySet, *, policy: AgentPolicy | None = None
    ) -> None:
        self.vehicle_id = vehicle_id
        self.trusted = trusted  # replace it when the vehicle receives a rotated key set
        self.policy = policy or AgentPolicy()
        self._memory = self._new_memory()
        self._active: ActiveUpdate | None = None
        self._conditions: VehicleConditions | None = None
        self._out: list[Effect] = []
        self._dirty = False
        self._now = 0

    def _new_memory(self) -> Memory:
        p = self.policy
        return Memory(p.remembered_updates, p.remembered_notifications, p.remembered_unverified)

    # -- persistence ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything that must survive a power cut, as a JSON-ready dict."""
        return snapshot(self._memory, self._active)

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a snapshot (then call `on_start`). Raises `ValidationFailed`
        for a snapshot that does not read, leaving the agent unchanged."""
        memory = self._new_memory()
        active = load_snapshot(dict(state), memory)
        self._memory, self._active = memory, active

    # -- introspection -------------------------------------------------------

    @property
    def active_update_id(self) -> str | None:
        return self._active.update_id if self._active is not None else None

    @property
    def phase(self) -> Phase | None:
        return self._active.phase if self._active is not None else None

    @property
    def conditions(self) -> VehicleConditions | None:
        return self._conditions

    @property
    def rollback_floor(self) -> str:
        """The highest anti-rollback floor of a completed update."""
        return self._memory.rollback_floor

    def last_sequence(self, update_id: str) -> int:
        memo = self._memory.memo(update_id)
        return memo.sequence if memo is not None else 0

    def on_report_delivered(
        self, update_id: str, sequence: int, *, unverified: bool = False
    ) -> None:
        """The broker acknowledged a report (PUBCOMP). Optional: it only spares
        a harmless re-send after the next restart. Persisted with the next
        `SaveState`, so it produces no effect of its own. A report about an
        unverified notification (`unverified`, its `notification_unverified`)
        is numbered apart and confirms nothing about the update it names."""
        if unverified:
            return
        memo = self._memory.memo(update_id)
        if memo is not None and memo.sequence == sequence:
            memo.delivered = True

    # -- handling one event --------------------------------------------------

    def _handle(self, now_ms: int, action: Callable[..., None], *args: Any) -> list[Effect]:
        self._out, self._dirty, self._now = [], False, now_ms
        action(*args)
        if not self._out and not self._dirty:
            return []
        return [SaveState(self.snapshot()), *self._out]

    def _current(self, update_id: str, phases: frozenset[Phase]) -> ActiveUpdate | None:
        """The active update if a port's callback is for it and expected now;
        a late callback (a cancelled download, a stale step) is ignored."""
        a = self._active
        if a is None or a.update_id != update_id or a.phase not in phases:
            return None
        return a

    def _require_active(self) -> ActiveUpdate:
        if self._active is None:  # pragma: no cover - a bug in the machine
            raise AssertionError("no active update")
        return self._active

    def _running_version(self) -> str:
        if self._conditions is not None:
            return self._conditions.installed_version
        return self._active.from_version if self._active is not None else ""

    # -- reports -------------------------------------------------------------

    def _end(
        self,
        state: State,
        reason: Reason = NO_REASON,
        detail: str = "",
        *,
        installed_version: str = "",
        attempts: int = 0,
        progress: int = 0,
    ) -> None:
        """The terminal report of the active update, with its durations and
        the version the vehicle runs; the update stops being active."""
        a = self._require_active()
        self._report_active(
            state,
            reason=reason,
            detail=detail,
            attempts=attempts,
            progress=progress,
            installed_version=installed_version or self._running_version(),
            install_duration_ms=duration_ms(a.install_started_ms, self._now),
            total_duration_ms=duration_ms(a.received_at_ms, self._now),
        )
        self._memory.touch(a.update_id).outcome = S.State.Name(state)
        self._active = None

    def _report_active(
        self,
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
        a = self._require_active()
        self._report(
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

    def _reject(self, update_id: str, campaign_id: str, correlation: str, verdict: Verdict) -> None:
        """REJECTED for an update that never became active."""
        self._report(
            update_id,
            OTAStatus(
                campaign_id=campaign_id,
                state=S.REJECTED,
                reason=verdict.reason,
                error_detail=clip(verdict.detail),
                installed_version=self._running_version(),
            ),
            correlation,
        )
        memo = self._memory.touch(update_id, keep=self.active_update_id)
        memo.outcome = S.State.Name(S.REJECTED)

    def _report_unverified(
        self,
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
        self._memory.unverified_reports += 1
        self._dirty = True
        status = OTAStatus(
            vehicle_id=self.vehicle_id,
            update_id=claimed.update_id[:MAX_CLAIMED_ID],
            campaign_id=claimed.campaign_id[:MAX_CLAIMED_ID],
            state=S.REJECTED,
            reason=S.SIGNATURE_VERIFICATION_FAILED,
            error_detail=clip(verdict.detail),
            installed_version=self._running_version(),
            notification_sha256=signed_part_sha256(
                notification.manifest, notification.signature, notification.key_id
            ),
        )
        status.header.correlation_id = correlation
        stamp_unverified(status, self.vehicle_id, self._memory.unverified_reports, self._now)
        self._out.append(Report(status))

    def _rereport(self, update_id: str) -> None:
        """The last report again, under the next sequence."""
        memo = self._memory.memo(update_id)
        status = memo.last_status() if memo is not None else None
        if status is not None:
            self._report(update_id, status, status.header.correlation_id)

    def _report(self, update_id: str, status: OTAStatus, correlation: str) -> None:
        memo = self._memory.touch(update_id, keep=self.active_update_id)
        memo.sequence += 1
        status.vehicle_id = self.vehicle_id
        status.update_id = update_id
        status.header.correlation_id = correlation
        stamp(status, self.vehicle_id, memo.sequence, self._now)
        memo.last_report = status.SerializeToString()
        memo.delivered = False
        self._out.append(Report(status))
