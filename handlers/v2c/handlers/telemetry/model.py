"""Telemetry as the cloud side stores it: plain values, no protobuf, no boto3.

A `Sample` is what validation makes of a `v2c.v1.Telemetry` message. Its
floats are rounded to the contract's resolution (the `SCALE` table of
`v2c.contract.batch_columns`), the same rounding the batch codec applies, so
a sample that arrives once alone and once inside a batch carries the same
values either way (only its trace id and arrival metadata differ: a batch
shares one trace id). A rewrite through either path therefore changes no
signal, which is what makes idempotent puts a sound dedup backstop.

A sample's identity is (vehicle_id, epoch, sequence); `sample_key` is its
sort key in the operational table and `message_id` the UUIDv5 derived from
it (`v2c.contract.ids.telemetry_message_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from v2c.contract.batch_columns import SCALE


def sample_key(epoch: int, sequence: int) -> str:
    """Sort key of a sample: zero-padded so keys sort as (epoch, sequence) do."""
    return f"{epoch:010d}#{sequence:020d}"


def quantized(value: float, column: str) -> float:
    """`value` rounded to the contract's resolution for `column` (a `SCALE` key)."""
    scale = SCALE[column]
    return round(value * scale) / scale


class Path(StrEnum):
    """Which topic a sample arrived on (the spec's `topic` metric label)."""

    INDIVIDUAL = "individual"
    BATCH = "batch"


@dataclass(frozen=True, slots=True)
class Gps:
    latitude: float
    longitude: float
    altitude_m: float
    heading_deg: float


@dataclass(frozen=True, slots=True)
class Tires:
    front_left_kpa: float
    front_right_kpa: float
    rear_left_kpa: float
    rear_right_kpa: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One validated telemetry sample. `speed_kmh` None means the signal was
    absent (ignition off, a dropped CAN frame), never 0 km/h."""

    vehicle_id: str
    epoch: int
    sequence: int
    message_id: str  # canonical UUID text
    timestamp_ms: int  # vehicle clock
    schema_version: str
    trace_id: str
    correlation_id: str
    speed_kmh: float | None
    rpm: int
    gear: str  # Gear enum name without prefix: "DRIVE", "PARK" ...
    battery_voltage_v: float
    state_of_charge_pct: float
    coolant_temp_c: float
    fuel_level_pct: float
    odometer_km: float
    gps: Gps | None
    tires: Tires | None
    diagnostic_flags: int
    dtc_codes: tuple[str, ...]
    ignition_on: bool
    charging: bool

    @property
    def key(self) -> str:
        return sample_key(self.epoch, self.sequence)


@dataclass(frozen=True, slots=True)
class VehicleInfo:
    """What the vehicle registry adds to every record."""

    make: str
    model: str
    year: int


@dataclass(frozen=True, slots=True)
class Arrival:
    """How and when a sample reached the cloud: the record's metadata."""

    region: str
    path: Path
    received_at_ms: int
    batch_id: str = ""
    batch_index: int = -1


@dataclass(frozen=True, slots=True)
class OperationalRecord:
    """What the operational store keeps per sample."""

    sample: Sample
    arrival: Arrival
    vehicle: VehicleInfo | None

    @property
    def key(self) -> str:
        return self.sample.key
