"""Vehicle registry lookups for enrichment (make, model, year), cached.

A vehicle's make, model and year do not change between two samples, and a
lookup per message would double the store's request rate: entries (including
"not registered") are cached for `ttl_s`. Failures are not cached, so the
next message tries again.

Enrichment is best effort: a registry that is down must not lose telemetry,
so the service stores the record without make/model/year (they can be joined
later by vehicle_id) and counts the failure.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import TransientError
from v2c.handlers.telemetry.model import VehicleInfo

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DEFAULT_TTL_S: Final = 300.0
DEFAULT_MAX_ENTRIES: Final = 50_000


class VehicleRegistry(Protocol):
    def lookup(self, vehicle_id: str) -> VehicleInfo | None:
        """The vehicle's info, None if not registered; TransientError if unknown now."""
        ...


class StaticRegistry:
    """A fixed registry: unit tests, and a gateway run without AWS."""

    def __init__(self, vehicles: Mapping[str, VehicleInfo] | None = None) -> None:
        self._vehicles = dict(vehicles or {})

    def lookup(self, vehicle_id: str) -> VehicleInfo | None:
        return self._vehicles.get(vehicle_id)


class DynamoVehicleRegistry:
    """Reads `make`, `model`, `year` of the registry table's item for a vehicle."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self._table = table

    def lookup(self, vehicle_id: str) -> VehicleInfo | None:
        try:
            answer = self._ddb.get_item(
                TableName=self._table,
                Key={"vehicle_id": {"S": vehicle_id}},
                # Names by placeholder: YEAR is a DynamoDB reserved word.
                ProjectionExpression="#make, #model, #year",
                ExpressionAttributeNames={"#make": "make", "#model": "model", "#year": "year"},
            )
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"vehicle registry lookup failed: {exc}") from exc
        item = answer.get("Item")
        if not item:
            return None
        try:
            return VehicleInfo(
                make=str(item["make"]["S"]),
                model=str(item["model"]["S"]),
                year=int(item["year"]["N"]),
            )
        except (KeyError, ValueError):
            return None  # registered, but without the attributes: nothing to add


class CachedRegistry:
    """Any registry behind a TTL cache (an LRU bounded to `max_entries`)."""

    def __init__(
        self,
        inner: VehicleRegistry,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, VehicleInfo | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.misses = 0

    def lookup(self, vehicle_id: str) -> VehicleInfo | None:
        now = self._clock()
        with self._lock:
            cached = self._entries.get(vehicle_id)
            if cached is not None and cached[0] > now:
                self._entries.move_to_end(vehicle_id)
                return cached[1]
            self.misses += 1
        info = self._inner.lookup(vehicle_id)  # outside the lock: I/O
        with self._lock:
            self._entries[vehicle_id] = (now + self._ttl_s, info)
            self._entries.move_to_end(vehicle_id)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return info
