"""Campaign statuses and which fleet-manager command may move a campaign where.

    created ──start──▶ in_progress ──(all finished)──▶ completed
       │                 │    ▲
       │              pause  resume
       │                 ▼    │
       │               paused ──────┐
       ├──cancel──▶ cancelled ◀─────┤ (cancel from created, in_progress, paused)
       └─ in_progress / paused / completed ──rollback──▶ rolling_back ──▶ rolled_back

`requires_approval` gates `start`: a campaign that needs approval cannot
start until `approve` recorded who approved it and when. Pure: the service
reads the campaign, asks here, and writes the answer with a condition on the
status it read, so two racing commands cannot both win.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from v2c.contract.errors import Conflict


class CampaignStatus(StrEnum):
    CREATED = "created"
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


class CampaignCommand(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    APPROVE = "approve"
    ROLLBACK = "rollback"
    COMPLETE = "complete"
    FINISH_ROLLBACK = "finish_rollback"


C = CampaignStatus
ALLOWED: Final[dict[CampaignCommand, tuple[frozenset[CampaignStatus], CampaignStatus]]] = {
    CampaignCommand.START: (frozenset({C.CREATED}), C.IN_PROGRESS),
    CampaignCommand.PAUSE: (frozenset({C.IN_PROGRESS}), C.PAUSED),
    CampaignCommand.RESUME: (frozenset({C.PAUSED}), C.IN_PROGRESS),
    CampaignCommand.CANCEL: (frozenset({C.CREATED, C.IN_PROGRESS, C.PAUSED}), C.CANCELLED),
    CampaignCommand.APPROVE: (frozenset({C.CREATED}), C.CREATED),
    CampaignCommand.ROLLBACK: (
        frozenset({C.IN_PROGRESS, C.PAUSED, C.COMPLETED}),
        C.ROLLING_BACK,
    ),
    CampaignCommand.COMPLETE: (frozenset({C.IN_PROGRESS}), C.COMPLETED),
    CampaignCommand.FINISH_ROLLBACK: (frozenset({C.ROLLING_BACK}), C.ROLLED_BACK),
}
ACTIVE: Final = frozenset({C.CREATED, C.IN_PROGRESS, C.PAUSED, C.ROLLING_BACK})
DISPATCHING: Final = frozenset({C.IN_PROGRESS})


def next_status(
    status: CampaignStatus,
    command: CampaignCommand,
    *,
    requires_approval: bool = False,
    approved: bool = False,
) -> CampaignStatus:
    """The status after `command`, or `Conflict` (HTTP 409) naming why not."""
    sources, target = ALLOWED[command]
    if status not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise Conflict(f"cannot {command.value} a campaign that is {status.value} (only {allowed})")
    if command is CampaignCommand.START and requires_approval and not approved:
        raise Conflict("the campaign requires approval before it can start")
    if command is CampaignCommand.APPROVE and (approved or not requires_approval):
        raise Conflict(
            "the campaign is already approved" if approved else "the campaign needs no approval"
        )
    return target
