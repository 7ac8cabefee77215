"""Signed cloud commands through the agent: every kind in every phase of an update.

CANCEL_UPDATE and ROLL_BACK stop an update that is not installing yet, are
noted and outlived by one that is, and change nothing about one that
completed; REQUEST_STATUS re-reports. A command is acted on once, across
restarts; a forged, expired or misaddressed one is dropped and changes
nothing. Every report goes through the cloud's own state machine (the
harness), which must accept each one (the fixture).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ota_agent_harness import (
    DAY_MS,
    MIB,
    VIN,
    Harness,
    of_type,
    other_signer,
    reason_name,
    state_name,
)
from signing_helpers import flip_bit
from test_ota_agent_properties import KINDS, UPDATES, Run

from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.v1.command_pb2 import OTACommand, OTACommandEnvelope
from v2c.vehicle_sim.ota.agent.checks import AgentPolicy
from v2c.vehicle_sim.ota.agent.effects import (
    BootResult,
    CancelDownload,
    DiscardPackage,
    Dropped,
    Effect,
    Report,
    RollBack,
    SaveState,
    StartDownload,
    StartInstall,
)
from v2c.vehicle_sim.ota.agent.memory import Phase

Kind = OTACommand.Kind
CANCEL: Final = Kind.CANCEL_UPDATE
ROLL_BACK: Final = Kind.ROLL_BACK
STOPPING: Final = (CANCEL, ROLL_BACK)
OTHER_VIN: Final = "VIN-2HGBH41JXMN109187"


# -- getting an update to each phase ------------------------------------------


def _deferred(h: Harness) -> None:
    h.set(battery_percent=5)
    h.notify()


def _downloading(h: Harness) -> None:
    h.notify()
    h.progress("upd-1", 20 * MIB)


def _paused(h: Harness) -> None:
    _downloading(h)
    h.paused(20 * MIB, "link lost")


def _downloaded_waiting(h: Harness) -> None:
    h.notify()
    h.set(ignition_on=True)  # the download goes on; the installation waits
    h.download()


def _installing(h: Harness) -> None:
    h.notify()
    h.download()


def _rebooting(h: Harness) -> None:
    _installing(h)
    h.install()


def _verifying(h: Harness) -> None:
    _rebooting(h)
    h.boot("2.5.0", trial=True)


def _committing(h: Harness) -> None:
    _verifying(h)
    h.verify()


def _completed(h: Harness) -> None:
    _committing(h)
    h.commit()


BEFORE_INSTALL: Final[dict[str, tuple[Callable[[Harness], None], Phase, bool]]] = {
    # phase reached, and whether a download was running to be stopped
    "deferred": (_deferred, Phase.DEFERRED, False),
    "downloading": (_downloading, Phase.DOWNLOADING, True),
    "paused": (_paused, Phase.PAUSED, True),
    "downloaded, waiting to install": (_downloaded_waiting, Phase.DEFERRED, False),
}

ONCE_INSTALLING: Final[dict[str, tuple[Callable[[Harness], None], Phase]]] = {
    "installing": (_installing, Phase.INSTALLING),
    "rebooting": (_rebooting, Phase.REBOOTING),
    "verifying": (_verifying, Phase.VERIFYING),
    "committing": (_committing, Phase.COMMITTING),
}


def _finish(h: Harness, phase: Phase) -> None:
    """From `phase`, what healthy ports do until the update completes."""
    if phase is Phase.INSTALLING:
        h.install()
    if phase in (Phase.INSTALLING, Phase.REBOOTING):
        h.boot("2.5.0", trial=True)
    if phase is not Phase.COMMITTING:
        h.verify()
    h.commit()


# -- CANCEL_UPDATE and ROLL_BACK --------------------------------------------------


@pytest.mark.parametrize("kind", STOPPING, ids=Kind.Name)
@pytest.mark.parametrize("where", list(BEFORE_INSTALL))
def test_a_stop_command_before_installing_stops_discards_and_reports_cancelled(
    h: Harness, kind: OTACommand.Kind.ValueType, where: str
) -> None:
    reach, phase, downloading = BEFORE_INSTALL[where]
    reach(h)
    assert h.agent.phase is phase
    envelope = h.command(kind, reason="bad build found")
    command_id = OTACommand.FromString(envelope.command).command_id

    effects = h.send_command(envelope)

    assert of_type(effects, CancelDownload) == ([CancelDownload("upd-1")] if downloading else [])
    assert of_type(effects, DiscardPackage) == [DiscardPackage("upd-1")] * (
        where != "deferred"  # a package (or its partial file) exists once downloading began
    )
    assert not of_type(effects, StartInstall)
    [report] = of_type(effects, Report)
    assert (state_name(report.status), reason_name(report.status)) == (
        "REJECTED",
        "CAMPAIGN_CANCELLED",
    )
    assert command_id in report.status.error_detail
    assert "bad build found" in report.status.error_detail
    assert report.status.installed_version == "2.4.1"  # the vehicle keeps its version
    assert h.agent.active_update_id is None
    assert h.cloud["upd-1"].state is UpdateState.CANCELLED
    # a late port callback for it changes nothing
    assert h.agent.on_download_finished("upd-1", h.now) == []


@pytest.mark.parametrize("kind", STOPPING, ids=Kind.Name)
@pytest.mark.parametrize("where", list(ONCE_INSTALLING))
def test_a_stop_command_once_installing_is_noted_and_the_update_completes(
    h: Harness, kind: OTACommand.Kind.ValueType, where: str
) -> None:
    reach, phase = ONCE_INSTALLING[where]
    reach(h)
    reports_before = len(h.reports())
    envelope = h.command(kind)
    command_id = OTACommand.FromString(envelope.command).command_id

    effects = h.send_command(envelope)

    # Nothing but the note is saved: no report, no stop, no rollback.
    assert [type(e) for e in effects] == [SaveState]
    assert h.agent.phase is phase
    assert len(h.reports()) == reports_before
    _finish(h, phase)
    final = h.last()
    assert state_name(final) == "COMPLETED"
    assert final.installed_version == "2.5.0"
    assert command_id in final.error_detail
    assert "carried on" in final.error_detail
    assert not of_type(h.effects, RollBack)
    assert h.cloud["upd-1"].state is UpdateState.COMPLETED  # the cloud refused to cancel too


@pytest.mark.parametrize("kind", STOPPING, ids=Kind.Name)
def test_a_stop_command_after_the_commit_changes_nothing(
    h: Harness, kind: OTACommand.Kind.ValueType
) -> None:
    _completed(h)
    h.set(installed_version="2.5.0")
    effects = h.send_command(kind=kind, to_version="2.4.1")
    # never a rollback on a command: only the remembered command id is saved
    assert [type(e) for e in effects] == [SaveState]
    assert h.agent.active_update_id is None
    assert state_name(h.last()) == "COMPLETED"
    # a new notification for it still re-reports COMPLETED, not cancelled
    h.notify()
    assert state_name(h.last()) == "COMPLETED"
    # what rolls it back is the signed rollback manifest the cloud sends next
    h.notify(update_id="upd-rb", version="2.4.1", is_rollback=True)
    assert h.states("upd-rb")[:2] == ["ACCEPTED", "DOWNLOADING"]


@pytest.mark.parametrize("kind", STOPPING, ids=Kind.Name)
def test_a_stop_command_that_overtakes_its_notification_refuses_it_even_after_a_restart(
    h: Harness, kind: OTACommand.Kind.ValueType
) -> None:
    # both were queued in the persistent session, the command first
    effects = h.send_command(kind=kind, vehicle_id="")
    assert not of_type(effects, Report)
    h.restart()
    effects = h.notify()
    assert not of_type(effects, StartDownload)
    [report] = of_type(effects, Report)
    assert (state_name(report.status), reason_name(report.status)) == (
        "REJECTED",
        "CAMPAIGN_CANCELLED",
    )
    assert report.status.sequence == 1
    assert h.agent.active_update_id is None
    # and it stays refused: another notification of it gets the same answer
    h.notify()
    assert [(s, r.sequence) for s, r in zip(h.states(), h.reports("upd-1"), strict=True)] == [
        ("REJECTED", 1),
        ("REJECTED", 2),
    ]
    assert h.cloud["upd-1"].state is UpdateState.CANCELLED


def test_a_stop_command_for_an_update_the_vehicle_rejected_refuses_its_retry(h: Harness) -> None:
    h.set(free_storage_bytes=0)
    h.notify()
    assert reason_name(h.last()) == "INSUFFICIENT_STORAGE"
    h.send_command()  # the cloud's cancel is a no-op on its REJECTED record
    h.set(free_storage_bytes=10**12)
    h.notify()  # a retry queued before the cancel reached the vehicle
    assert (state_name(h.last()), reason_name(h.last())) == ("REJECTED", "CAMPAIGN_CANCELLED")
    assert not of_type(h.effects, StartDownload)


def test_a_stop_command_for_another_update_leaves_the_active_one_alone(h: Harness) -> None:
    _downloading(h)
    effects = h.send_command(update_id="upd-other")
    assert [type(e) for e in effects] == [SaveState]
    assert h.agent.phase is Phase.DOWNLOADING
    # and the other update, should it come, is refused
    h.notify(update_id="upd-other", version="2.6.0")
    assert reason_name(h.last("upd-other")) == "CAMPAIGN_CANCELLED"


def test_the_runtime_hook_on_cancel_still_works_alongside_commands(h: Harness) -> None:
    _downloading(h)
    effects = h.cancel()
    assert of_type(effects, CancelDownload) == [CancelDownload("upd-1")]
    assert (state_name(h.last()), reason_name(h.last())) == ("REJECTED", "CAMPAIGN_CANCELLED")
    assert h.last().error_detail == "cancelled by the cloud"


# -- REQUEST_STATUS ----------------------------------------------------------------


@pytest.mark.parametrize("named", [True, False], ids=["named", "active"])
def test_request_status_re_reports_the_active_update_under_the_next_sequence(
    h: Harness, named: bool
) -> None:
    _downloading(h)
    last = h.last()
    effects = h.send_command(kind=Kind.REQUEST_STATUS, update_id="upd-1" if named else "")
    [report] = of_type(effects, Report)
    assert report.status.sequence == last.sequence + 1
    assert (report.status.state, report.status.progress_percent) == (
        last.state,
        last.progress_percent,
    )
    assert not of_type(effects, StartDownload)  # nothing is done twice
    assert h.agent.phase is Phase.DOWNLOADING


def test_request_status_during_the_installation_re_reports_it(h: Harness) -> None:
    _rebooting(h)
    effects = h.send_command(kind=Kind.REQUEST_STATUS)
    [report] = of_type(effects, Report)
    assert state_name(report.status) == "REBOOTING"
    assert h.agent.phase is Phase.REBOOTING


def test_request_status_re_reports_a_finished_update(h: Harness) -> None:
    _completed(h)
    effects = h.send_command(kind=Kind.REQUEST_STATUS)
    [report] = of_type(effects, Report)
    assert state_name(report.status) == "COMPLETED"
    assert report.status.installed_version == "2.5.0"


@pytest.mark.parametrize("update_id", ["upd-never-seen", ""])
def test_request_status_with_nothing_to_report_is_dropped(h: Harness, update_id: str) -> None:
    effects = h.send_command(kind=Kind.REQUEST_STATUS, update_id=update_id)
    assert of_type(effects, Dropped)
    assert not of_type(effects, Report)


# -- once, across restarts ----------------------------------------------------------


def test_a_command_is_acted_on_once_across_redeliveries_retries_and_restarts(
    h: Harness,
) -> None:
    _downloading(h)
    status = h.command(Kind.REQUEST_STATUS)
    assert of_type(h.send_command(status), Report)
    assert h.deliver_command(status) == []  # the broker's QoS 1 redelivery
    # the cloud's retried publish: the same command, signed again, a new header
    again = h.command(
        Kind.REQUEST_STATUS, command_id=OTACommand.FromString(status.command).command_id
    )
    assert again.SerializeToString() != status.SerializeToString()
    assert h.deliver_command(again) == []
    h.restart()
    assert h.deliver_command(status) == []
    assert OTACommand.FromString(status.command).command_id in h.agent.snapshot()["commands"]


def test_a_cancel_redelivered_after_a_restart_does_nothing_more(h: Harness) -> None:
    _downloading(h)
    cancel = h.command(CANCEL)
    h.send_command(cancel)
    reports = len(h.reports())
    h.restart()
    assert h.deliver_command(cancel) == []
    assert len(h.reports()) == reports


def test_the_remembered_command_ids_are_bounded() -> None:
    h = Harness(policy=AgentPolicy(remembered_commands=3))
    _downloading(h)
    ids = [f"cmd-{n}" for n in range(5)]
    for command_id in ids:
        h.send_command(kind=Kind.REQUEST_STATUS, command_id=command_id)
    assert h.agent.snapshot()["commands"] == ids[-3:]
    assert h.cloud_refusals == []


# -- what is dropped ------------------------------------------------------------------


def _dropped_and_nothing_else(h: Harness, effects: list[Effect]) -> None:
    assert [type(e) for e in effects] == [SaveState, Dropped]
    assert h.agent.phase is Phase.DOWNLOADING
    assert h.agent.snapshot()["commands"] == []


@pytest.mark.parametrize(
    "why",
    ["another vehicle", "expired", "another signer", "altered bytes", "relabelled key"],
)
def test_a_command_that_does_not_verify_or_is_not_for_this_vehicle_is_dropped(
    h: Harness, why: str
) -> None:
    _downloading(h)
    if why == "another vehicle":
        envelope = h.command(CANCEL, vehicle_id=OTHER_VIN)
    elif why == "expired":
        envelope = h.command(CANCEL, issued_at=h.now - 2 * DAY_MS, expires_at=h.now - 1)
    elif why == "another signer":
        envelope = h.command(CANCEL, sign_with=other_signer())
    else:
        envelope = OTACommandEnvelope()
        envelope.CopyFrom(h.command(CANCEL))
        if why == "altered bytes":
            envelope.command = flip_bit(envelope.command, len(envelope.command) // 2)
        else:
            envelope.key_id = "another-key"
    effects = h.deliver_command(envelope)
    _dropped_and_nothing_else(h, effects)
    [dropped] = of_type(effects, Dropped)
    assert dropped.why.startswith("command refused")


def test_an_unreadable_command_is_dropped(h: Harness) -> None:
    _downloading(h)
    effects = h.agent.on_command(b"\xff\xff\xff", h.now)
    _dropped_and_nothing_else(h, effects)


def test_a_forged_copy_does_not_use_up_the_genuine_command_id(h: Harness) -> None:
    _downloading(h)
    genuine = h.command(CANCEL, command_id="cmd-1")
    forged = h.command(CANCEL, command_id="cmd-1", sign_with=other_signer())
    _dropped_and_nothing_else(h, h.deliver_command(forged))
    h.send_command(genuine)
    assert reason_name(h.last()) == "CAMPAIGN_CANCELLED"


def test_a_command_addressed_to_this_vehicle_is_acted_on(h: Harness) -> None:
    _downloading(h)
    h.send_command(vehicle_id=VIN)
    assert reason_name(h.last()) == "CAMPAIGN_CANCELLED"


def test_a_stop_command_naming_no_update_is_dropped(h: Harness) -> None:
    _downloading(h)
    effects = h.send_command(update_id="")
    assert of_type(effects, Dropped)
    assert h.agent.phase is Phase.DOWNLOADING


def test_a_restart_after_a_late_cancel_keeps_the_note(h: Harness) -> None:
    _rebooting(h)
    h.send_command(reason="recalled")
    h.restart(BootResult("2.5.0", trial=True))
    h.verify()
    h.commit()
    assert "recalled" in h.last().error_detail
    assert state_name(h.last()) == "COMPLETED"


# -- any order -------------------------------------------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_commands_in_any_order_with_any_events_keep_every_report_legal(
    data: st.DataObject,
) -> None:
    """Commands of every kind, for any update, delivered once or again,
    among the property run's events: the cloud still accepts every report,
    numbering stays contiguous, and the snapshot stays JSON."""
    run = Run(data)
    sent: list[OTACommandEnvelope] = []
    for _ in range(data.draw(st.integers(5, 50))):
        choice = data.draw(st.sampled_from(["healthy", "anything", "command", "again"]))
        if choice == "healthy":
            run.healthy()
        elif choice == "anything":
            run.anything(data.draw(st.sampled_from(KINDS)))
        elif choice == "again" and sent:
            run.h.deliver_command(data.draw(st.sampled_from(sent)))
        else:
            kind = data.draw(st.sampled_from([CANCEL, ROLL_BACK, Kind.REQUEST_STATUS]))
            envelope = run.h.command(kind, update_id=data.draw(st.sampled_from([*UPDATES, ""])))
            sent.append(envelope)
            run.h.send_command(envelope)
        snapshot = run.h.agent.snapshot()
        assert json.loads(json.dumps(snapshot)) == snapshot
    h = run.h
    assert h.cloud_refusals == []
    for uid, last in h.last_sequence.items():
        sequences = [s.sequence for s in h.reports(uid) if not s.notification_unverified]
        assert sequences == list(range(1, last + 1))
