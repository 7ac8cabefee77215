"""A batch of status reports written: a few transactions, exact counters, lost races read again.

The status service hands over every record its batch names, read once, and
the reports about each. Here each record is decided
(`report_batch.fold_reports`: the reports in sequence order, repeats and
stale ones changing nothing), the changed ones are cut into transactions
(`report_batch.pack_chunks`: at most 100 items, the records plus one summed
counter write per campaign among them) and each chunk is written with every
record conditioned on the state and sequence it was read with.

Why counters stay exact: a chunk is one transaction, so its records and the
counter moves they cause are written together or not at all (a crash
between two chunks leaves the first written and the second not: redelivered,
the first's reports are duplicates and the second's apply). A record another
writer moved in between (a second gateway with the same report, a cancel)
fails its condition, the whole chunk is refused, and only the records that
moved are read and decided again; the counter writes are recomputed from
the new decisions, so a report applied by the other writer is counted by
the other writer alone. The failures by reason ride in the same counter
writes (`Decided.deltas`: the record's reason before and after).

A record that loses `attempts` races is given up (`Conflict`, "keeps
changing", as a single report's would be) and the rest of its chunk still
goes in; a chunk refused for any other reason (throttled, a concurrent
transaction on the campaign item) fails its records with that transient
error, for the caller to retry.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from v2c.contract.errors import Conflict, NotFound, TransientError, V2CError
from v2c.handlers.ota.concurrency import CONFLICT_RETRIES, StaleRecords
from v2c.handlers.ota.domain.counters import CounterDeltas, CounterMoves
from v2c.handlers.ota.domain.report_batch import (
    TRANSACTION_ITEMS,
    Folded,
    Report,
    fold_reports,
    pack_chunks,
)
from v2c.handlers.ota.domain.update_state import TERMINAL, Outcome, UpdateState, reason_moves
from v2c.handlers.ota.stores import CampaignStore, CampaignWrite, UpdateKey, UpdateStore
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.v1.ota_pb2 import OTAStatus

STARTED: Final = frozenset({UpdateState.ACCEPTED, UpdateState.DOWNLOADING})


def record_fields(status: OTAStatus, now_ms: int, update: VehicleUpdate) -> dict[str, Any]:
    """What an applied report writes besides the machine: its reason, error,
    progress and durations (the bytes downloaded never go back)."""
    reason = OTAStatus.Reason.Name(status.reason) if status.reason else ""
    fields: dict[str, Any] = {
        "updated_at_ms": now_ms,
        "reason": reason,
        "error_detail": status.error_detail[:500],
        "progress_percent": min(100, status.progress_percent),
        "bytes_downloaded": max(update.bytes_downloaded, status.bytes_downloaded),
    }
    for name in ("download_duration_ms", "install_duration_ms", "total_duration_ms"):
        value = getattr(status, name)
        if value:
            fields[name] = value
    if status.installed_version:
        fields["installed_version"] = status.installed_version
    return fields


@dataclass(frozen=True, slots=True)
class Decided:
    """One record and what the batch's reports make of it."""

    before: VehicleUpdate  # as read (last read, after a lost race)
    after: VehicleUpdate  # as it is to be stored (== before: nothing to write)
    folded: Folded

    @property
    def key(self) -> UpdateKey:
        return (self.before.vehicle_id, self.before.update_id)

    @property
    def deltas(self) -> CounterDeltas:
        """The fold's counter move, and the failure reasons the record moves
        from `before` to `after` (the machine's fold knows no reasons)."""
        b, a = self.before, self.after
        return self.folded.deltas.with_reasons(reason_moves(b.state, b.reason, a.state, a.reason))


@dataclass
class Recorded:
    """The batch's records once written: each decided record (stored as
    `after`) or the error that kept it from being written."""

    done: dict[UpdateKey, Decided] = field(default_factory=dict)
    failed: dict[UpdateKey, V2CError] = field(default_factory=dict)


def decide(update: VehicleUpdate, reports: Sequence[Report], now_ms: int) -> Decided:
    """Fold the reports into the record, and the record's fields with them,
    one applied report after another, as single reports would have left it."""
    folded = fold_reports(update.machine, reports)
    after = update
    for step in folded.steps:
        if step.transition.outcome is not Outcome.APPLIED:
            continue
        changes = record_fields(step.report.status, now_ms, after)
        state = step.transition.after.state
        if state in STARTED and not after.started_at_ms:
            changes["started_at_ms"] = now_ms
        if state in TERMINAL:
            changes["completed_at_ms"] = now_ms
        after = after.with_machine(step.transition.after, **changes)
    return Decided(update, after, folded)


class ReportRecorder:
    def __init__(
        self,
        campaigns: CampaignStore,
        updates: UpdateStore,
        clock: Callable[[], float],
        attempts: int = CONFLICT_RETRIES,
        chunk_items: int = TRANSACTION_ITEMS,
    ) -> None:
        self._campaigns = campaigns
        self._updates = updates
        self._clock = clock
        self._attempts = attempts
        self._chunk_items = chunk_items

    def record(
        self,
        found: Mapping[UpdateKey, VehicleUpdate],
        reports: Mapping[UpdateKey, Sequence[Report]],
    ) -> Recorded:
        """Decide every record of `reports` (each read in `found`) and write
        the changed ones, chunk by chunk."""
        now_ms = int(self._clock() * 1000)
        recorded = Recorded()
        changed: list[Decided] = []
        for key, about in reports.items():
            decided = decide(found[key], about, now_ms)
            if decided.folded.changed:
                changed.append(decided)
            else:
                recorded.done[key] = decided
        for chunk in pack_chunks([d.before.campaign_id for d in changed], self._chunk_items):
            pending = {changed[i].key: changed[i] for i in chunk}
            self._write_chunk(pending, reports, now_ms, recorded)
        return recorded

    def _write_chunk(
        self,
        pending: dict[UpdateKey, Decided],
        reports: Mapping[UpdateKey, Sequence[Report]],
        now_ms: int,
        recorded: Recorded,
    ) -> None:
        lost: defaultdict[UpdateKey, int] = defaultdict(int)
        while pending:
            for key in [k for k, d in pending.items() if not d.folded.changed]:
                recorded.done[key] = pending.pop(key)  # decided again: nothing left to write
            if not pending:
                return
            try:
                self._updates.save_reported(
                    [(d.before, d.after) for d in pending.values()],
                    self._counter_writes(pending.values(), now_ms),
                )
            except StaleRecords as exc:
                moved = set(exc.keys).intersection(pending) or set(pending)
                for key in moved:
                    lost[key] += 1
                    if lost[key] >= self._attempts:
                        del pending[key]
                        recorded.failed[key] = Conflict(
                            f"update {key[1]} of {key[0]} keeps changing; try again"
                        )
                self._decide_again(moved.intersection(pending), pending, reports, now_ms, recorded)
                continue
            except TransientError as exc:
                recorded.failed.update(dict.fromkeys(pending, exc))
                return
            recorded.done.update(pending)
            return

    def _decide_again(
        self,
        keys: Collection[UpdateKey],
        pending: dict[UpdateKey, Decided],
        reports: Mapping[UpdateKey, Sequence[Report]],
        now_ms: int,
        recorded: Recorded,
    ) -> None:
        """Read the records that moved and decide their reports on what they are now."""
        if not keys:
            return
        fresh = self._updates.find_reported(keys)
        for key in keys:
            update = fresh.found.get(key)
            if update is None:
                del pending[key]
                recorded.failed[key] = fresh.unread.get(key) or NotFound(
                    f"no update {key[1]!r} for vehicle {key[0]}"
                )
            else:
                pending[key] = decide(update, reports[key], now_ms)

    def _counter_writes(self, decided: Collection[Decided], now_ms: int) -> list[CampaignWrite]:
        """One write per campaign of the chunk: its records' moves, summed per
        counter and wave (even when they sum to nothing: progress is marked)."""
        by_campaign: defaultdict[str, list[Decided]] = defaultdict(list)
        for d in decided:
            if d.before.campaign_id:
                by_campaign[d.before.campaign_id].append(d)
        return [
            self._campaigns.count_reports(
                campaign_id,
                CounterMoves.summed((d.deltas, d.before.wave) for d in records),
                now_ms,
            )
            for campaign_id, records in sorted(by_campaign.items())
        ]
