"""A batch of status reports, as decisions: what each record becomes, and how the writes are cut.

The status function is fed by a queue in batches of up to 100 reports
(ADR 0009), in no particular order, with repeats. Deciding them one by one
against a record read once per report would cost a read and a transaction
per report; deciding them here costs nothing, so the service reads every
record once, asks this module, and writes the answers in a few transactions.

* `fold_reports`: every report about one update, applied to its record in
  sequence order with the same rules as a single report
  (`update_state.apply_status`), so a repeat or an older report inside the
  batch is a DUPLICATE or STALE exactly as it would be across batches. A
  rejection the cloud confirmed (`apply_confirmed_rejection`) is numbered
  apart from the update's reports, so it has no place in their order: it
  comes after them, where the vehicle's own word (it took the update) makes
  it change nothing, as it would had it arrived last.
* The counter move of a record is that of its first state to its last
  (`CounterDeltas.move`), which is the sum of the moves of every step in
  between; a campaign's moves are summed over its records
  (`CounterMoves.summed`).
* `pack_chunks`: the changed records cut into transactions of at most
  `limit` items, where each chunk holds its records plus one counter write
  per campaign among them; records of one campaign are kept together so a
  campaign's counters are written as few times as the limit allows.

Pure: values in, decisions out. Nothing here knows how a record is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from v2c.handlers.ota.domain.counters import CounterDeltas
from v2c.handlers.ota.domain.update_state import (
    COUNTER_OF,
    FROM_PROTO,
    TERMINAL,
    Outcome,
    Transition,
    UpdateRecord,
    UpdateState,
    apply_confirmed_rejection,
    apply_status,
)
from v2c.v1 import ota_pb2

# DynamoDB's TransactWriteItems holds at most 100 items.
TRANSACTION_ITEMS: Final = 100


@dataclass(frozen=True, slots=True)
class Report:
    """One report of the batch about one update."""

    index: int  # the report's place in the batch: how the caller finds its answer
    status: ota_pb2.OTAStatus
    # An unverified-notification rejection whose digest is of what the cloud
    # signed for this update (the caller checked): recorded as the cloud's
    # conclusion, never by the report's own state and sequence.
    confirmed_rejection: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    report: Report
    transition: Transition


@dataclass(frozen=True, slots=True)
class Folded:
    """What the batch's reports do to one record."""

    before: UpdateRecord
    after: UpdateRecord
    steps: tuple[Step, ...]  # in the order applied

    @property
    def changed(self) -> bool:
        """Whether there is anything to write."""
        return self.after != self.before

    @property
    def deltas(self) -> CounterDeltas:
        """The counter move of the whole fold: first state to last."""
        return CounterDeltas.move(COUNTER_OF[self.before.state], COUNTER_OF[self.after.state])

    @property
    def finished(self) -> bool:
        """The update ended in this batch."""
        return self.before.state not in TERMINAL and self.after.state in TERMINAL

    @property
    def affects_rates(self) -> bool:
        """The success / failure rates moved: the campaign must look at its thresholds."""
        return self.deltas.affects_rates

    @property
    def repeats_the_end(self) -> bool:
        """A report repeats the one that ended the update (a redelivery after a
        crash between the write and the campaign's reaction): the reaction is
        due again, since the first delivery may not have got to it."""
        return self.after.state in TERMINAL and any(
            s.transition.outcome is Outcome.DUPLICATE for s in self.steps
        )


def in_order(reports: Sequence[Report]) -> list[Report]:
    """The update's own reports by sequence (then by arrival, so a repeat is
    the duplicate of the first), then the confirmed rejections."""
    return sorted(reports, key=lambda r: (r.confirmed_rejection, r.status.sequence, r.index))


def fold_reports(record: UpdateRecord, reports: Sequence[Report]) -> Folded:
    """Apply every report about one update to its record, one after another."""
    current = record
    steps: list[Step] = []
    for report in in_order(reports):
        if report.confirmed_rejection:
            transition = apply_confirmed_rejection(current)
        else:
            transition = apply_status(current, report.status)
        steps.append(Step(report, transition))
        current = transition.after
    return Folded(record, current, tuple(steps))


def pack_chunks(campaigns: Sequence[str], limit: int = TRANSACTION_ITEMS) -> list[list[int]]:
    """Cut records (given by their campaign ids, "" for none) into
    transactions: each chunk lists record positions, and its records plus one
    counter write per distinct campaign among them fit in `limit` items.

    Records are taken campaign by campaign, so a campaign spans two chunks
    only when its records do not fit in what is left of one."""
    if limit < 2:
        raise ValueError("a chunk must hold a record and its campaign's counters")
    order = sorted(range(len(campaigns)), key=lambda i: (campaigns[i], i))
    chunks: list[list[int]] = []
    chunk: list[int] = []
    seen: set[str] = set()
    used = 0
    for position in order:
        campaign = campaigns[position]
        cost = 1 + (1 if campaign and campaign not in seen else 0)
        if used + cost > limit:
            chunks.append(chunk)
            chunk, seen, used = [], set(), 0
            cost = 1 + (1 if campaign else 0)
        chunk.append(position)
        used += cost
        if campaign:
            seen.add(campaign)
    if chunk:
        chunks.append(chunk)
    return chunks


# What a vehicle reports while it still works on an update it has not begun
# installing: stopping it now costs nothing.
S = UpdateState
_BEFORE_INSTALL: Final = frozenset({S.ACCEPTED, S.DEFERRED, S.DOWNLOADING, S.PAUSED, S.DOWNLOADED})


def missed_the_cancel(folded: Folded) -> bool:
    """A vehicle still working (before installing) on an update the cloud
    cancelled or timed out: it never received the signed cancel (offline longer
    than its broker session lasted, or the publish was dead-lettered). Its
    report is ignored as after the end (`Outcome.TERMINAL`), and the cloud
    must send the cancel again, or the vehicle installs an update its fleet
    manager stopped."""
    if folded.after.state not in (S.CANCELLED, S.TIMED_OUT):
        return False
    return any(
        step.transition.outcome is Outcome.TERMINAL
        and FROM_PROTO.get(step.report.status.state) in _BEFORE_INSTALL
        for step in folded.steps
    )
