"""Canary selection stratified by (region, model), and the canary gate.

Selection: a canary group that is all one model in one region proves little
about the rest of the fleet, so the group is drawn from every (region, model)
stratum in proportion to its size (largest-remainder allocation), with at least
one vehicle per stratum whenever the group is at least as large as the number
of strata. The choice must look random yet be reproducible: a resumed or
retried campaign creation must pick the same vehicles. So vehicles are ranked
by SHA-256 of (seed, vehicle id), not by `random`, and the result depends
neither on the input order nor on the process.

Gate: the full rollout starts only when the canary group's success rate
(BR-OTA-041) reaches the threshold, default 95 %; failures above 5 % pause the
campaign (FMEA, "Canary Failure Rate > 5%"). Rates are compared in integer
arithmetic so 95 % of 20 is exactly 19.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from v2c.contract.errors import ValidationFailed
from v2c.handlers.ota.domain.counters import CampaignCounters

Stratum = tuple[str, str]  # (region, model)
MIN_SAMPLE: Final = 10  # FMEA: "5 of 10 rollbacks in canary" already exceeds the threshold


@dataclass(frozen=True, slots=True)
class Candidate:
    vehicle_id: str
    region: str
    model: str

    @property
    def stratum(self) -> Stratum:
        return (self.region, self.model)


def rank(seed: str, key: str) -> bytes:
    """A stable pseudo-random sort key: the same (seed, key) ranks the same everywhere."""
    return hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()


def _stratum_key(seed: str, stratum: Stratum) -> bytes:
    return rank(seed, f"stratum\x1f{stratum[0]}\x1f{stratum[1]}")


def allocate(sizes: Mapping[Stratum, int], count: int, seed: str) -> dict[Stratum, int]:
    """How many vehicles each stratum gives to a sample of `count`.

    Largest remainder on the exact proportions; ties go by a seeded order of
    the strata. If `count` covers every stratum, a stratum left with none
    takes one from the stratum most over its exact share.
    """
    total = sum(sizes.values())
    count = max(0, min(count, total))
    if count == 0:
        return {s: 0 for s in sizes}
    order = sorted(sizes, key=lambda s: _stratum_key(seed, s))
    # Exact quota of stratum s is count * n_s / total; compare numerators over `total`.
    quota = {s: count * sizes[s] for s in order}
    alloc = {s: quota[s] // total for s in order}
    leftover = count - sum(alloc.values())
    by_remainder = sorted(order, key=lambda s: -(quota[s] % total))  # stable: seeded ties
    for s in by_remainder[:leftover]:
        alloc[s] += 1
    nonempty = [s for s in order if sizes[s] > 0]
    if count >= len(nonempty):
        for s in nonempty:
            if alloc[s] == 0:
                donor = max(
                    (d for d in order if alloc[d] > 1),
                    key=lambda d: alloc[d] * total - quota[d],  # surplus over the exact share
                )
                alloc[donor] -= 1
                alloc[s] = 1
    return alloc


def stratified_sample(candidates: Iterable[Candidate], count: int, seed: str) -> list[str]:
    """Pick `count` vehicle ids (or all, if fewer) stratified by (region, model).

    The result is grouped by stratum in seeded order; within a stratum the
    vehicles are in seeded rank order, so a larger sample extends a smaller one
    of the same stratum.
    """
    strata: dict[Stratum, list[Candidate]] = defaultdict(list)
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.vehicle_id in seen:
            raise ValidationFailed(f"vehicle {candidate.vehicle_id!r} is listed twice")
        seen.add(candidate.vehicle_id)
        strata[candidate.stratum].append(candidate)
    alloc = allocate({s: len(members) for s, members in strata.items()}, count, seed)
    chosen: list[str] = []
    for stratum in sorted(strata, key=lambda s: _stratum_key(seed, s)):
        members = sorted(strata[stratum], key=lambda c: (rank(seed, c.vehicle_id), c.vehicle_id))
        chosen.extend(c.vehicle_id for c in members[: alloc[stratum]])
    return chosen


def select_canary(candidates: Iterable[Candidate], count: int, seed: str) -> list[str]:
    """The canary group: a stratified sample (FMEA: "stratified by region")."""
    return stratified_sample(candidates, count, seed)


# -- the gate -------------------------------------------------------------------


class GateVerdict(StrEnum):
    WAIT = "wait"  # not enough terminal reports yet
    PASS = "pass"  # noqa: S105 (a verdict, not a password): start the full rollout
    FAIL_PAUSE = "fail_pause"  # pause the campaign and alert


@dataclass(frozen=True, slots=True)
class GateThresholds:
    success_threshold_percent: float = 95.0
    failure_threshold_percent: float = 5.0  # above this, pause
    # Share of the (non-cancelled) canary group that must have finished before
    # the gate passes. 100 waits for everyone; a stalled straggler is flagged
    # by the 24 h stall check and can be cancelled, which removes it here.
    min_finished_percent: float = 100.0
    # Finished updates needed before the observed failure rate alone may
    # pause; below it only failures that already exceed the threshold of the
    # whole group do (those no later success can dilute).
    min_sample: int = MIN_SAMPLE


@dataclass(frozen=True, slots=True)
class GateDecision:
    verdict: GateVerdict
    reason: str
    success_rate: float | None  # percent, BR-OTA-041
    failure_rate: float | None  # percent of finished
    completed: int
    failures: int  # failed + rolled back
    finished: int
    eligible: int  # canary vehicles not cancelled
    required: int  # finished needed for PASS


def evaluate_gate(
    stats: CampaignCounters, thresholds: GateThresholds = GateThresholds()
) -> GateDecision:
    """Decide the canary gate from the canary group's counters."""
    eligible = stats.total - stats.cancelled
    finished, failures, completed = stats.finished, stats.failures, stats.completed
    required = max(1, math.ceil(eligible * thresholds.min_finished_percent / 100))
    fail_thr = thresholds.failure_threshold_percent
    ok_thr = thresholds.success_threshold_percent

    def decide(verdict: GateVerdict, reason: str) -> GateDecision:
        return GateDecision(
            verdict,
            reason,
            stats.success_rate,
            stats.failure_rate,
            completed,
            failures,
            finished,
            eligible,
            required,
        )

    counts = f"{completed} completed, {failures} failed or rolled back of {eligible}"
    if eligible == 0:
        return decide(GateVerdict.WAIT, "the canary group has no vehicles to wait for")
    if failures * 100 > fail_thr * eligible:
        return decide(
            GateVerdict.FAIL_PAUSE,
            f"failures exceed {fail_thr:g}% of the whole canary group ({counts})",
        )
    if finished >= thresholds.min_sample and failures * 100 > fail_thr * finished:
        return decide(
            GateVerdict.FAIL_PAUSE,
            f"failure rate {failures * 100 / finished:.1f}% of {finished} finished "
            f"exceeds {fail_thr:g}% ({counts})",
        )
    if finished < required:
        return decide(
            GateVerdict.WAIT, f"{finished} of {required} required canary updates finished"
        )
    rate = completed * 100 / finished
    if completed * 100 >= ok_thr * finished:
        return decide(GateVerdict.PASS, f"success rate {rate:.1f}% >= {ok_thr:g}% ({counts})")
    return decide(GateVerdict.FAIL_PAUSE, f"success rate {rate:.1f}% below {ok_thr:g}% ({counts})")
