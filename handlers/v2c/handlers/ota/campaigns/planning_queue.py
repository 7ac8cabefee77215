"""Where a campaign creation hands a large campaign's planning: after the answer.

Creation answers within its budget by persisting the campaign as
`planning` and submitting its id here; the planner
(`CampaignService.plan`) then resolves, plans and moves it to `created`.
Three ways to run it, chosen by the composition root (`ota.config`):

* `LambdaPlanning` (AWS): an asynchronous invoke (`InvocationType=Event`)
  of the monitor function with `{"v2c": "plan_campaign", "campaign_id": ...}`
  (`ota_monitor`); Lambda retries a failed invoke twice;
* `BackgroundPlanning` (a local process, e.g. `v2c api serve`): a worker
  thread of the process that answered;
* `PlanningRequests` (the default; tests): only records the ids, so a test
  drives planning itself.

Whatever runs it, the monitor's pass is the backstop: it plans every
campaign still `planning` whose planner lease is free or expired (a lost
invoke, a process that died mid-plan), so a submission is a hint to start
now, never the only copy of the work.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

PLAN_EVENT: Final = "plan_campaign"  # the "v2c" field of the planner's invoke event


class PlanningQueue(Protocol):
    def submit(self, campaign_id: str) -> None:
        """Plan this campaign soon; never raises (the monitor is the backstop)."""
        ...


@dataclass
class PlanningRequests:
    """Records the ids submitted; planning happens when someone calls the planner."""

    submitted: list[str] = field(default_factory=list)

    def submit(self, campaign_id: str) -> None:
        self.submitted.append(campaign_id)


def plan_event(campaign_id: str) -> dict[str, str]:
    """The event the planner function receives (`ota_monitor.lambda_handler`)."""
    return {"v2c": PLAN_EVENT, "campaign_id": campaign_id}


class LambdaPlanning:
    """An asynchronous invoke of the planner function per campaign."""

    def __init__(self, client: Any, function_name: str) -> None:
        self._client = client
        self._function = function_name

    def submit(self, campaign_id: str) -> None:
        try:
            self._client.invoke(
                FunctionName=self._function,
                InvocationType="Event",
                Payload=json.dumps(plan_event(campaign_id)).encode(),
            )
        except (BotoCoreError, ClientError) as exc:
            logger.warning(
                "planner not invoked; the monitor will plan the campaign",
                extra={"campaign_id": campaign_id, "error": str(exc)},
            )


class BackgroundPlanning:
    """One worker thread of this process plans the campaigns submitted, in order.

    `bind` names the planner after the service that owns it is built (the
    service is built from the dependencies this queue is one of)."""

    def __init__(self, plan: Callable[[str], object] | None = None) -> None:
        self._plan = plan
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def bind(self, plan: Callable[[str], object]) -> None:
        self._plan = plan

    def submit(self, campaign_id: str) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="campaign-planner", daemon=True
                )
                self._thread.start()
        self._queue.put(campaign_id)

    def _work(self) -> None:
        while (campaign_id := self._queue.get()) is not None:
            try:
                if self._plan is not None:
                    self._plan(campaign_id)
            except Exception:  # the monitor plans it again; the worker must live on
                logger.exception("planning failed", extra={"campaign_id": campaign_id})
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def join(self) -> None:
        """Wait until every submitted campaign was planned (tests, shutdown)."""
        self._queue.join()

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(timeout=10)
                self._thread = None
