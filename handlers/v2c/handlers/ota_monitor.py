"""Lambda function `ota_monitor`, on a one-minute schedule (EventBridge), and the campaign planner.

Advances running campaigns whose dispatch waits on the clock (a scheduled
start, a maintenance window, a dispatcher whose lease expired), and flags
campaigns without progress for 24 h as stalled, with an alert. Reports are
what normally drive a campaign; this is the backstop, so its period bounds
how long any campaign can sit idle by mistake. Each pass also plans
campaigns left `planning` by a lost planner and keeps the fleet index compact.

The same function is the planner: the API invokes it asynchronously with
`{"v2c": "plan_campaign", "campaign_id": ...}` (`planning_queue.LambdaPlanning`)
for a campaign too large to plan while answering; it plans that campaign only.

The event is EventBridge's `Scheduled Event` (only its `time` is read, for
the log); the context is Lambda's, which Powertools' `inject_lambda_context`
requires. Locally `v2c api serve` builds both (`MonitorSchedule`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from v2c.handlers.emf_counts import per_invocation
from v2c.handlers.ota.campaigns.planning_queue import PLAN_EVENT
from v2c.handlers.ota.config import default_services

logger = Logger(service="v2c-ota-monitor")


@logger.inject_lambda_context
@per_invocation  # one EMF line per service for the invocation's counts
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("v2c") == PLAN_EVENT:
        campaign = default_services().campaigns.plan(str(event["campaign_id"]))
        logger.info("planned", extra={"campaign_id": campaign.campaign_id})
        return {"campaign_id": campaign.campaign_id, "status": campaign.status.value}
    summary = default_services().campaigns.monitor()
    logger.info("monitor pass", extra={**summary, "scheduled_at": event.get("time")})
    return summary
