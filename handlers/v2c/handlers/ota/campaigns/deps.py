"""What the campaign, status and device services are built from (injected at the edge).

Every collaborator is a protocol (`stores`, `ports`, `notifier`), so the
composition root chooses DynamoDB and S3 (`config.build_services`), moto
(the integration tests) or the in-memory stores (`in_memory.py`, the unit
tests) without the services knowing which.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from v2c.handlers.ota.concurrency import CONFLICT_RETRIES
from v2c.handlers.ota.notifier import NotificationSender
from v2c.handlers.ota.ports import Alerts, EventPublisher, PackageCatalog
from v2c.handlers.ota.stores import (
    CampaignStore,
    FleetDirectory,
    PlanStore,
    RollbackLog,
    UpdateStore,
)
from v2c.handlers.signing.base import Signer

DAY_MS: Final = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class CampaignConfig:
    """The limits of running campaigns."""

    # A dispatcher that crashed holds the campaign this long at most; one
    # advance (at most `max_batches_per_advance` batches) must fit well inside.
    lease_ms: int = 60_000
    # Bounds one advance, so one Lambda invocation never runs away with a
    # 100,000-vehicle wave; the next report or the monitor continues.
    max_batches_per_advance: int = 50
    # A release is re-signed when it has less than this left: a staged
    # campaign outlives the validity of the manifest it started with.
    resign_before_ms: int = DAY_MS
    # Lost optimistic-concurrency races before answering 409 "try again".
    conflict_retries: int = CONFLICT_RETRIES


@dataclass
class CampaignServiceDeps:
    campaigns: CampaignStore
    updates: UpdateStore
    plans: PlanStore
    fleet: FleetDirectory
    packages: PackageCatalog
    signer: Signer
    notifier: NotificationSender
    events: EventPublisher
    alerts: Alerts
    rollbacks: RollbackLog
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    config: CampaignConfig = field(default_factory=CampaignConfig)
