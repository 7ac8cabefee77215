"""What the campaign services are built from (injected at the edge)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from v2c.handlers.ota.campaigns.plan_store import PlanStore
from v2c.handlers.ota.campaigns.repository import CampaignRepository
from v2c.handlers.ota.campaigns.rollback_log import RollbackLog
from v2c.handlers.ota.fleet import FleetRegistry
from v2c.handlers.ota.notifier import Notifier
from v2c.handlers.ota.ports import Alerts, EventPublisher, PackageCatalog
from v2c.handlers.ota.updates.repository import UpdateRepository
from v2c.handlers.signing.base import Signer


@dataclass
class CampaignServiceDeps:
    campaigns: CampaignRepository
    updates: UpdateRepository
    plans: PlanStore
    fleet: FleetRegistry
    packages: PackageCatalog
    signer: Signer
    notifier: Notifier
    events: EventPublisher
    alerts: Alerts
    rollbacks: RollbackLog
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
