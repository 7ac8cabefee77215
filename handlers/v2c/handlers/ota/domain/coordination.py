"""One active update per vehicle across campaigns (BR-OTA-014/023/033): which update goes first.

A vehicle runs one update at a time; its agent rejects a second verified one
with REJECTED UPDATE_IN_PROGRESS. The cloud prevents that instead of
provoking it: before it notifies a vehicle (dispatch, or a waiting update's
recheck), it weighs the update against the vehicle's other records
(`arbitrate`):

* an update of **equal or higher rank in flight** (notified up to verifying,
  DEFERRED included) keeps the vehicle: the new one WAITs (recorded, not
  notified; notified by a later monitor pass once the vehicle is free);
* one of **strictly lower rank in flight, not yet installing**, is
  SUPERSEDEd: cancelled (counted `cancelled` in its own campaign, never
  failed; the vehicle gets a signed CANCEL_UPDATE) and the new one goes;
* one **installing** (installing, rebooting, verifying) is never
  interrupted, whatever the ranks: the new one waits;
* updates **queued** for the vehicle (WAITING, or PENDING for a retry)
  form a queue by rank, then by age: a live queued update ahead of this
  one makes it wait; one behind it does not (it waits for this one in turn).
  A queued update of a campaign that is not running (`live` False: paused,
  say) holds nobody up.

Rank: the campaign's priority (BR-OTA-014, low to emergency), below a
fleet manager's update of this one vehicle (`EXPLICIT_RANK`), below a
rollback (`ROLLBACK_RANK`, BR-OTA-033: a rollback restores a known-good
version and goes before everything).

Pure: values in, a verdict out. The services read the records and carry it out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from v2c.handlers.ota.domain.campaign_rules import Priority
from v2c.handlers.ota.domain.update_state import IN_FLIGHT, INSTALL_PHASE, QUEUED, UpdateState

PRIORITY_RANK: Final[Mapping[Priority, int]] = {
    Priority.LOW: 1,
    Priority.NORMAL: 2,
    Priority.HIGH: 3,
    Priority.CRITICAL: 4,
    Priority.EMERGENCY: 5,
}
EXPLICIT_RANK: Final = 6  # a device update a fleet manager asked for, vehicle by vehicle
ROLLBACK_RANK: Final = 7


@dataclass(frozen=True, slots=True)
class Claim:
    """One update's claim on the vehicle."""

    update_id: str
    campaign_id: str
    rank: int
    state: UpdateState
    queued_at_ms: int = 0  # its place in the queue among equals (the record's creation)
    live: bool = True  # its campaign may notify now (a queued update of a paused one may not)

    def describe(self) -> str:
        owner = f"campaign {self.campaign_id}" if self.campaign_id else "a device update"
        return f"update {self.update_id} of {owner} ({self.state.value}, rank {self.rank})"

    def ahead_of(self, other: Claim) -> bool:
        """Queue order: higher rank first, then older, then by id (a total order)."""
        return (-self.rank, self.queued_at_ms, self.update_id) < (
            -other.rank,
            other.queued_at_ms,
            other.update_id,
        )


class Verdict(StrEnum):
    GO = "go"  # notify now
    WAIT = "wait"  # record, do not notify; a later pass looks again
    SUPERSEDE = "supersede"  # cancel `victims`, then notify


@dataclass(frozen=True, slots=True)
class Arbitration:
    verdict: Verdict
    reason: str
    victims: tuple[Claim, ...] = ()


def arbitrate(new: Claim, others: Iterable[Claim]) -> Arbitration:
    """May `new` be notified, given the vehicle's other records?"""
    victims: list[Claim] = []
    for other in others:
        if other.update_id == new.update_id or other.state not in IN_FLIGHT | QUEUED:
            continue
        if other.state in QUEUED:
            if other.live and other.ahead_of(new):
                return Arbitration(Verdict.WAIT, f"queued behind {other.describe()}")
            continue
        if other.state in INSTALL_PHASE:
            return Arbitration(Verdict.WAIT, f"vehicle installing {other.describe()}")
        if other.rank >= new.rank:
            return Arbitration(Verdict.WAIT, f"vehicle busy with {other.describe()}")
        victims.append(other)
    if victims:
        named = ", ".join(v.describe() for v in victims)
        return Arbitration(Verdict.SUPERSEDE, f"supersedes {named}", tuple(victims))
    return Arbitration(Verdict.GO, "vehicle free")


def priority_rank(priority: Priority) -> int:
    return PRIORITY_RANK[priority]
