"""Lambda function `ota_monitor`, on a one-minute schedule (EventBridge).

Advances running campaigns whose dispatch waits on the clock (a scheduled
start, a maintenance window, a dispatcher whose lease expired), and flags
campaigns without progress for 24 h as stalled, with an alert. Reports are
what normally drive a campaign; this is the backstop, so its period bounds
how long any campaign can sit idle by mistake.

The event is EventBridge's `Scheduled Event` (only its `time` is read, for
the log); the context is Lambda's, which Powertools' `inject_lambda_context`
requires. Locally `v2c api serve` builds both (`MonitorSchedule`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from v2c.handlers.ota.config import default_services

logger = Logger(service="v2c-ota-monitor")


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    summary = default_services().campaigns.monitor()
    logger.info("monitor pass", extra={**summary, "scheduled_at": event.get("time")})
    return summary
