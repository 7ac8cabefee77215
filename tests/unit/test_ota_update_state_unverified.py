"""The cloud's record and reports about notifications the vehicle could not verify.

Such a report names its update by an id read from unverified bytes: applied
on the vehicle's word, a forged notification reusing a real id would end the
real update. `apply_status` never applies it; `apply_confirmed_rejection` is
for the one case the status ingest has checked itself (the vehicle rejected
exactly what the cloud signed).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from v2c.handlers.ota.domain.counters import CounterDeltas
from v2c.handlers.ota.domain.update_state import (
    Outcome,
    UpdateRecord,
    UpdateState,
    apply_confirmed_rejection,
    apply_status,
    is_unverified,
)
from v2c.v1.ota_pb2 import OTAStatus

S = OTAStatus
U = UpdateState


def report(state: int, sequence: int, *, flagged: bool, reason: int = 0) -> OTAStatus:
    return OTAStatus(
        update_id="upd-1",
        state=state,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        sequence=sequence,
        notification_unverified=flagged,
    )


def test_a_flagged_rejection_changes_nothing() -> None:
    record = UpdateRecord(U.NOTIFIED)
    status = report(S.REJECTED, 1, flagged=True, reason=S.SIGNATURE_VERIFICATION_FAILED)
    transition = apply_status(record, status)
    assert transition.outcome is Outcome.UNVERIFIED
    assert transition.after == record
    assert not transition.changed
    assert transition.deltas == CounterDeltas()


def test_an_unflagged_signature_rejection_is_unverified_too() -> None:
    """An agent from before the flag: a signature rejection is about bytes the
    vehicle could not attribute to any update, by definition."""
    status = report(S.REJECTED, 1, flagged=False, reason=S.SIGNATURE_VERIFICATION_FAILED)
    assert is_unverified(status)
    assert apply_status(UpdateRecord(U.NOTIFIED), status).outcome is Outcome.UNVERIFIED
    other = report(S.REJECTED, 1, flagged=False, reason=S.INSUFFICIENT_STORAGE)
    assert not is_unverified(other)
    assert apply_status(UpdateRecord(U.NOTIFIED), other).outcome is Outcome.APPLIED


@given(
    st.sampled_from(list(UpdateState)),
    st.integers(0, 50),
    st.booleans(),
    st.sampled_from([s for s in S.State.values() if s]),
    st.integers(1, 60),
)
def test_no_flagged_report_ever_changes_a_record(
    state: UpdateState, last: int, by_cloud: bool, reported: int, sequence: int
) -> None:
    record = UpdateRecord(state, last, decided_by_cloud=by_cloud)
    transition = apply_status(record, report(reported, sequence, flagged=True))
    assert transition.outcome is Outcome.UNVERIFIED
    assert transition.after == record


def test_a_confirmed_rejection_ends_a_notified_update_as_the_clouds_conclusion() -> None:
    record = UpdateRecord(U.NOTIFIED, last_sequence=4, retries=1)
    transition = apply_confirmed_rejection(record)
    assert transition.outcome is Outcome.APPLIED
    assert transition.after == replace(record, state=U.REJECTED, decided_by_cloud=True)
    assert transition.after.last_sequence == 4  # the report's number is not this update's
    assert (transition.deltas.in_progress, transition.deltas.failed) == (-1, 1)
    # and the vehicle's own final word, should it hold the update after all, replaces it
    completed = apply_status(transition.after, report(S.COMPLETED, 5, flagged=False))
    assert (completed.outcome, completed.after.state) == (Outcome.APPLIED, U.COMPLETED)


@pytest.mark.parametrize(
    "state", [U.ACCEPTED, U.DEFERRED, U.DOWNLOADING, U.PAUSED, U.INSTALLING, U.PENDING]
)
def test_a_confirmed_rejection_never_ends_an_update_the_vehicle_took(state: UpdateState) -> None:
    record = UpdateRecord(state, last_sequence=3)
    transition = apply_confirmed_rejection(record)
    assert transition.outcome is Outcome.UNVERIFIED
    assert transition.after == record


@pytest.mark.parametrize("state", [U.COMPLETED, U.FAILED, U.REJECTED, U.CANCELLED])
def test_a_confirmed_rejection_after_the_end_changes_nothing(state: UpdateState) -> None:
    record = UpdateRecord(state, last_sequence=3)
    transition = apply_confirmed_rejection(record)
    assert transition.outcome is Outcome.TERMINAL
    assert transition.after == record
