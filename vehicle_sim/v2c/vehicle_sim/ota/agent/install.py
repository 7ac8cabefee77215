"""Installing, booting, verifying and committing: the phases after the download.

Each function is one thing that can happen to the active update once its
package is on board; the port callbacks name their update, and a late one
(for an update no longer active, or not in the phase that expects it) is
ignored through `current`.
"""

from __future__ import annotations

from typing import Final

from v2c.contract.errors import ValidationFailed
from v2c.contract.semver import SemVer
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.agent import reporting
from v2c.vehicle_sim.ota.agent.checks import Decision, Stage, check_preconditions
from v2c.vehicle_sim.ota.agent.effects import (
    REBOOTING_PERCENT,
    VERIFYING_PERCENT,
    BootResult,
    CommitUpdate,
    DiscardPackage,
    InstallStep,
    Reason,
    Reboot,
    RollBack,
    RunVerification,
    StartInstall,
)
from v2c.vehicle_sim.ota.agent.memory import BOOT_PHASES, Phase
from v2c.vehicle_sim.ota.agent.state import AgentState, current, require_active

S = OTAStatus
INSTALLING: Final = frozenset({Phase.INSTALLING})


def _same_version(a: str, b: str) -> bool:
    try:
        return SemVer.parse(a) == SemVer.parse(b)
    except ValidationFailed:
        return a == b


def try_install(st: AgentState) -> None:
    conditions = st.conditions
    if conditions is None:
        return
    a = require_active(st)
    verdict = check_preconditions(a.parsed, conditions, st.policy, Stage.INSTALL)
    if verdict.decision is Decision.ACCEPT:
        start_install(st, 1)
    elif verdict.decision is Decision.DEFER:
        reporting.defer(st, verdict, Stage.INSTALL)
    else:
        reporting.fail(st, verdict.reason, verdict.detail)


def start_install(st: AgentState, attempt: int) -> None:
    a = require_active(st)
    a.phase, a.install_attempts, a.reported_percent = Phase.INSTALLING, attempt, 0
    if not a.install_started_ms:
        a.install_started_ms = st.now
    reporting.report_active(st, S.INSTALLING, attempts=attempt)
    manifest = a.parsed
    st.out.append(
        StartInstall(
            a.update_id,
            manifest.version,
            manifest.size_bytes,
            manifest.checksum_sha256,
            attempt,
        )
    )


def install_step(st: AgentState, update_id: str, step: InstallStep) -> None:
    a = current(st, update_id, INSTALLING)
    if a is not None and step.value > a.reported_percent:
        a.reported_percent = step.value
        reporting.report_active(st, S.INSTALLING, progress=step.value, attempts=a.install_attempts)


def installed(st: AgentState, update_id: str, failure: Reason | None, detail: str) -> None:
    a = current(st, update_id, INSTALLING)
    if a is None:
        return
    if failure is not None:
        reporting.fail(st, failure, detail)
        return
    a.phase = Phase.REBOOTING
    reporting.report_active(st, S.REBOOTING, progress=REBOOTING_PERCENT)
    st.out.append(Reboot(a.update_id))


def after_boot(st: AgentState, boot: BootResult) -> None:
    a = st.active
    if a is None or a.phase not in BOOT_PHASES:
        return
    target = a.parsed.version
    if a.phase is Phase.ROLLING_BACK:
        if boot.trial and not boot.fell_back:
            st.out.append(RollBack(a.update_id))  # the switch did not happen: again
        else:
            rolled_back(st, a.failure_reason, a.failure_detail, boot)
    elif boot.fell_back:
        rolled_back(
            st,
            S.BOOT_FAILURE,
            f"the new slot failed {boot.boot_attempts} boots; running {boot.running_version}",
            boot,
        )
    elif not _same_version(boot.running_version, target):
        if boot.trial:
            roll_back(
                st,
                S.POST_INSTALL_VERIFICATION_FAILED,
                f"the new slot runs {boot.running_version}, expected {target}",
            )
        elif a.phase is Phase.INSTALLING:
            restart_install(st)
        else:
            rolled_back(st, S.BOOT_FAILURE, "the bootloader did not try the new slot", boot)
    elif a.phase is Phase.COMMITTING:
        if boot.trial:
            st.out.append(CommitUpdate(a.update_id))  # the commit was lost: again
        else:
            complete(st)
    else:
        verify(st)


def verify(st: AgentState) -> None:
    a = require_active(st)
    if a.phase is not Phase.VERIFYING:
        a.phase = Phase.VERIFYING
        reporting.report_active(st, S.VERIFYING, progress=VERIFYING_PERCENT)
    st.out.append(RunVerification(a.update_id, a.parsed.version))


def restart_install(st: AgentState) -> None:
    a = require_active(st)
    if a.install_attempts >= st.policy.max_install_attempts:
        reporting.fail(
            st,
            S.FLASH_WRITE_FAILURE,
            f"the installation was interrupted {a.install_attempts} times",
            attempts=a.install_attempts,
        )
    else:
        start_install(st, a.install_attempts + 1)


def roll_back(st: AgentState, reason: Reason, detail: str) -> None:
    a = require_active(st)
    a.phase, a.failure_reason, a.failure_detail = Phase.ROLLING_BACK, reason, detail
    st.out.append(RollBack(a.update_id))


def rolled_back(st: AgentState, reason: Reason, detail: str, boot: BootResult) -> None:
    a = require_active(st)
    st.out.append(DiscardPackage(a.update_id))
    reporting.end(
        st,
        S.ROLLED_BACK,
        reason,
        detail,
        installed_version=boot.running_version,
        attempts=boot.boot_attempts,
    )


def complete(st: AgentState) -> None:
    a = require_active(st)
    manifest = a.parsed
    floor = manifest.min_installed_version
    current = st.memory.rollback_floor
    if floor and (not current or SemVer.parse(floor) > SemVer.parse(current)):
        st.memory.rollback_floor = floor
    st.out.append(DiscardPackage(a.update_id))
    reporting.end(st, S.COMPLETED, installed_version=manifest.version, progress=100)


def verified(st: AgentState, update_id: str, ok: bool, detail: str) -> None:
    a = current(st, update_id, frozenset({Phase.VERIFYING}))
    if a is None:
        return
    if ok:
        a.phase = Phase.COMMITTING
        st.out.append(CommitUpdate(a.update_id))
    else:
        roll_back(st, S.POST_INSTALL_VERIFICATION_FAILED, detail)


def committed(st: AgentState, update_id: str) -> None:
    if current(st, update_id, frozenset({Phase.COMMITTING})) is not None:
        complete(st)
