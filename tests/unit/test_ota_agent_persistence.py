"""Power cuts: the agent's state goes through JSON and comes back where it was.

`Harness.restart` builds a new agent from the last `SaveState` (through
`json.dumps`/`json.loads`, as the runtime writes it to flash) and calls
`on_start` with what the bootloader says.
"""

from __future__ import annotations

import json

import pytest
from ota_agent_harness import MIB, SIZE, Harness, of_type, reason_name, state_name

from v2c.contract.errors import ValidationFailed
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.agent.checks import AgentPolicy
from v2c.vehicle_sim.ota.agent.effects import (
    BootResult,
    CommitUpdate,
    Report,
    RunVerification,
    ScheduleTick,
    StartDownload,
    StartInstall,
)
from v2c.vehicle_sim.ota.agent.memory import Phase

S = OTAStatus
NEW = BootResult("2.5.0", trial=True, boot_attempts=1)


def test_restore_mid_download_resumes_with_the_same_numbering(h: Harness) -> None:
    h.notify()
    deadline = h.now + h.policy.download_timeout_s * 1000
    for done in range(MIB, 20 * MIB + 1, MIB):
        h.progress("upd-1", done)
    before = h.last().sequence

    effects = h.restart()
    [start] = of_type(effects, StartDownload)
    assert (start.update_id, start.resume, start.size_bytes) == ("upd-1", True, SIZE)
    assert of_type(effects, ScheduleTick) == [ScheduleTick(deadline)]
    [resent] = of_type(effects, Report)
    assert resent.redelivery
    assert resent.status.sequence == before  # the same report, same id
    assert h.agent.phase is Phase.DOWNLOADING

    h.download(start=20 * MIB)
    h.install()
    h.boot("2.5.0", trial=True)
    h.verify()
    h.commit()
    assert h.states()[-1] == "COMPLETED"
    # The harness checked that numbering went on from `before` without a gap.
    assert h.last().sequence > before


def test_the_snapshot_is_json_and_survives_a_round_trip(h: Harness) -> None:
    h.set(battery_percent=10)
    h.notify()
    h.notify(update_id="upd-2", version="2.6.0")
    saved = h.agent.snapshot()
    text = json.dumps(saved)
    again = Harness()
    again.agent.restore(json.loads(text))
    assert again.agent.snapshot() == saved
    assert again.agent.active_update_id == "upd-1"
    assert again.agent.last_sequence("upd-2") == 1


def test_a_paused_download_resumes_after_a_restart(h: Harness) -> None:
    h.notify()
    h.progress("upd-1", 5 * MIB)
    h.paused(5 * MIB, "no network")
    effects = h.restart()
    assert of_type(effects, StartDownload)[0].resume
    assert h.agent.phase is Phase.PAUSED
    h.progress("upd-1", 6 * MIB)
    assert h.states()[-2:] == ["PAUSED", "DOWNLOADING"]


def test_a_deferred_update_proceeds_at_start_if_the_condition_cleared(h: Harness) -> None:
    h.set(battery_percent=10)
    h.notify()
    h.conditions = h.conditions.with_(charging=True)  # plugged in while off
    effects = h.restart()
    assert h.states()[-2:] == ["ACCEPTED", "DOWNLOADING"]
    assert of_type(effects, StartDownload)


def test_a_deferred_update_keeps_its_retry_time_across_a_restart(h: Harness) -> None:
    h.set(battery_percent=10)
    h.notify()
    retry_at = h.now + 3600 * 1000
    effects = h.restart(ms=60_000)
    assert of_type(effects, ScheduleTick) == [ScheduleTick(retry_at)]
    assert h.states() == ["DEFERRED"]


def test_an_interrupted_installation_is_restarted_then_given_up(h: Harness) -> None:
    h.notify()
    h.download()
    attempts = []
    for _ in range(h.policy.max_install_attempts - 1):
        effects = h.restart()  # the old slot booted: the install never finished
        attempts += [e.attempt for e in of_type(effects, StartInstall)]
    assert attempts == [2, 3]
    assert [s.attempts for s in h.reports() if state_name(s) == "INSTALLING"] == [1, 2, 3]
    h.restart()
    failed = h.last()
    assert (state_name(failed), reason_name(failed), failed.attempts) == (
        "FAILED",
        "FLASH_WRITE_FAILURE",
        3,
    )


def test_a_real_reboot_into_the_new_slot_continues_with_verification(h: Harness) -> None:
    h.notify()
    h.download()
    h.install()
    effects = h.restart(NEW)
    assert h.states()[-1] == "VERIFYING"
    assert of_type(effects, RunVerification)
    h.verify()
    h.commit()
    assert h.states()[-1] == "COMPLETED"


def test_armed_but_cut_before_rebooting_is_judged_by_the_boot(h: Harness) -> None:
    # The installer armed the bootloader, the power went before the agent
    # heard of it: the next boot tries the new slot, and the agent follows.
    h.notify()
    h.download()
    h.restart(NEW)
    assert h.states()[-2:] == ["INSTALLING", "VERIFYING"]


def test_a_power_cut_during_verification_verifies_again(h: Harness) -> None:
    h.notify()
    h.download()
    h.install()
    h.boot("2.5.0", trial=True)
    count = len(h.reports())
    effects = h.restart(BootResult("2.5.0", trial=True, boot_attempts=2))
    assert of_type(effects, RunVerification)
    assert len(h.reports()) == count  # still VERIFYING: nothing new to report


def test_a_power_cut_around_the_commit_completes_from_the_bootloader_state(
    h: Harness,
) -> None:
    h.notify()
    h.download()
    h.install()
    h.boot("2.5.0", trial=True)
    h.verify()
    # Cut before the commit was written: still on trial, commit again.
    effects = h.restart(BootResult("2.5.0", trial=True, boot_attempts=2))
    assert of_type(effects, CommitUpdate)
    # Cut after it was written but before the agent heard: committed slot.
    h.restart(BootResult("2.5.0"))
    assert (h.states()[-1], h.last().installed_version) == ("COMPLETED", "2.5.0")


def test_a_rollback_reboot_through_a_restart_reports_rolled_back(h: Harness) -> None:
    h.notify()
    h.download()
    h.install()
    h.boot("2.5.0", trial=True)
    h.verify(ok=False)
    h.restart(BootResult("2.4.1"))
    assert (state_name(h.last()), reason_name(h.last())) == (
        "ROLLED_BACK",
        "POST_INSTALL_VERIFICATION_FAILED",
    )


def test_a_boot_failure_found_at_start_reports_rolled_back(h: Harness) -> None:
    h.notify()
    h.download()
    h.install()
    h.restart(BootResult("2.4.1", fell_back=True, boot_attempts=3))
    assert (reason_name(h.last()), h.last().attempts) == ("BOOT_FAILURE", 3)


def test_a_confirmed_delivery_is_not_resent(h: Harness) -> None:
    h.notify()
    last = h.last()
    h.agent.on_report_delivered("upd-1", last.sequence)
    h.saved = h.agent.snapshot()  # persisted with the next save (here: at shutdown)
    effects = h.restart()
    assert not of_type(effects, Report)


def test_the_terminal_report_is_resent_until_confirmed(h: Harness) -> None:
    h.set(free_storage_bytes=0)
    h.notify()
    [resent] = of_type(h.restart(), Report)
    assert (resent.redelivery, state_name(resent.status)) == (True, "REJECTED")


def test_an_unreadable_snapshot_is_refused_and_changes_nothing(h: Harness) -> None:
    h.notify()
    before = h.agent.snapshot()
    for bad in ({}, {"format": 2}, {"format": 1, "updates": [{"update_id": "x"}]}):
        with pytest.raises(ValidationFailed):
            h.agent.restore(bad)
    assert h.agent.snapshot() == before


def test_memory_is_bounded_and_never_forgets_the_active_update() -> None:
    h = Harness(policy=AgentPolicy(remembered_updates=3, remembered_notifications=4))
    h.notify()
    for n in range(2, 9):
        h.notify(update_id=f"upd-{n}", version="2.6.0")
    saved = h.agent.snapshot()
    assert len(saved["updates"]) == 3
    assert "upd-1" in [u["update_id"] for u in saved["updates"]]
    assert len(saved["notifications"]) == 4
    assert h.agent.last_sequence("upd-1") == 2  # ACCEPTED, DOWNLOADING
    assert h.cloud_refusals == []
