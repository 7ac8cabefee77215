"""The rollout plan: every target in dispatch order, cut into waves.

A campaign is planned once, at creation: the targets are put in the order
they will be notified and cut into waves (canary then everyone; green then
blue; one wave per stage; or one wave). Between two gated waves the next
starts only when the previous one passes the gate (`canary.evaluate_gate`),
so a bad release stops at the canary, the green cohort or the first stage.

The order is a pure function of the targets and a seed (the campaign id),
so a resumed creation or a re-plan yields exactly the same waves, and the
plan can be stored once and read back slice by slice while dispatching
100,000 vehicles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from v2c.handlers.ota.domain.campaign_rules import CampaignSpec, Strategy
from v2c.handlers.ota.domain.canary import Candidate, rank, select_canary, stratified_sample
from v2c.handlers.ota.domain.rollout import blue_green_split, staged_waves

SINGLE_WAVE: Final = frozenset({Strategy.IMMEDIATE, Strategy.SCHEDULED})


@dataclass(frozen=True, slots=True)
class Target:
    """A vehicle as the plan keeps it: enough to stratify and to notify."""

    vehicle_id: str
    region: str
    model: str
    installed_version: str = ""

    def to_json(self) -> list[str]:
        return [self.vehicle_id, self.region, self.model, self.installed_version]

    @classmethod
    def from_json(cls, row: list[str]) -> Target:
        return cls(*row[:4])


@dataclass(frozen=True, slots=True)
class Wave:
    name: str
    end: int  # exclusive index into the plan's order
    gated: bool  # the next wave waits for this one's gate


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    targets: tuple[Target, ...]  # dispatch order
    waves: tuple[Wave, ...]

    @property
    def size(self) -> int:
        return len(self.targets)

    def wave_sizes(self) -> list[int]:
        starts = [0, *(w.end for w in self.waves[:-1])]
        return [w.end - s for w, s in zip(self.waves, starts, strict=True)]

    def wave_of(self, index: int) -> int:
        for number, wave in enumerate(self.waves):
            if index < wave.end:
                return number
        raise IndexError(index)


def _candidates(targets: Sequence[Target]) -> list[Candidate]:
    return [Candidate(t.vehicle_id, t.region, t.model) for t in targets]


def _shuffled(targets: Sequence[Target], seed: str) -> list[Target]:
    return sorted(targets, key=lambda t: rank(seed, t.vehicle_id))


def _ordered(by_id: dict[str, Target], ids: Sequence[str]) -> list[Target]:
    return [by_id[v] for v in ids]


def plan_rollout(spec: CampaignSpec, targets: Sequence[Target], seed: str) -> RolloutPlan:
    """Order and cut `targets` for `spec`'s strategy (targets beyond
    `rollout_percentage` are left out by a stratified sample)."""
    by_id = {t.vehicle_id: t for t in targets}
    pool = [by_id[v] for v in sorted(by_id)]
    keep = spec.rollout_count(len(pool))
    if keep < len(pool):
        chosen = set(stratified_sample(_candidates(pool), keep, f"{seed}/rollout"))
        pool = [t for t in pool if t.vehicle_id in chosen]
    n = len(pool)
    if n == 0:
        return RolloutPlan((), ())
    strategy = spec.deployment_strategy
    if strategy is Strategy.CANARY:
        canary_ids = select_canary(_candidates(pool), spec.canary_count(n), f"{seed}/canary")
        canary = set(canary_ids)
        rest = [t for t in _shuffled(pool, seed) if t.vehicle_id not in canary]
        order = _ordered(by_id, canary_ids) + rest
        waves = [Wave("canary", len(canary_ids), gated=True)]
        if rest:
            waves.append(Wave("rollout", n, gated=False))
        return RolloutPlan(tuple(order), tuple(waves))
    if strategy is Strategy.BLUE_GREEN:
        green, blue = blue_green_split(_candidates(pool), spec.green_percentage, f"{seed}/green")
        order = _ordered(by_id, green) + _shuffled(_ordered(by_id, blue), seed)
        waves = [Wave("green", len(green), gated=True)]
        if blue:
            waves.append(Wave("blue", n, gated=False))
        return RolloutPlan(tuple(order), tuple(waves))
    shuffled = _shuffled(pool, seed)
    if strategy in SINGLE_WAVE:
        return RolloutPlan(tuple(shuffled), (Wave("all", n, gated=False),))
    sizes = staged_waves(n, spec.stage_percentages)
    ends: list[Wave] = []
    end = 0
    for number, size in enumerate(sizes):
        end += size
        ends.append(Wave(f"stage-{number + 1}", end, gated=number < len(sizes) - 1))
    return RolloutPlan(tuple(shuffled), tuple(ends))
