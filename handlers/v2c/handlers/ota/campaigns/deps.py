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

from v2c.contract.errors import ConfigurationError
from v2c.handlers.ota.campaigns.planning_queue import PlanningQueue, PlanningRequests
from v2c.handlers.ota.concurrency import CONFLICT_RETRIES
from v2c.handlers.ota.domain.report_batch import TRANSACTION_ITEMS
from v2c.handlers.ota.notifier import NotificationSender
from v2c.handlers.ota.ports import Alerts, EventPublisher, PackageCatalog
from v2c.handlers.ota.stores import (
    CampaignStore,
    FleetDirectory,
    PlanStore,
    RollbackLog,
    UpdateStore,
)
from v2c.handlers.ota.vehicle_commands import CommandSender
from v2c.handlers.signing.base import Signer

DAY_MS: Final = 24 * 3600 * 1000
# A chunk's records plus the campaign item fill one transaction (100 items).
MAX_NOTIFY_CHUNK: Final = TRANSACTION_ITEMS - 1


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
    # Creation answers within ~0.5 s: it resolves the targets while answering
    # only when the fleet index to read is at most this big (~15 bytes a
    # vehicle: ~8,500 vehicles, read and filtered in ~0.1-0.3 s on a loaded
    # 2-core machine), and plans them while answering only when they are at
    # most this many; otherwise the campaign answers `planning` and is
    # planned after the answer (`v2c bench creation` measures both).
    inline_index_bytes: int = 128 * 1024
    inline_max_targets: int = 2_000
    # A planner holds the campaign this long at most (planning 100,000
    # targets takes seconds); a planner that died is replaced after it.
    planning_lease_ms: int = 60_000
    # Campaigns the monitor plans in one pass (each takes up to seconds).
    max_plans_per_pass: int = 4
    # Targets a dispatch chunk notifies: one transaction holds the chunk's
    # records and the campaign item, and DynamoDB takes at most 100 items.
    notify_chunk: int = MAX_NOTIFY_CHUNK

    def __post_init__(self) -> None:
        if not 1 <= self.notify_chunk <= MAX_NOTIFY_CHUNK:
            raise ConfigurationError(
                f"notify_chunk must be 1-{MAX_NOTIFY_CHUNK}, not {self.notify_chunk}"
            )


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
    # Signed commands on the vehicles' own topics (cancel, roll back, status).
    commands: CommandSender
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    config: CampaignConfig = field(default_factory=CampaignConfig)
    # Where creation hands a large campaign's planning (`planning_queue`).
    planning: PlanningQueue = field(default_factory=PlanningRequests)
