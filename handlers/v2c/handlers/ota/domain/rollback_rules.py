"""Rollback rules: why a rollback happened (BR-OTA-031) and where it may go (BR-OTA-032).

The trigger is recorded on every rollback row and leads the campaign's status
reason (`"failure_rate: ..."`), so an operator reading a rolled-back campaign
sees at once whether a person, the failure rate, the vehicles' own health
checks or a timeout stopped it, and a rollback sent later for the same
campaign (a vehicle that finished installing after the rollback began) can
carry the same trigger without another store.

An automatic rollback from the failure threshold is classified by what the
failures were (`automatic_trigger`):

* `health_check`: most (at least half the) failures are vehicles that rolled themselves back.
  A vehicle reports ROLLED_BACK only when its own health check undid the
  update: the bootloader gave up on the new slot (BOOT_FAILURE) or the
  post-install verification failed (POST_INSTALL_VERIFICATION_FAILED), so
  during a rollout the campaign's rolled_back counter counts exactly those;
* `timeout`: most failures are updates the monitor timed out for good
  (no report before their deadline, no retry left);
* `failure_rate`: the rate over finished updates crossed the threshold on a
  sample large enough to mean something (BR-OTA-019);
* `error_threshold`: the failures alone already exceed the threshold as a
  share of the whole campaign, before the sample is large enough for a rate:
  an error count no later success can dilute.

`manual` is a fleet manager's; a caller that decides a rollback on other
grounds passes its own trigger (`CampaignService.rollback`).

A rollback may only return a vehicle to a version it ran (BR-OTA-032): one
its update history shows it came from or completed, never any version the
registry happens to hold for the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final, Protocol

from v2c.handlers.ota.domain.campaign_health import HealthPolicy
from v2c.handlers.ota.domain.counters import CampaignCounters
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.v1 import command_pb2


class RollbackTrigger(StrEnum):
    MANUAL = "manual"
    FAILURE_RATE = "failure_rate"
    HEALTH_CHECK = "health_check"
    TIMEOUT = "timeout"
    ERROR_THRESHOLD = "error_threshold"

    def to_proto(self) -> command_pb2.RollbackTrigger.ValueType:
        return _TO_PROTO[self]


_TO_PROTO: Final = {
    RollbackTrigger.MANUAL: command_pb2.ROLLBACK_TRIGGER_MANUAL,
    RollbackTrigger.FAILURE_RATE: command_pb2.ROLLBACK_TRIGGER_FAILURE_RATE,
    RollbackTrigger.HEALTH_CHECK: command_pb2.ROLLBACK_TRIGGER_HEALTH_CHECK,
    RollbackTrigger.TIMEOUT: command_pb2.ROLLBACK_TRIGGER_TIMEOUT,
    RollbackTrigger.ERROR_THRESHOLD: command_pb2.ROLLBACK_TRIGGER_ERROR_THRESHOLD,
}


def automatic_trigger(counters: CampaignCounters, policy: HealthPolicy) -> RollbackTrigger:
    """The trigger of a rollback the failure threshold decided (see the module doc)."""
    failures, finished = counters.failures, counters.finished
    if failures and counters.rolled_back * 2 >= failures:
        return RollbackTrigger.HEALTH_CHECK
    if failures and counters.timed_out * 2 >= failures:
        return RollbackTrigger.TIMEOUT
    threshold = policy.failure_threshold_percent
    if finished >= policy.min_sample and failures * 100 > threshold * finished:
        return RollbackTrigger.FAILURE_RATE
    return RollbackTrigger.ERROR_THRESHOLD


def rollback_status_reason(trigger: RollbackTrigger, reason: str) -> str:
    """The campaign's status reason while and after it rolls back."""
    return f"{trigger.value}: {reason}"


def trigger_of(status_reason: str) -> RollbackTrigger | None:
    """The trigger a `rollback_status_reason` leads with, or None."""
    head, sep, _ = status_reason.partition(":")
    if not sep:
        return None
    try:
        return RollbackTrigger(head)
    except ValueError:
        return None


class PastUpdate(Protocol):
    """What the history check reads of one of the vehicle's updates."""

    @property
    def state(self) -> UpdateState: ...
    @property
    def from_version(self) -> str: ...
    @property
    def to_version(self) -> str: ...


def versions_ran(history: Iterable[PastUpdate], factory_version: str = "") -> frozenset[str]:
    """Every version the vehicle is on record as having run: the version it
    came from and the one it reached, for each update that completed (or
    completed and was reverted by a campaign rollback: the version it came
    from), and its factory version when one is recorded."""
    seen = {factory_version} if factory_version else set()
    for update in history:
        if update.state is UpdateState.COMPLETED:
            seen.update(v for v in (update.from_version, update.to_version) if v)
        elif update.state is UpdateState.ROLLED_BACK and update.from_version:
            seen.add(update.from_version)
    return frozenset(seen)
