"""Installing, booting, verifying and committing: the phases after the download.

Each function is one thing that can happen to the active update once its
package is on board; the port callbacks name their update, and a late one
(for an update no longer active, or not in the phase that expects it) is
ignored through `current`.

The manifest's update steps (BR-OTA-027, `update_steps`) frame the slot
write: every installation attempt first runs the pre-update steps, one
`RunUpdateStep` at a time, each reported as INSTALLING progress below the
installer's first step (a restart runs them again: the reboot undid what
they did); only then `StartInstall`. After the commit the post-update steps
run (phase FINISHING, resumed after a restart), and COMPLETED says which
failed.
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
    RunUpdateStep,
    RunVerification,
    StartInstall,
    StepStage,
)
from v2c.vehicle_sim.ota.agent.memory import BOOT_PHASES, ActiveUpdate, Phase
from v2c.vehicle_sim.ota.agent.reports import joined
from v2c.vehicle_sim.ota.agent.state import AgentState, current, require_active
from v2c.vehicle_sim.ota.agent.update_steps import describe, steps_of

S = OTAStatus
INSTALLING: Final = frozenset({Phase.INSTALLING})
FINISHING: Final = frozenset({Phase.FINISHING})
BEFORE_COMMIT: Final = frozenset({Phase.INSTALLING, Phase.REBOOTING, Phase.VERIFYING})
# Pre-update steps report progress below the installer's first step.
PRE_STEPS_PERCENT: Final = InstallStep.PRECHECK.value - 1


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
    a.pre_steps_done = 0
    if not a.install_started_ms:
        a.install_started_ms = st.now
    reporting.report_active(st, S.INSTALLING, attempts=attempt)
    _next_pre_step(st, a)


def _next_pre_step(st: AgentState, a: ActiveUpdate) -> None:
    """The next pre-update step or, once they all worked, the slot write."""
    if a.pre_steps_done < len(a.parsed.pre_update_steps):
        _run_step(st, a, StepStage.PRE, a.pre_steps_done)
        return
    manifest = a.parsed
    st.out.append(
        StartInstall(
            a.update_id,
            manifest.version,
            manifest.size_bytes,
            manifest.checksum_sha256,
            a.install_attempts,
        )
    )


def _run_step(st: AgentState, a: ActiveUpdate, stage: StepStage, index: int) -> None:
    step = steps_of(a.parsed, stage)[index]
    st.out.append(RunUpdateStep(a.update_id, stage, index, step.action, step.argument))


def update_step(
    st: AgentState, update_id: str, stage: StepStage, index: int, ok: bool, detail: str
) -> None:
    """A pre- or post-update step ended. An answer for another step than the
    one the agent waits for (late, repeated) is ignored like any stale port
    callback."""
    a = current(st, update_id, INSTALLING if stage is StepStage.PRE else FINISHING)
    if a is None:
        return
    steps = steps_of(a.parsed, stage)
    waiting = a.pre_steps_done if stage is StepStage.PRE else a.post_steps_done
    if index != waiting or index >= len(steps):
        return
    failure = f"{describe(stage, index, steps)} failed" + (f": {detail}" if detail else "")
    if stage is StepStage.POST:
        a.post_steps_done += 1
        if not ok:
            a.post_step_failures = joined(a.post_step_failures, failure)
        _next_post_step(st, a)
    elif not ok:
        # Nothing was written to the slot: the running version is untouched.
        reporting.fail(st, S.PRE_UPDATE_STEP_FAILED, failure, attempts=a.install_attempts)
    else:
        a.pre_steps_done += 1
        percent = a.pre_steps_done * PRE_STEPS_PERCENT // len(steps)
        a.reported_percent = max(a.reported_percent, percent)
        reporting.report_active(st, S.INSTALLING, progress=percent, attempts=a.install_attempts)
        _next_pre_step(st, a)


def _after_commit(st: AgentState, a: ActiveUpdate) -> None:
    """The slot is good: the post-update steps, then COMPLETED."""
    a.phase, a.post_steps_done = Phase.FINISHING, 0
    st.dirty = True
    _next_post_step(st, a)


def _next_post_step(st: AgentState, a: ActiveUpdate) -> None:
    if a.post_steps_done < len(a.parsed.post_update_steps):
        _run_step(st, a, StepStage.POST, a.post_steps_done)
    else:
        complete(st)


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
    on_target = _same_version(boot.running_version, target)
    if on_target and not boot.trial and a.phase in BEFORE_COMMIT and _reflash(a):
        # A re-flash of the running version: only the trial flag tells the
        # new slot from the old one, and this boot is not the new slot's.
        on_target = False
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
    elif not on_target:
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
            _after_commit(st, a)
    elif a.phase is Phase.FINISHING:
        _next_post_step(st, a)  # the step the power cut interrupted runs again
    else:
        verify(st)


def _reflash(a: ActiveUpdate) -> bool:
    """A forced update (BR-OTA-026) of the very version the vehicle ran."""
    return a.parsed.force_update and _same_version(a.from_version, a.parsed.version)


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
    reporting.end(
        st,
        S.COMPLETED,
        detail=a.post_step_failures,
        installed_version=manifest.version,
        progress=100,
    )


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
    a = current(st, update_id, frozenset({Phase.COMMITTING}))
    if a is not None:
        _after_commit(st, a)
