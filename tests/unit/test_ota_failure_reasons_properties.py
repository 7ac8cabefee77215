"""Failures by reason on the campaign item equal the statistics' fold over the
records, after any reports, repeats, retries, timeouts, cancels and rollbacks."""

from __future__ import annotations

import contextlib
from collections import Counter as Tally
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ota_service_harness import Ota

from v2c.contract.errors import V2CError
from v2c.handlers.ota import stats
from v2c.handlers.ota.domain.counters import CounterDeltas, CounterMoves
from v2c.handlers.ota.domain.update_state import (
    FAILURE_STATES,
    FROM_PROTO,
    UpdateState,
    failure_reason,
    reason_moves,
)
from v2c.handlers.ota.stats import StatsService
from v2c.v1.ota_pb2 import OTAStatus

SETTINGS = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
STATES = sorted(UpdateState)
REASONS = ["", "FLASH_WRITE_FAILURE", "BOOT_FAILURE", "cancel", "timed out while notified"]
VEHICLE_STATES = sorted(FROM_PROTO)
VEHICLE_REASONS = list(OTAStatus.Reason.values())


def fold(records: list[tuple[UpdateState, str]]) -> dict[str, int]:
    """What `StatsService.campaign` folds the records into."""
    tally: Tally[str] = Tally()
    for state, reason in records:
        if state in stats.FAILED_STATES:
            tally[reason or state.value] += 1
    return dict(tally)


def test_the_failure_states_are_those_the_statistics_count() -> None:
    assert FAILURE_STATES == stats.FAILED_STATES
    assert failure_reason(UpdateState.TIMED_OUT, "") == "timed_out"  # named by its state
    assert failure_reason(UpdateState.FAILED, "BOOT_FAILURE") == "BOOT_FAILURE"
    assert failure_reason(UpdateState.COMPLETED, "BOOT_FAILURE") is None


def test_a_change_that_keeps_the_reason_and_the_failure_moves_nothing() -> None:
    assert reason_moves(UpdateState.DOWNLOADING, "", UpdateState.INSTALLING, "x") == ()
    assert reason_moves(UpdateState.REJECTED, "", UpdateState.FAILED, "rejected") == ()
    assert reason_moves(UpdateState.REJECTED, "", UpdateState.FAILED, "") == (
        ("rejected", -1),
        ("failed", 1),
    )
    assert reason_moves(UpdateState.FAILED, "A", UpdateState.PENDING, "retry") == (("A", -1),)
    assert reason_moves(UpdateState.FAILED, "A", UpdateState.ROLLED_BACK, "A") == ()
    assert CounterDeltas().with_reasons(()) == CounterDeltas()
    assert not CounterDeltas()
    assert CounterDeltas(reasons=(("A", 1),))  # a reason alone is something to write


@SETTINGS
@given(
    st.lists(st.tuples(st.sampled_from(STATES), st.sampled_from(REASONS)), min_size=1, max_size=8),
    st.lists(
        st.tuples(st.integers(0, 7), st.sampled_from(STATES), st.sampled_from(REASONS)),
        max_size=30,
    ),
    st.integers(1, 5),
)
def test_summed_reason_moves_keep_the_fold_of_the_records(
    start: list[tuple[UpdateState, str]],
    changes: list[tuple[int, UpdateState, str]],
    batch: int,
) -> None:
    """Pure: any record changes, summed `batch` at a time as the batch writer
    sums them, move the counts from the fold of the first records to that of
    the last."""
    records = list(start)
    counts: Tally[str] = Tally(fold(records))
    pending: list[tuple[CounterDeltas, int | None]] = []
    for index, state, reason in changes:
        at = index % len(records)
        before = records[at]
        records[at] = (state, reason)
        pending.append((CounterDeltas().with_reasons(reason_moves(*before, state, reason)), 0))
        if len(pending) == batch:
            counts.update(CounterMoves.summed(pending).reasons)
            pending.clear()
    counts.update(CounterMoves.summed(pending).reasons)
    assert {r: n for r, n in counts.items() if n} == fold(records)


@dataclass(frozen=True)
class Reports:
    """A batch: (vehicle, state, sequence, reason), with repeats."""

    items: list[tuple[int, int, int, int]]


@dataclass(frozen=True)
class Act:
    what: str  # "retry", "timeout", "cancel"
    vehicle: int = 0


Step = Reports | Act

VEHICLES = 4
reports = st.builds(
    Reports,
    st.lists(
        st.tuples(
            st.integers(0, VEHICLES - 1),
            st.sampled_from(VEHICLE_STATES),
            st.integers(1, 12),
            st.sampled_from(VEHICLE_REASONS),
        ),
        min_size=1,
        max_size=12,
    ),
)
acts = st.builds(
    Act, st.sampled_from(["retry", "retry", "timeout", "cancel"]), st.integers(0, VEHICLES - 1)
)


@SETTINGS
@given(st.lists(st.one_of(reports, reports, acts), min_size=1, max_size=8), st.booleans())
def test_the_campaign_counts_failures_by_reason_as_the_statistics_fold_them(
    steps: list[Step], auto_rollback: bool
) -> None:
    """Through the services and the in-memory stores: batches of reports
    (repeats, reordered, every reason), retries, the monitor's timeouts, a
    cancel, and the campaign's own pause or rollback on its failure rate."""
    ota = Ota()
    campaign_id = ota.campaign(
        VEHICLES,
        deployment_strategy="immediate",
        batch_size=VEHICLES,
        max_concurrent_updates=VEHICLES,
        max_retries=2,
        auto_rollback=auto_rollback,
    )
    update_id = ota.campaigns.start(campaign_id).release.update_id
    vehicles = ota.notified()
    statistics = StatsService(ota.campaign_store, ota.update_store)
    for step in steps:
        if isinstance(step, Reports):
            ota.status.apply_batch(
                [
                    OTAStatus(
                        vehicle_id=vehicles[v % len(vehicles)],
                        update_id=update_id,
                        state=state,  # type: ignore[arg-type]
                        sequence=sequence,
                        reason=reason,  # type: ignore[arg-type]
                    )
                    for v, state, sequence, reason in step.items
                ]
            )
        elif step.what == "retry":
            record = ota.update_store.get(vehicles[step.vehicle % len(vehicles)], update_id)
            with contextlib.suppress(V2CError):  # not failed, or out of retries: refused
                ota.devices.retry(record.device_update_id)
        elif step.what == "timeout":
            ota.clock.advance(61 * 60)
            ota.campaigns.monitor()
        else:
            with contextlib.suppress(V2CError):  # already ended
                ota.campaigns.cancel(campaign_id)
        campaign = ota.campaigns.get(campaign_id)
        folded = statistics.campaign(campaign_id)["failures_by_reason"]
        assert campaign.failures_by_reason == folded
        assert sum(folded.values()) == campaign.counters.failures
        event(f"{len(folded)} reasons, campaign {campaign.status.value}")
        states = {u.state.value for u in ota.update_store.for_campaign(campaign_id)}
        event(f"{step.what if isinstance(step, Act) else 'reports'}: {sorted(states)}")
