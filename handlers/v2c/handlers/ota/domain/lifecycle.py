"""Campaign statuses and which fleet-manager command may move a campaign where.

    planning ──(planned)──▶ created ──start──▶ in_progress ──(all finished)──▶ completed
       │ └──(no eligible target)──▶ planning_failed      │    ▲
       │                                               pause  resume
       │                                                  ▼    │
       │                                                paused
       └─ planning, created, in_progress, paused ──cancel──▶ cancelled
          in_progress / paused / completed ──rollback──▶ rolling_back ──▶ rolled_back
    created (requires approval, not approved) ──reject──▶ rejected

`planning`: creation answered before the targets were resolved and planned
(a large fleet: `campaigns.planning`); the planner moves the campaign on
within seconds. A start asked for meanwhile is recorded and carried out
when the campaign is planned (the campaign stays `planning` until then);
approve waits for `created` (409 until then), since who is targeted and in
which waves is what an approver approves; so a campaign that requires
approval cannot queue a start either. Cancel may stop a campaign still
planning: the planner's final write is conditioned on `planning`.

`requires_approval` gates `start`: a campaign that needs approval cannot
start until `approve` recorded who approved it and when. `reject` is the
approver's other answer (PRD E2-US6 AC2): the campaign ends `rejected`, a
final status, before anyone was notified; so it is open exactly where
approve is (created, needing approval, not approved yet) and nowhere else:
an approved or running campaign is stopped with cancel, which also moves
the updates already under way. Pure: the service
reads the campaign, asks here, and writes the answer with a condition on the
status it read, so two racing commands cannot both win.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from v2c.contract.errors import Conflict


class CampaignStatus(StrEnum):
    PLANNING = "planning"
    CREATED = "created"
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    PLANNING_FAILED = "planning_failed"
    REJECTED = "rejected"  # the approver said no: final, nobody was notified


class CampaignCommand(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    APPROVE = "approve"
    REJECT = "reject"
    ROLLBACK = "rollback"
    COMPLETE = "complete"
    FINISH_ROLLBACK = "finish_rollback"
    FINISH_PLANNING = "finish_planning"  # the planner, never a fleet manager
    FAIL_PLANNING = "fail_planning"


C = CampaignStatus
ALLOWED: Final[dict[CampaignCommand, tuple[frozenset[CampaignStatus], CampaignStatus]]] = {
    CampaignCommand.START: (frozenset({C.CREATED, C.PLANNING}), C.IN_PROGRESS),
    CampaignCommand.PAUSE: (frozenset({C.IN_PROGRESS}), C.PAUSED),
    CampaignCommand.RESUME: (frozenset({C.PAUSED}), C.IN_PROGRESS),
    CampaignCommand.CANCEL: (
        frozenset({C.PLANNING, C.CREATED, C.IN_PROGRESS, C.PAUSED}),
        C.CANCELLED,
    ),
    CampaignCommand.APPROVE: (frozenset({C.CREATED}), C.CREATED),
    CampaignCommand.REJECT: (frozenset({C.CREATED}), C.REJECTED),
    CampaignCommand.ROLLBACK: (
        frozenset({C.IN_PROGRESS, C.PAUSED, C.COMPLETED}),
        C.ROLLING_BACK,
    ),
    CampaignCommand.COMPLETE: (frozenset({C.IN_PROGRESS}), C.COMPLETED),
    CampaignCommand.FINISH_ROLLBACK: (frozenset({C.ROLLING_BACK}), C.ROLLED_BACK),
    CampaignCommand.FINISH_PLANNING: (frozenset({C.PLANNING}), C.CREATED),
    CampaignCommand.FAIL_PLANNING: (frozenset({C.PLANNING}), C.PLANNING_FAILED),
}
# Awaiting the approver's answer: approve or reject.
REVIEWS: Final = frozenset({CampaignCommand.APPROVE, CampaignCommand.REJECT})
# Not finished: a firmware cannot be retired under one, and `v2c campaign watch` keeps watching.
ACTIVE: Final = frozenset({C.PLANNING, C.CREATED, C.IN_PROGRESS, C.PAUSED, C.ROLLING_BACK})
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
    if status is C.PLANNING and command in REVIEWS:
        raise Conflict(
            f"cannot {command.value} the campaign yet: it is still planning (its targets are "
            f"being resolved); {command.value} it once its status is created"
        )
    if status not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise Conflict(f"cannot {command.value} a campaign that is {status.value} (only {allowed})")
    if command is CampaignCommand.START and requires_approval and not approved:
        raise Conflict("the campaign requires approval before it can start")
    if command is CampaignCommand.START and status is C.PLANNING:
        return C.PLANNING  # queued: the planner starts it once planned
    if command in REVIEWS and (approved or not requires_approval):
        if not approved:
            raise Conflict("the campaign needs no approval")
        if command is CampaignCommand.REJECT:
            raise Conflict("the campaign is already approved; cancel it to stop it")
        raise Conflict("the campaign is already approved")
    return target
