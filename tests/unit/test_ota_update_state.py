"""The per-vehicle update state machine: sequences, transitions, commands, counter moves."""

from __future__ import annotations

import pytest

from v2c.handlers.ota.domain.counters import CampaignCounters, CounterDeltas
from v2c.handlers.ota.domain.update_state import (
    Command,
    Outcome,
    UpdateRecord,
    UpdateState,
    apply_command,
    apply_report,
    apply_status,
)
from v2c.v1 import ota_pb2

State = ota_pb2.OTAStatus.State
S = UpdateState

HAPPY_PATH = [
    State.ACCEPTED,
    State.DOWNLOADING,
    State.PAUSED,
    State.DOWNLOADING,
    State.DOWNLOADED,
    State.INSTALLING,
    State.REBOOTING,
    State.VERIFYING,
    State.COMPLETED,
]


def _notified() -> UpdateRecord:
    return apply_command(UpdateRecord(), Command.NOTIFY).after


def test_happy_path_moves_pending_to_in_progress_to_completed() -> None:
    counters = CampaignCounters(pending=1)
    notify = apply_command(UpdateRecord(), Command.NOTIFY)
    record, counters = notify.after, counters.apply(notify.deltas)
    assert counters == CampaignCounters(in_progress=1)
    for sequence, state in enumerate(HAPPY_PATH, start=1):
        transition = apply_report(record, state, sequence)
        assert transition.outcome is Outcome.APPLIED
        record, counters = transition.after, counters.apply(transition.deltas)
    assert record.state is S.COMPLETED
    assert record.last_sequence == len(HAPPY_PATH)
    assert counters == CampaignCounters(completed=1)


def test_duplicate_report_is_a_reported_no_op() -> None:
    record = apply_report(_notified(), State.ACCEPTED, 1).after
    transition = apply_report(record, State.ACCEPTED, 1)
    assert transition.outcome is Outcome.DUPLICATE
    assert not transition.changed
    assert not transition.deltas


def test_stale_report_does_not_move_the_state_back() -> None:
    record = apply_report(_notified(), State.DOWNLOADED, 5).after
    transition = apply_report(record, State.DOWNLOADING, 4)
    assert transition.outcome is Outcome.STALE
    assert transition.after.state is S.DOWNLOADED


def test_report_that_skips_lost_intermediate_reports_is_applied() -> None:
    transition = apply_report(_notified(), State.COMPLETED, 9)
    assert transition.outcome is Outcome.APPLIED
    assert transition.deltas == CounterDeltas(in_progress=-1, completed=1)
    assert transition.affects_rates


def test_progress_report_in_the_same_state_advances_only_the_sequence() -> None:
    record = apply_report(_notified(), State.DOWNLOADING, 2).after
    transition = apply_report(record, State.DOWNLOADING, 3)
    assert transition.outcome is Outcome.APPLIED
    assert transition.after == UpdateRecord(S.DOWNLOADING, last_sequence=3)
    assert not transition.deltas


def test_back_from_install_phase_to_download_phase_is_invalid() -> None:
    record = apply_report(_notified(), State.INSTALLING, 6).after
    transition = apply_report(record, State.DOWNLOADING, 7)
    assert transition.outcome is Outcome.INVALID
    assert transition.after == record  # the sequence is not consumed either


def test_unspecified_state_is_invalid() -> None:
    assert apply_report(_notified(), State.STATE_UNSPECIFIED, 1).outcome is Outcome.INVALID


def test_terminal_state_absorbs_later_reports() -> None:
    record = apply_report(_notified(), State.COMPLETED, 9).after
    transition = apply_report(record, State.ROLLED_BACK, 10)
    assert transition.outcome is Outcome.TERMINAL
    assert transition.after.state is S.COMPLETED


def test_rejected_update_counts_as_failed() -> None:
    transition = apply_report(_notified(), State.REJECTED, 1)
    assert transition.deltas == CounterDeltas(in_progress=-1, failed=1)


def test_deferred_update_stays_in_progress() -> None:
    transition = apply_report(_notified(), State.DEFERRED, 1)
    assert transition.after.state is S.DEFERRED
    assert not transition.deltas


def test_apply_status_reads_state_and_sequence_from_the_message() -> None:
    status = ota_pb2.OTAStatus(state=State.ACCEPTED, sequence=1, vehicle_id="VIN-X")
    assert apply_status(_notified(), status).after.state is S.ACCEPTED


# -- commands ----------------------------------------------------------------


def test_notify_applies_only_to_a_pending_update() -> None:
    accepted = apply_report(UpdateRecord(), State.ACCEPTED, 1).after  # report raced the write
    assert apply_command(accepted, Command.NOTIFY).outcome is Outcome.NOOP


@pytest.mark.parametrize(
    "state", [S.PENDING, S.NOTIFIED, S.ACCEPTED, S.DEFERRED, S.DOWNLOADING, S.PAUSED, S.DOWNLOADED]
)
def test_cancel_before_installation_cancels(state: UpdateState) -> None:
    transition = apply_command(UpdateRecord(state), Command.CANCEL)
    assert transition.outcome is Outcome.APPLIED
    assert transition.after.state is S.CANCELLED


@pytest.mark.parametrize("state", [S.INSTALLING, S.REBOOTING, S.VERIFYING])
def test_cancel_during_installation_is_refused(state: UpdateState) -> None:
    assert apply_command(UpdateRecord(state), Command.CANCEL).outcome is Outcome.REFUSED


def test_vehicle_outcome_overrides_a_cloud_cancel_that_raced_the_install() -> None:
    downloading = apply_report(_notified(), State.DOWNLOADING, 3).after
    cancelled = apply_command(downloading, Command.CANCEL).after
    assert apply_report(cancelled, State.INSTALLING, 4).outcome is Outcome.TERMINAL
    transition = apply_report(cancelled, State.COMPLETED, 9)
    assert transition.outcome is Outcome.APPLIED
    assert transition.deltas == CounterDeltas(cancelled=-1, completed=1)
    assert apply_report(transition.after, State.FAILED, 10).outcome is Outcome.TERMINAL


def test_timeout_fails_the_update_until_the_vehicle_says_otherwise() -> None:
    record = apply_report(_notified(), State.DOWNLOADING, 2).after
    timed_out = apply_command(record, Command.TIME_OUT, max_retries=0)
    assert timed_out.after.state is S.TIMED_OUT
    assert timed_out.deltas == CounterDeltas(in_progress=-1, timed_out=1)
    late = apply_report(timed_out.after, State.COMPLETED, 9)
    assert late.deltas == CounterDeltas(timed_out=-1, completed=1)


def test_pending_update_cannot_time_out() -> None:
    assert apply_command(UpdateRecord(), Command.TIME_OUT).outcome is Outcome.NOOP


def test_retry_reschedules_a_failed_update_up_to_max_retries() -> None:
    record = apply_report(_notified(), State.FAILED, 4).after
    for attempt in range(1, 4):
        transition = apply_command(record, Command.RETRY, max_retries=3)
        assert transition.outcome is Outcome.APPLIED
        expected = UpdateRecord(S.PENDING, last_sequence=record.last_sequence, retries=attempt)
        assert transition.after == expected  # the vehicle keeps numbering across attempts
        assert transition.deltas == CounterDeltas(failed=-1, pending=1)
        record = apply_report(transition.after, State.FAILED, 4 + attempt).after
    refused = apply_command(record, Command.RETRY, max_retries=3)
    assert refused.outcome is Outcome.REFUSED
    assert "retry limit" in refused.reason


def test_only_failed_updates_are_retried() -> None:
    completed = apply_report(_notified(), State.COMPLETED, 9).after
    assert apply_command(completed, Command.RETRY).outcome is Outcome.REFUSED


def test_revert_moves_a_completed_update_to_rolled_back() -> None:
    completed = apply_report(_notified(), State.COMPLETED, 9).after
    transition = apply_command(completed, Command.REVERT)
    assert transition.deltas == CounterDeltas(completed=-1, rolled_back=1)
    assert apply_command(transition.after, Command.REVERT).outcome is Outcome.NOOP
    assert apply_command(_notified(), Command.REVERT).outcome is Outcome.REFUSED


def test_counter_deltas_render_as_an_add_expression_map() -> None:
    assert CounterDeltas(in_progress=-1, completed=1).nonzero() == {
        "in_progress": -1,
        "completed": 1,
    }
    with pytest.raises(ValueError, match="negative"):
        CampaignCounters().apply(CounterDeltas(pending=-1))
