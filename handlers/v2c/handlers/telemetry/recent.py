"""A vehicle's newest telemetry samples, read back from the operational table.

One `Query` of the vehicle's partition, sort key (`epoch#sequence`)
descending, `Limit` the page: newest first, never more than asked, whatever
the vehicle ever sent. What `DynamoRecordStore.item` wrote comes back as
DynamoDB's low-level attribute values (numbers as text); `telemetry_point`
is the one place that turns an item into plain JSON values, so the API
and its tests read the same numbers the store wrote (an integer stays an
integer, `52.5` a float). TTL deletion is lazy, so an item past its
`expires_at` is dropped here, as the store's docstring asks of readers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import NotFound
from v2c.handlers.aws_errors import translate

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MAX_SAMPLES: Final = 500
# Numeric signals copied when present: stored name -> answered name.
NUMBERS: Final = {
    "epoch": "epoch",
    "speed_kmh": "speed_kmh",
    "rpm": "rpm",
    "battery_voltage_v": "battery_voltage_v",
    "state_of_charge_pct": "state_of_charge_pct",
    "coolant_temp_c": "coolant_temp_c",
    "fuel_level_pct": "fuel_level_pct",
    "odometer_km": "odometer_km",
    "diagnostic_flags": "diagnostic_flags",
    "received_at": "received_at_ms",
    "clock_skew_ms": "clock_skew_ms",
}
TEXTS: Final = ("gear", "region", "path")
FLAGS: Final = ("ignition_on", "charging")
MAPS: Final = ("gps", "tire_pressures_kpa")


def number(value: Mapping[str, Any]) -> int | float | None:
    """A DynamoDB number attribute (`{"N": "52.5"}`) as an int or float; None if not one."""
    text = value.get("N")
    if not isinstance(text, str):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def iso_ms(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds (`2026-01-31T12:00:00.123Z`)."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def telemetry_point(item: Mapping[str, Any], now_s: float) -> dict[str, Any] | None:
    """A stored sample as plain values; None when it expired (TTL not run yet)
    or lacks its timestamp or sequence."""
    expires = number(item.get("expires_at", {}))
    if expires is not None and expires < now_s:
        return None
    timestamp_ms = number(item.get("timestamp", {}))
    sequence = number(item.get("sequence", {}))
    if not isinstance(timestamp_ms, int) or not isinstance(sequence, int):
        return None
    point: dict[str, Any] = {
        "timestamp": iso_ms(timestamp_ms),
        "timestamp_ms": timestamp_ms,
        "sequence": sequence,
    }
    for stored, answered in NUMBERS.items():
        value = number(item.get(stored, {}))
        if value is not None:
            point[answered] = value
    for name in TEXTS:
        if isinstance(item.get(name, {}).get("S"), str):
            point[name] = item[name]["S"]
    for name in FLAGS:
        if isinstance(item.get(name, {}).get("BOOL"), bool):
            point[name] = item[name]["BOOL"]
    for name in MAPS:
        fields = item.get(name, {}).get("M")
        if isinstance(fields, dict):
            values = {key: number(v) for key, v in fields.items()}
            point[name] = {key: v for key, v in values.items() if v is not None}
    codes = item.get("dtc_codes", {}).get("L")
    if isinstance(codes, list):
        point["dtc_codes"] = [c["S"] for c in codes if isinstance(c.get("S"), str)]
    return point


class RecentTelemetry:
    """Newest samples of one vehicle. `registered` (vehicle id -> known?)
    tells an unknown vehicle (404) from a known one that sent nothing yet
    (an empty list); without it, both are an empty list."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        registered: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ddb = client
        self._table = table
        self._registered = registered
        self._clock = clock

    def newest(self, vehicle_id: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` (1..`MAX_SAMPLES`) samples, newest first."""
        if not 1 <= limit <= MAX_SAMPLES:
            raise ValueError(f"limit must be 1-{MAX_SAMPLES}")
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "vehicle_id = :v",
            "ExpressionAttributeValues": {":v": {"S": vehicle_id}},
            "ScanIndexForward": False,
        }
        now_s = self._clock()
        points: list[dict[str, Any]] = []
        while len(points) < limit:
            kwargs["Limit"] = limit - len(points)
            try:
                answer: Any = self._ddb.query(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise translate("reading the vehicle's telemetry", exc) from exc
            dropped = False
            for item in answer.get("Items", []):
                point = telemetry_point(item, now_s)
                if point is None:
                    dropped = True
                else:
                    points.append(point)
            last = answer.get("LastEvaluatedKey")
            if not last or dropped:  # older samples than an expired one are expired too
                break
            kwargs["ExclusiveStartKey"] = last
        if not points and self._registered is not None and not self._registered(vehicle_id):
            raise NotFound(f"no vehicle {vehicle_id!r}")
        return points[:limit]
