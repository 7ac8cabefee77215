"""Forced updates (BR-OTA-026) and pre/post-update steps (BR-OTA-027) through the agent.

A signed `force_update` takes the same or an older version, never below an
anti-rollback floor. The manifest's steps run around the slot write, from
the agent's allow-list only: a failed pre-update step fails the update with
nothing written; a failed post-update step is said in COMPLETED, and the
update stands. Every report must be accepted by the cloud's machine (fixture).
"""

from __future__ import annotations

import pytest
from ota_agent_harness import Harness, of_type, reason_name, state_name

from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.vehicle_sim.ota.agent.effects import (
    BootResult,
    CommitUpdate,
    DiscardPackage,
    Effect,
    Report,
    RunUpdateStep,
    RunVerification,
    StartDownload,
    StartInstall,
    StepStage,
)
from v2c.vehicle_sim.ota.agent.memory import Phase
from v2c.vehicle_sim.ota.agent.update_steps import ALLOWED_ACTIONS, MAX_STEPS

PRE = StepStage.PRE
POST = StepStage.POST
PRE_STEPS = (("stop_service", "infotainment"), ("backup_config", "navigation"))
POST_STEPS = (("restart_service", "infotainment"), ("notify_driver", "updated"))


# -- force_update ------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.4.1", "2.3.0"], ids=["same", "older"])
def test_without_force_the_same_or_an_older_version_is_refused(h: Harness, version: str) -> None:
    h.notify(version=version)
    assert (state_name(h.last()), reason_name(h.last())) == ("REJECTED", "VERSION_DOWNGRADE")


@pytest.mark.parametrize("version", ["2.4.1", "2.3.0"], ids=["same", "older"])
def test_a_forced_update_takes_the_same_or_an_older_version(h: Harness, version: str) -> None:
    effects = h.notify(version=version, force_update=True)
    assert h.states()[:2] == ["ACCEPTED", "DOWNLOADING"]
    assert of_type(effects, StartDownload)


def test_a_forced_update_never_goes_below_its_own_floor(h: Harness) -> None:
    h.notify(version="2.3.0", force_update=True, min_installed_version="2.4.0")
    assert (state_name(h.last()), reason_name(h.last())) == ("REJECTED", "VERSION_DOWNGRADE")
    assert "anti-rollback floor" in h.last().error_detail


def test_a_forced_update_never_goes_below_the_floor_of_a_completed_update(h: Harness) -> None:
    h.notify(min_installed_version="2.5.0")  # a security fix raises the floor
    h.download()
    h.install()
    h.boot("2.5.0", trial=True)
    h.verify()
    h.commit()
    assert h.agent.rollback_floor == "2.5.0"
    h.set(installed_version="2.5.0")
    # an old, validly signed forced manifest replayed cannot undo it
    h.notify(update_id="upd-old", version="2.4.1", force_update=True)
    assert reason_name(h.last("upd-old")) == "VERSION_DOWNGRADE"
    # a re-flash of the running version is above the floor: taken
    h.notify(update_id="upd-reflash", version="2.5.0", force_update=True)
    assert h.states("upd-reflash")[0] == "ACCEPTED"


def test_a_re_flash_of_the_running_version_completes_through_the_trial_slot(h: Harness) -> None:
    h.notify(version="2.4.1", force_update=True)
    h.download()
    h.install()
    effects = h.boot("2.4.1", trial=True)
    assert of_type(effects, RunVerification)
    effects = h.verify()
    assert of_type(effects, CommitUpdate)
    h.commit()
    assert (state_name(h.last()), h.last().installed_version) == ("COMPLETED", "2.4.1")


def test_a_re_flash_cut_while_installing_installs_again_rather_than_verify_the_old_slot(
    h: Harness,
) -> None:
    h.notify(version="2.4.1", force_update=True)
    h.download()
    # the power fails mid-write: the old slot, the same version, boots normally
    effects = h.restart(BootResult("2.4.1"))
    [install] = of_type(effects, StartInstall)
    assert install.attempt == 2
    assert not of_type(effects, RunVerification)


def test_a_re_flash_whose_new_slot_was_never_tried_is_reported_rolled_back(h: Harness) -> None:
    h.notify(version="2.4.1", force_update=True)
    h.download()
    h.install()
    h.boot("2.4.1")  # not on trial: the bootloader did not try the new slot
    assert (state_name(h.last()), reason_name(h.last())) == ("ROLLED_BACK", "BOOT_FAILURE")


# -- pre-update steps ---------------------------------------------------------------


def test_pre_update_steps_run_in_order_before_the_slot_write_as_installing_progress(
    h: Harness,
) -> None:
    h.notify(pre_update_steps=PRE_STEPS)
    effects = h.download()
    assert of_type(effects, RunUpdateStep) == [
        RunUpdateStep("upd-1", PRE, 0, "stop_service", "infotainment")
    ]
    assert not of_type(effects, StartInstall)
    effects = h.update_step(PRE, 0)
    assert of_type(effects, RunUpdateStep) == [
        RunUpdateStep("upd-1", PRE, 1, "backup_config", "navigation")
    ]
    assert not of_type(effects, StartInstall)
    effects = h.update_step(PRE, 1)
    [install] = of_type(effects, StartInstall)
    assert install.attempt == 1
    progress = [(state_name(s), s.progress_percent) for s in h.reports()[-3:]]
    assert progress == [("INSTALLING", 0), ("INSTALLING", 2), ("INSTALLING", 4)]
    h.install()
    h.boot("2.5.0", trial=True)
    h.verify()
    h.commit()
    assert (state_name(h.last()), h.last().error_detail) == ("COMPLETED", "")


def test_a_failed_pre_update_step_fails_the_update_with_nothing_written(h: Harness) -> None:
    h.notify(pre_update_steps=PRE_STEPS)
    h.download()
    h.update_step(PRE, 0)
    effects = h.update_step(PRE, 1, ok=False, detail="no space for the backup")
    assert (state_name(h.last()), reason_name(h.last())) == ("FAILED", "PRE_UPDATE_STEP_FAILED")
    assert "backup_config(navigation) failed: no space for the backup" in h.last().error_detail
    assert h.last().installed_version == "2.4.1"
    assert of_type(effects, DiscardPackage) == [DiscardPackage("upd-1")]
    assert not of_type(h.effects, StartInstall)  # the slot was never touched
    assert h.agent.active_update_id is None
    assert h.cloud["upd-1"].state is UpdateState.FAILED


def test_pre_update_steps_run_again_after_a_power_cut(h: Harness) -> None:
    h.notify(pre_update_steps=PRE_STEPS)
    h.download()
    h.update_step(PRE, 0)
    effects = h.restart(BootResult("2.4.1"))  # a reboot undid the stopped service
    assert of_type(effects, RunUpdateStep) == [
        RunUpdateStep("upd-1", PRE, 0, "stop_service", "infotainment")
    ]
    assert [r.status.attempts for r in of_type(effects, Report)][-1:] == [2]


def test_a_stale_or_repeated_step_answer_is_ignored(h: Harness) -> None:
    h.notify(pre_update_steps=PRE_STEPS)
    h.download()
    assert h.update_step(PRE, 1) == []  # not the step the agent waits for
    assert h.update_step(POST, 0) == []  # not a phase with post-update steps
    h.update_step(PRE, 0)
    assert h.update_step(PRE, 0) == []  # repeated
    assert h.agent.phase is Phase.INSTALLING


@pytest.mark.parametrize("field", ["pre_update_steps", "post_update_steps"])
def test_an_action_outside_the_allow_list_is_refused_before_any_download(
    h: Harness, field: str
) -> None:
    steps = (("stop_service", "a"), ("rm -rf /", "b"))
    if field == "pre_update_steps":
        effects = h.notify(pre_update_steps=steps)
    else:
        effects = h.notify(post_update_steps=steps)
    assert (state_name(h.last()), reason_name(h.last())) == ("REJECTED", "PRE_UPDATE_STEP_FAILED")
    assert "unknown action" in h.last().error_detail
    assert not of_type(effects, StartDownload)


def test_too_many_steps_are_refused(h: Harness) -> None:
    h.notify(pre_update_steps=(("clear_cache", "x"),) * (MAX_STEPS + 1))
    assert reason_name(h.last()) == "PRE_UPDATE_STEP_FAILED"


def test_every_allowed_action_is_accepted(h: Harness) -> None:
    h.notify(pre_update_steps=tuple((action, "") for action in sorted(ALLOWED_ACTIONS)))
    assert h.states()[:2] == ["ACCEPTED", "DOWNLOADING"]


# -- post-update steps --------------------------------------------------------------


def _committed_with_post_steps(h: Harness) -> list[Effect]:
    h.notify(post_update_steps=POST_STEPS)
    h.download()
    h.install()
    h.boot("2.5.0", trial=True)
    h.verify()
    return h.commit()


def test_post_update_steps_run_after_the_commit_then_the_update_completes(h: Harness) -> None:
    effects = _committed_with_post_steps(h)
    assert of_type(effects, RunUpdateStep) == [
        RunUpdateStep("upd-1", POST, 0, "restart_service", "infotainment")
    ]
    assert state_name(h.last()) == "VERIFYING"  # not complete before the steps ran
    h.update_step(POST, 0)
    h.update_step(POST, 1)
    assert (state_name(h.last()), h.last().error_detail) == ("COMPLETED", "")


def test_a_failed_post_update_step_is_reported_and_the_update_stands(h: Harness) -> None:
    _committed_with_post_steps(h)
    effects = h.update_step(POST, 0, ok=False, detail="service did not start")
    assert of_type(effects, RunUpdateStep)  # the next step still runs
    h.update_step(POST, 1)
    final = h.last()
    assert (state_name(final), final.installed_version) == ("COMPLETED", "2.5.0")
    assert "post-update step 1/2 restart_service(infotainment) failed" in final.error_detail
    assert "service did not start" in final.error_detail
    assert h.cloud["upd-1"].state is UpdateState.COMPLETED


def test_post_update_steps_resume_after_a_power_cut(h: Harness) -> None:
    _committed_with_post_steps(h)
    h.update_step(POST, 0, ok=False)
    assert h.agent.phase is Phase.FINISHING
    effects = h.restart(BootResult("2.5.0"))  # committed: a normal boot of the new slot
    assert of_type(effects, RunUpdateStep) == [
        RunUpdateStep("upd-1", POST, 1, "notify_driver", "updated")
    ]
    h.update_step(POST, 1)
    assert state_name(h.last()) == "COMPLETED"
    assert "restart_service" in h.last().error_detail  # the failure survived the restart


def test_a_commit_lost_to_a_power_cut_still_runs_the_post_update_steps(h: Harness) -> None:
    h.notify(post_update_steps=POST_STEPS[:1])
    h.download()
    h.install()
    h.boot("2.5.0", trial=True)
    h.verify()
    # the slot was marked good, the process died before `on_committed`
    effects = h.restart(BootResult("2.5.0"))
    assert of_type(effects, RunUpdateStep)
    h.update_step(POST, 0)
    assert state_name(h.last()) == "COMPLETED"
