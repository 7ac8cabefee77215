"""The update agent's transitions: one private method per thing that can happen.

`UpdateAgent` (agent.py) is the public face; this class holds the moves
between phases, each of which reports through `AgentCore`. Kept apart so
that each module stays small enough to read in one go.
"""

from __future__ import annotations

import hashlib
from typing import Final

from google.protobuf.message import DecodeError

from v2c.contract.errors import CodecError, ValidationFailed
from v2c.contract.ids import id_text
from v2c.contract.semver import SemVer
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus, OTAUpdateAvailable
from v2c.vehicle_sim.ota.checks import (
    Decision,
    Stage,
    Verdict,
    authenticate,
    check_manifest,
    check_preconditions,
    judge,
    reject,
)
from v2c.vehicle_sim.ota.core import AgentCore
from v2c.vehicle_sim.ota.effects import (
    REBOOTING_PERCENT,
    VERIFYING_PERCENT,
    BootResult,
    CancelDownload,
    CommitUpdate,
    DiscardPackage,
    Dropped,
    InstallStep,
    Reason,
    Reboot,
    Report,
    RollBack,
    RunVerification,
    ScheduleTick,
    StartDownload,
    StartInstall,
)
from v2c.vehicle_sim.ota.memory import (
    BOOT_PHASES,
    CANCELLABLE,
    CANCELLED,
    DOWNLOAD_PHASES,
    ActiveUpdate,
    Phase,
)
from v2c.vehicle_sim.ota.vehicle_state import VehicleConditions

S = OTAStatus
# Outcomes a new notification for the same update re-reports instead of redoing.
SETTLED: Final = frozenset({S.State.Name(S.COMPLETED), S.State.Name(S.ROLLED_BACK)})
INSTALLING: Final = frozenset({Phase.INSTALLING})


def _same_version(a: str, b: str) -> bool:
    try:
        return SemVer.parse(a) == SemVer.parse(b)
    except ValidationFailed:
        return a == b


def fingerprint(notification: OTAUpdateAvailable) -> str:
    """One delivery's identity: the header's message id and the content."""
    return hashlib.sha256(notification.SerializeToString(deterministic=True)).hexdigest()[:32]


class Machine(AgentCore):
    def _start(self, conditions: VehicleConditions, boot: BootResult) -> None:
        self._conditions = conditions
        recent = self._memory.most_recent()
        if recent is not None and not recent[1].delivered:
            status = recent[1].last_status()
            if status is not None:
                self._out.append(Report(status, redelivery=True))
        a = self._active
        if a is None:
            return
        if a.phase in BOOT_PHASES:
            self._after_boot(boot)
        elif a.phase in DOWNLOAD_PHASES:
            self._request_download(a, resume=True)
        elif a.phase is Phase.DOWNLOADED:
            self._try_install()
        else:  # DEFERRED
            self._retry_deferred(timer=self._now >= a.retry_at_ms)
            scheduled = any(isinstance(effect, ScheduleTick) for effect in self._out)
            if self._active is a and a.phase is Phase.DEFERRED and not scheduled:
                self._out.append(ScheduleTick(a.retry_at_ms))

    def _notification(
        self, message: bytes | OTAUpdateAvailable, conditions: VehicleConditions
    ) -> None:
        self._conditions = conditions
        notification = self._parse(message)
        if notification is None:
            return
        seen = fingerprint(notification)
        if self._memory.seen(seen):
            return  # the same delivery again: nothing at all
        peek = self._peek(notification)
        if peek is None:
            self._memory.remember_unverified(seen)
            self._dirty = True
            return
        correlation = self._correlation(notification)
        manifest = authenticate(notification, self.trusted, self._now)
        if isinstance(manifest, Verdict):
            # Nothing of an unverified message reaches the update it names.
            self._memory.remember_unverified(seen)
            self._report_unverified(notification, peek, correlation, manifest)
            return
        self._memory.remember(seen)
        self._dirty = True
        update_id = manifest.update_id
        memo = self._memory.memo(update_id)
        active = self._active
        if active is not None and active.update_id == update_id:
            self._renotified(active, notification)
            return
        if memo is not None and memo.outcome in SETTLED:
            self._rereport(update_id)
            return
        if memo is not None and memo.outcome == CANCELLED:
            self._out.append(Dropped(f"update {update_id} was cancelled"))
            return
        if active is not None:
            busy = reject(S.UPDATE_IN_PROGRESS, f"update {active.update_id} is in progress")
            self._reject(update_id, manifest.campaign_id, correlation, busy)
            return
        verdict = judge(
            manifest,
            conditions,
            self.policy,
            self._now,
            rollback_floor=self._memory.rollback_floor,
        )
        if verdict.decision is Decision.REJECT:
            self._reject(update_id, manifest.campaign_id, correlation, verdict)
            return
        self._active = ActiveUpdate(
            update_id=update_id,
            manifest=notification.manifest,
            download_url=notification.download_url,
            correlation_id=correlation,
            received_at_ms=self._now,
            from_version=conditions.installed_version,
        )
        self._memory.touch(update_id).outcome = ""
        if verdict.decision is Decision.DEFER:
            self._defer(verdict, Stage.ACCEPT)
        else:
            self._accept()

    def _renotified(self, a: ActiveUpdate, notification: OTAUpdateAvailable) -> None:
        """The active update notified again: re-report where it stands. The
        download URL is outside the signature by design (it expires and is
        re-issued), so a fresh URL for the same signed manifest is taken, and
        a download under way restarts from its partial file with it."""
        self._rereport(a.update_id)
        url = notification.download_url
        if notification.manifest == a.manifest and url and url != a.download_url:
            a.download_url = url
            if a.phase in DOWNLOAD_PHASES:
                self._request_download(a, resume=True)

    def _parse(self, message: bytes | OTAUpdateAvailable) -> OTAUpdateAvailable | None:
        if isinstance(message, OTAUpdateAvailable):
            return message
        try:
            return OTAUpdateAvailable.FromString(message)
        except DecodeError:
            self._out.append(Dropped("the payload is not an OTAUpdateAvailable"))
            return None

    def _peek(self, notification: OTAUpdateAvailable) -> OTAManifest | None:
        """The *unverified* manifest, only to address an unverified report."""
        try:
            peek = OTAManifest.FromString(notification.manifest)
        except DecodeError:
            peek = None
        if peek is None or not peek.update_id:
            self._out.append(Dropped("the manifest names no update id; nothing to report to"))
            return None
        return peek

    @staticmethod
    def _correlation(notification: OTAUpdateAvailable) -> str:
        try:
            return id_text(notification.header.message_id)
        except CodecError:
            return ""

    def _tick(self, conditions: VehicleConditions | None) -> None:
        if conditions is not None and conditions != self._conditions:
            self._conditions_changed(conditions)
        a = self._active
        if a is None:
            return
        if a.phase is Phase.DEFERRED and self._now >= a.retry_at_ms:
            self._retry_deferred(timer=True)
        elif a.phase in DOWNLOAD_PHASES and self._now >= self._download_deadline(a):
            self._out.append(CancelDownload(a.update_id))
            self._fail(
                S.DOWNLOAD_TIMEOUT,
                f"not downloaded within {self.policy.download_timeout_s} s "
                f"({a.bytes_downloaded} of {a.parsed.size_bytes} bytes)",
            )

    def _cancel(self, update_id: str) -> None:
        a = self._active
        if a is not None and a.update_id == update_id:
            if a.phase not in CANCELLABLE:
                return  # installing: too late, as the cloud's own rule says
            if a.phase in DOWNLOAD_PHASES:
                self._out.append(CancelDownload(update_id))
            if a.download_started_ms:
                self._out.append(DiscardPackage(update_id))
            self._end(S.REJECTED, S.CAMPAIGN_CANCELLED, "cancelled by the cloud")
            self._memory.touch(update_id).outcome = CANCELLED
            return
        memo = self._memory.memo(update_id)
        if memo is None or memo.outcome in ("", S.State.Name(S.REJECTED), S.State.Name(S.FAILED)):
            # A cancel that overtook its notification: drop the notification later.
            self._memory.touch(update_id, keep=self.active_update_id).outcome = CANCELLED
            self._dirty = True

    def _progress(self, update_id: str, bytes_downloaded: int) -> None:
        a = self._current(update_id, DOWNLOAD_PHASES)
        if a is None:
            return
        a.bytes_downloaded = self._clamp(a, bytes_downloaded)
        percent = a.percent()
        if a.phase is Phase.PAUSED:  # data flows again: the download resumed
            a.phase = Phase.DOWNLOADING
            a.reported_percent = percent
            self._report_active(S.DOWNLOADING, progress=percent)
            return
        step = self.policy.progress_step_percent
        if percent < a.reported_percent:  # the downloader restarted the file
            a.reported_percent = percent - percent % step
        if percent >= (a.reported_percent // step + 1) * step:
            a.reported_percent = percent
            self._report_active(S.DOWNLOADING, progress=percent)

    @staticmethod
    def _clamp(a: ActiveUpdate, bytes_downloaded: int) -> int:
        return max(0, min(bytes_downloaded, a.parsed.size_bytes))

    def _downloaded(
        self, update_id: str, failure: Reason | None, detail: str, attempts: int
    ) -> None:
        a = self._current(update_id, DOWNLOAD_PHASES)
        if a is None:
            return
        if failure is not None:
            self._fail(failure, detail, attempts=attempts)
            return
        a.bytes_downloaded = a.parsed.size_bytes
        a.download_finished_ms = self._now
        a.phase = Phase.DOWNLOADED
        self._report_active(S.DOWNLOADED, progress=100)
        self._try_install()

    def _accept(self) -> None:
        a = self._require_active()
        self._report_active(S.ACCEPTED)
        a.phase, a.reported_percent, a.download_started_ms = Phase.DOWNLOADING, 0, self._now
        self._report_active(S.DOWNLOADING, progress=0)
        self._request_download(a, resume=False)

    def _request_download(self, a: ActiveUpdate, *, resume: bool) -> None:
        if a.phase not in DOWNLOAD_PHASES:
            a.phase = Phase.DOWNLOADING
        if not a.download_started_ms:
            a.download_started_ms = self._now
        manifest = a.parsed
        self._out.append(
            StartDownload(
                a.update_id, a.download_url, manifest.size_bytes, manifest.checksum_sha256, resume
            )
        )
        self._out.append(ScheduleTick(self._download_deadline(a)))

    def _download_deadline(self, a: ActiveUpdate) -> int:
        return a.download_started_ms + self.policy.download_timeout_s * 1000

    def _retry_deferred(self, *, timer: bool) -> None:
        a, conditions = self._require_active(), self._conditions
        if conditions is None:
            return
        if a.stage is Stage.ACCEPT:
            verdict = check_manifest(
                a.parsed, conditions, self._now, rollback_floor=self._memory.rollback_floor
            )
            if verdict.accepted:
                verdict = check_preconditions(a.parsed, conditions, self.policy, Stage.ACCEPT)
        else:
            verdict = check_preconditions(a.parsed, conditions, self.policy, Stage.INSTALL)
        if verdict.decision is Decision.ACCEPT:
            if a.stage is Stage.ACCEPT:
                self._accept()
            else:
                self._start_install(1)
        elif verdict.decision is Decision.REJECT:
            if a.stage is Stage.ACCEPT:
                self._end(S.REJECTED, verdict.reason, verdict.detail)
            else:
                self._fail(verdict.reason, verdict.detail)
        elif timer or verdict.reason != a.deferred_reason:
            self._defer(verdict, a.stage)

    def _defer(self, verdict: Verdict, stage: Stage) -> None:
        a = self._require_active()
        a.phase, a.stage, a.deferred_reason = Phase.DEFERRED, stage, verdict.reason
        a.retry_at_ms = self._now + verdict.retry_after_s * 1000
        self._report_active(
            S.DEFERRED,
            reason=verdict.reason,
            detail=verdict.detail,
            retry_after_s=verdict.retry_after_s,
            progress=100 if stage is Stage.INSTALL else 0,
        )
        self._out.append(ScheduleTick(a.retry_at_ms))

    def _try_install(self) -> None:
        conditions = self._conditions
        if conditions is None:
            return
        a = self._require_active()
        verdict = check_preconditions(a.parsed, conditions, self.policy, Stage.INSTALL)
        if verdict.decision is Decision.ACCEPT:
            self._start_install(1)
        elif verdict.decision is Decision.DEFER:
            self._defer(verdict, Stage.INSTALL)
        else:
            self._fail(verdict.reason, verdict.detail)

    def _start_install(self, attempt: int) -> None:
        a = self._require_active()
        a.phase, a.install_attempts, a.reported_percent = Phase.INSTALLING, attempt, 0
        if not a.install_started_ms:
            a.install_started_ms = self._now
        self._report_active(S.INSTALLING, attempts=attempt)
        manifest = a.parsed
        self._out.append(
            StartInstall(
                a.update_id,
                manifest.version,
                manifest.size_bytes,
                manifest.checksum_sha256,
                attempt,
            )
        )

    def _after_boot(self, boot: BootResult) -> None:
        a = self._active
        if a is None or a.phase not in BOOT_PHASES:
            return
        target = a.parsed.version
        if a.phase is Phase.ROLLING_BACK:
            if boot.trial and not boot.fell_back:
                self._out.append(RollBack(a.update_id))  # the switch did not happen: again
            else:
                self._rolled_back(a.failure_reason, a.failure_detail, boot)
        elif boot.fell_back:
            self._rolled_back(
                S.BOOT_FAILURE,
                f"the new slot failed {boot.boot_attempts} boots; running {boot.running_version}",
                boot,
            )
        elif not _same_version(boot.running_version, target):
            if boot.trial:
                self._roll_back(
                    S.POST_INSTALL_VERIFICATION_FAILED,
                    f"the new slot runs {boot.running_version}, expected {target}",
                )
            elif a.phase is Phase.INSTALLING:
                self._restart_install()
            else:
                self._rolled_back(S.BOOT_FAILURE, "the bootloader did not try the new slot", boot)
        elif a.phase is Phase.COMMITTING:
            if boot.trial:
                self._out.append(CommitUpdate(a.update_id))  # the commit was lost: again
            else:
                self._complete()
        else:
            self._verify()

    def _verify(self) -> None:
        a = self._require_active()
        if a.phase is not Phase.VERIFYING:
            a.phase = Phase.VERIFYING
            self._report_active(S.VERIFYING, progress=VERIFYING_PERCENT)
        self._out.append(RunVerification(a.update_id, a.parsed.version))

    def _restart_install(self) -> None:
        a = self._require_active()
        if a.install_attempts >= self.policy.max_install_attempts:
            self._fail(
                S.FLASH_WRITE_FAILURE,
                f"the installation was interrupted {a.install_attempts} times",
                attempts=a.install_attempts,
            )
        else:
            self._start_install(a.install_attempts + 1)

    def _roll_back(self, reason: Reason, detail: str) -> None:
        a = self._require_active()
        a.phase, a.failure_reason, a.failure_detail = Phase.ROLLING_BACK, reason, detail
        self._out.append(RollBack(a.update_id))

    def _rolled_back(self, reason: Reason, detail: str, boot: BootResult) -> None:
        a = self._require_active()
        self._out.append(DiscardPackage(a.update_id))
        self._end(
            S.ROLLED_BACK,
            reason,
            detail,
            installed_version=boot.running_version,
            attempts=boot.boot_attempts,
        )

    def _complete(self) -> None:
        a = self._require_active()
        manifest = a.parsed
        floor = manifest.min_installed_version
        current = self._memory.rollback_floor
        if floor and (not current or SemVer.parse(floor) > SemVer.parse(current)):
            self._memory.rollback_floor = floor
        self._out.append(DiscardPackage(a.update_id))
        self._end(S.COMPLETED, installed_version=manifest.version, progress=100)

    def _fail(self, reason: Reason, detail: str, *, attempts: int = 0) -> None:
        a = self._require_active()
        if a.download_started_ms:
            self._out.append(DiscardPackage(a.update_id))
        self._end(S.FAILED, reason, detail, attempts=attempts)

    # -- reports -------------------------------------------------------------

    def _conditions_changed(self, conditions: VehicleConditions) -> None:
        self._conditions = conditions
        if self._active is not None and self._active.phase is Phase.DEFERRED:
            self._retry_deferred(timer=False)

    def _paused(self, update_id: str, bytes_downloaded: int, detail: str) -> None:
        a = self._current(update_id, frozenset({Phase.DOWNLOADING}))
        if a is not None:
            a.bytes_downloaded = self._clamp(a, bytes_downloaded)
            a.phase = Phase.PAUSED
            self._report_active(S.PAUSED, progress=a.percent(), detail=detail)

    def _resumed(self, update_id: str) -> None:
        a = self._current(update_id, frozenset({Phase.PAUSED}))
        if a is not None:
            a.phase = Phase.DOWNLOADING
            a.reported_percent = a.percent()
            self._report_active(S.DOWNLOADING, progress=a.percent())

    def _install_step(self, update_id: str, step: InstallStep) -> None:
        a = self._current(update_id, INSTALLING)
        if a is not None and step.value > a.reported_percent:
            a.reported_percent = step.value
            self._report_active(S.INSTALLING, progress=step.value, attempts=a.install_attempts)

    def _installed(self, update_id: str, failure: Reason | None, detail: str) -> None:
        a = self._current(update_id, INSTALLING)
        if a is None:
            return
        if failure is not None:
            self._fail(failure, detail)
            return
        a.phase = Phase.REBOOTING
        self._report_active(S.REBOOTING, progress=REBOOTING_PERCENT)
        self._out.append(Reboot(a.update_id))

    def _verified(self, update_id: str, ok: bool, detail: str) -> None:
        a = self._current(update_id, frozenset({Phase.VERIFYING}))
        if a is None:
            return
        if ok:
            a.phase = Phase.COMMITTING
            self._out.append(CommitUpdate(a.update_id))
        else:
            self._roll_back(S.POST_INSTALL_VERIFICATION_FAILED, detail)

    def _committed(self, update_id: str) -> None:
        if self._current(update_id, frozenset({Phase.COMMITTING})) is not None:
            self._complete()
