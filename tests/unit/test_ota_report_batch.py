"""The batch decisions of status ingest: folding an update's reports, summing
counter moves, cutting transactions. Pure: no store, no service."""

from __future__ import annotations

import random
from collections import Counter as Tally

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v2c.handlers.ota.domain.counters import Counter, CounterDeltas, CounterMoves
from v2c.handlers.ota.domain.report_batch import (
    TRANSACTION_ITEMS,
    Report,
    fold_reports,
    pack_chunks,
)
from v2c.handlers.ota.domain.update_state import (
    Outcome,
    UpdateRecord,
    UpdateState,
    apply_status,
)
from v2c.v1.ota_pb2 import OTAStatus

S = OTAStatus.State
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200)
PATH = (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING, S.REBOOTING, S.VERIFYING)
NOTIFIED = UpdateRecord(UpdateState.NOTIFIED)


def status(state: int, sequence: int, **fields: object) -> OTAStatus:
    return OTAStatus(vehicle_id="VIN-1", update_id="u", state=state, sequence=sequence, **fields)  # type: ignore[arg-type]


def reports(*statuses: OTAStatus) -> list[Report]:
    return [Report(index, s) for index, s in enumerate(statuses)]


def test_reports_are_applied_in_sequence_order_and_repeats_are_duplicates() -> None:
    batch = reports(
        status(S.DOWNLOADED, 3),
        status(S.ACCEPTED, 1),
        status(S.DOWNLOADING, 2),
        status(S.DOWNLOADING, 2),
        status(S.ACCEPTED, 1),
    )
    folded = fold_reports(NOTIFIED, batch)
    assert [(s.report.index, s.transition.outcome) for s in folded.steps] == [
        (1, Outcome.APPLIED),
        (4, Outcome.DUPLICATE),
        (2, Outcome.APPLIED),
        (3, Outcome.DUPLICATE),
        (0, Outcome.APPLIED),
    ]
    assert folded.after == UpdateRecord(UpdateState.DOWNLOADED, 3)
    assert folded.changed
    assert not folded.deltas  # notified and downloaded are both in progress
    assert not folded.finished
    assert not folded.affects_rates
    assert not folded.repeats_the_end


def test_an_ending_fold_moves_one_unit_and_a_later_repeat_asks_for_the_reaction() -> None:
    ending = [status(state, n) for n, state in enumerate((*PATH, S.COMPLETED), start=1)]
    folded = fold_reports(NOTIFIED, reports(*reversed(ending)))
    assert folded.after == UpdateRecord(UpdateState.COMPLETED, 7)
    assert folded.deltas == CounterDeltas(in_progress=-1, completed=1)
    assert folded.finished
    assert folded.affects_rates
    again = fold_reports(folded.after, reports(ending[-1], ending[0]))
    assert [s.transition.outcome for s in again.steps] == [Outcome.STALE, Outcome.DUPLICATE]
    assert not again.changed
    assert again.repeats_the_end  # a redelivery after a crash: react again


def test_a_confirmed_rejection_comes_after_the_vehicles_own_reports() -> None:
    rejection = status(
        S.REJECTED,
        1,
        reason=OTAStatus.SIGNATURE_VERIFICATION_FAILED,
        notification_unverified=True,
    )
    alone = fold_reports(NOTIFIED, [Report(0, rejection, confirmed_rejection=True)])
    assert alone.after == UpdateRecord(UpdateState.REJECTED, 0, decided_by_cloud=True)
    assert alone.deltas == CounterDeltas(in_progress=-1, failed=1)

    took_it = fold_reports(
        NOTIFIED,
        [Report(0, rejection, confirmed_rejection=True), Report(1, status(S.ACCEPTED, 1))],
    )
    assert took_it.after == UpdateRecord(UpdateState.ACCEPTED, 1)
    assert [s.transition.outcome for s in took_it.steps] == [Outcome.APPLIED, Outcome.UNVERIFIED]


reported_states = st.sampled_from([*PATH, S.COMPLETED, S.FAILED, S.ROLLED_BACK, S.PAUSED])


@SETTINGS
@given(
    st.lists(st.tuples(reported_states, st.integers(1, 12)), max_size=12),
    st.randoms(use_true_random=False),
)
def test_a_fold_ends_where_the_reports_one_by_one_in_sequence_order_end(
    sent: list[tuple[int, int]], rnd: random.Random
) -> None:
    """Whatever order a batch brings them in, with repeats: the record and its
    counter move are those of applying the reports one at a time, in order."""
    statuses = [status(state, sequence) for state, sequence in sent]
    by_sequence = sorted(range(len(statuses)), key=lambda i: (statuses[i].sequence, i))
    expected, moved = NOTIFIED, Tally[str]()
    for index in by_sequence:
        transition = apply_status(expected, statuses[index])
        expected = transition.after
        moved.update(transition.deltas.nonzero())
    shuffled = reports(*statuses)
    rnd.shuffle(shuffled)
    folded = fold_reports(NOTIFIED, shuffled)
    assert folded.after == expected
    assert folded.deltas.nonzero() == {k: v for k, v in moved.items() if v}


def test_counter_moves_are_summed_per_counter_and_wave() -> None:
    done = CounterDeltas(in_progress=-1, completed=1)
    failed = CounterDeltas(in_progress=-1, failed=1)
    moves = CounterMoves.summed([(done, 0), (done, 1), (failed, 1), (CounterDeltas(), 1)])
    assert moves.campaign == {Counter.IN_PROGRESS: -3, Counter.COMPLETED: 2, Counter.FAILED: 1}
    assert moves.waves == {
        0: {Counter.IN_PROGRESS: -1, Counter.COMPLETED: 1},
        1: {Counter.IN_PROGRESS: -2, Counter.COMPLETED: 1, Counter.FAILED: 1},
    }
    assert not CounterMoves.summed([(CounterDeltas(), None)])


def test_100_records_of_two_campaigns_take_two_transactions() -> None:
    campaigns = ["a"] * 50 + ["b"] * 50
    chunks = pack_chunks(campaigns)
    assert [len(c) for c in chunks] == [98, 2]
    assert {campaigns[i] for i in chunks[1]} == {"b"}


@SETTINGS
@given(st.lists(st.sampled_from(["", "a", "b", "c"]), max_size=400), st.integers(2, 120))
def test_every_chunk_fits_one_transaction_and_every_record_is_in_one_chunk(
    campaigns: list[str], limit: int
) -> None:
    chunks = pack_chunks(campaigns, limit)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(campaigns)))
    for chunk in chunks:
        distinct = {campaigns[i] for i in chunk} - {""}
        assert 0 < len(chunk) + len(distinct) <= limit
    # a campaign spans several chunks only when its records fill them
    spans = Tally(c for chunk in chunks for c in {campaigns[i] for i in chunk} - {""})
    for campaign, count in spans.items():
        records = campaigns.count(campaign)
        assert count <= 1 + records // (limit - 1) + 1


def test_a_chunk_cannot_be_smaller_than_a_record_and_its_counters() -> None:
    with pytest.raises(ValueError, match="chunk"):
        pack_chunks(["a"], 1)
    assert TRANSACTION_ITEMS == 100
