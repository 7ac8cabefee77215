"""Validation of telemetry samples: protobuf in, a `Sample` out or `InvalidField`.

Pure: no clock, no I/O. What it checks, in this order (the first failure wins,
so the DLQ record names one precise field):

1. schema version: major version 1 (`1.0`, `1.1` ...; proto3 fields are
   only ever added within a major version);
2. identity: vehicle id present, a VIN, equal to the topic's vehicle (the
   broker ACL vouches for the topic, not for the payload); sequence >= 1;
   `header.message_id` equal to the id derived from (vehicle, epoch,
   sequence), or dedup between the single and the batch path would break;
3. timestamp present and not before 2020 (a vehicle whose RTC lost power
   reports 1970);
4. ranges of every signal (`Limits`), finite numbers only; gear a known
   enum value; DTCs shaped like OBD-II codes.

What it does not check: duplicates (`dedup`), clock skew against the server
(a skewed clock is not bad data; `timeseries.point_time` handles it).

Speed: proto3 `optional`, and absent on purpose when the ignition is off or a
CAN frame was dropped (the simulator does both). The spec's "required field"
is honoured as "present or explicitly absent, never defaulted": an absent
speed is stored as absent, not as 0 km/h, and a present one is range-checked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from google.protobuf.message import DecodeError

from v2c.contract.errors import CodecError, InvalidField, InvalidTopic, PayloadTooLarge
from v2c.contract.ids import id_text, telemetry_message_id
from v2c.contract.topics import validate_vin
from v2c.handlers.telemetry.model import Gps, Sample, Tires, quantized
from v2c.v1 import telemetry_pb2

Telemetry = telemetry_pb2.Telemetry

SUPPORTED_MAJOR: Final = 1
MIN_TIMESTAMP_MS: Final = 1_577_836_800_000  # 2020-01-01T00:00:00Z
MAX_SINGLE_PAYLOAD: Final = 128 * 1024  # AWS IoT Core's packet limit
_SCHEMA: Final = re.compile(r"^(\d+)\.(\d+)$")
_DTC: Final = re.compile(r"^[PCBU][0-3][0-9A-F]{3}$")
_GEAR_PREFIX: Final = "GEAR_"

Range = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Limits:
    """Inclusive physical ranges; the defaults are the ones in telemetry.proto."""

    speed_kmh: Range = (0.0, 300.0)
    rpm: Range = (0, 10_000)
    battery_voltage_v: Range = (0.0, 20.0)
    state_of_charge_pct: Range = (0.0, 100.0)
    coolant_temp_c: Range = (-40.0, 150.0)
    fuel_level_pct: Range = (0.0, 100.0)
    odometer_km: Range = (0.0, 2_000_000.0)
    latitude: Range = (-90.0, 90.0)
    longitude: Range = (-180.0, 180.0)
    altitude_m: Range = (-500.0, 9_000.0)
    heading_deg: Range = (0.0, 360.0)
    tire_kpa: Range = (0.0, 1_000.0)
    max_dtc_codes: int = 32
    # A batch covers at most this span: a sample far outside its batch is corrupt.
    max_batch_span_ms: int = 24 * 3600 * 1000


DEFAULT_LIMITS: Final = Limits()


def parse_telemetry(payload: bytes) -> Telemetry:
    """Parse one individual message; `CodecError` or `PayloadTooLarge` if it is not one."""
    if len(payload) > MAX_SINGLE_PAYLOAD:
        raise PayloadTooLarge(f"{len(payload)} bytes, above the {MAX_SINGLE_PAYLOAD}-byte limit")
    message = Telemetry()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise CodecError(f"not a Telemetry message: {exc}") from exc
    return message


def validate(
    message: Telemetry, *, topic_vehicle_id: str, limits: Limits = DEFAULT_LIMITS
) -> Sample:
    """The validated `Sample`, or `InvalidField` naming the first bad field."""
    header = message.header
    check_schema_version(header.schema_version)
    _check_identity(message, topic_vehicle_id)
    if header.timestamp == 0:
        raise InvalidField("header.timestamp", "missing")
    if header.timestamp < MIN_TIMESTAMP_MS:
        raise InvalidField(
            "header.timestamp", f"{header.timestamp} is before 2020: the vehicle clock is not set"
        )
    speed: float | None = None
    if message.HasField("speed_kmh"):
        speed = quantized(_in_range("speed_kmh", message.speed_kmh, limits.speed_kmh), "speed")
    _in_range("rpm", message.rpm, limits.rpm)
    gear = _gear(message.gear)
    values = {
        "battery_voltage": _in_range(
            "battery_voltage_v", message.battery_voltage_v, limits.battery_voltage_v
        ),
        "state_of_charge": _in_range(
            "state_of_charge_pct", message.state_of_charge_pct, limits.state_of_charge_pct
        ),
        "coolant_temp": _in_range("coolant_temp_c", message.coolant_temp_c, limits.coolant_temp_c),
        "fuel_level": _in_range("fuel_level_pct", message.fuel_level_pct, limits.fuel_level_pct),
        "odometer": _in_range("odometer_km", message.odometer_km, limits.odometer_km),
    }
    _check_dtcs(message.dtc_codes, limits)
    return Sample(
        vehicle_id=message.vehicle_id,
        epoch=message.epoch,
        sequence=message.sequence,
        message_id=id_text(header.message_id),
        timestamp_ms=header.timestamp,
        schema_version=header.schema_version,
        trace_id=header.trace_id,
        correlation_id=header.correlation_id,
        speed_kmh=speed,
        rpm=message.rpm,
        gear=gear,
        battery_voltage_v=quantized(values["battery_voltage"], "battery_voltage"),
        state_of_charge_pct=quantized(values["state_of_charge"], "state_of_charge"),
        coolant_temp_c=quantized(values["coolant_temp"], "coolant_temp"),
        fuel_level_pct=quantized(values["fuel_level"], "fuel_level"),
        odometer_km=quantized(values["odometer"], "odometer"),
        gps=_gps(message, limits) if message.HasField("gps") else None,
        tires=_tires(message, limits),
        diagnostic_flags=message.diagnostic_flags,
        dtc_codes=tuple(message.dtc_codes),
        ignition_on=message.ignition_on,
        charging=message.charging,
    )


def check_schema_version(version: str, field: str = "header.schema_version") -> None:
    if not version:
        raise InvalidField(field, "missing")
    match = _SCHEMA.fullmatch(version)
    if match is None or int(match.group(1)) != SUPPORTED_MAJOR:
        raise InvalidField(field, f"unsupported version {version!r} (supported: 1.x)")


def batch_span_outliers(timestamps: Sequence[int], limits: Limits = DEFAULT_LIMITS) -> list[int]:
    """Indexes of samples whose timestamp lies further than `max_batch_span_ms`
    from the batch's median: the spec's "time range consistency" check. The
    median, not the first sample, so one corrupt first sample cannot condemn
    the rest."""
    if not timestamps:
        return []
    median = sorted(timestamps)[len(timestamps) // 2]
    return [
        index
        for index, stamp in enumerate(timestamps)
        if abs(stamp - median) > limits.max_batch_span_ms
    ]


def _check_identity(message: Telemetry, topic_vehicle_id: str) -> None:
    if not message.vehicle_id:
        raise InvalidField("vehicle_id", "missing")
    try:
        validate_vin(message.vehicle_id)
    except InvalidTopic as exc:
        raise InvalidField("vehicle_id", exc.detail) from None
    if message.vehicle_id != topic_vehicle_id:
        raise InvalidField(
            "vehicle_id",
            f"{message.vehicle_id!r} does not match the topic's vehicle {topic_vehicle_id!r}",
        )
    if message.sequence == 0:
        raise InvalidField("sequence", "missing (sequences start at 1)")
    message_id = message.header.message_id
    if not message_id:
        raise InvalidField("header.message_id", "missing")
    if message_id != telemetry_message_id(message.vehicle_id, message.epoch, message.sequence):
        raise InvalidField(
            "header.message_id",
            f"{message_id.hex()} is not the id derived from (vehicle_id, epoch "
            f"{message.epoch}, sequence {message.sequence})",
        )


def _in_range(field: str, value: float, bounds: Range) -> float:
    if not math.isfinite(value):
        raise InvalidField(field, f"{value!r} is not a finite number")
    low, high = bounds
    if not low <= value <= high:
        raise InvalidField(field, f"{value:g} outside [{low:g}, {high:g}]")
    return value


def _gear(value: int) -> str:
    try:
        name = telemetry_pb2.Gear.Name(telemetry_pb2.Gear.ValueType(value))
    except ValueError:
        raise InvalidField("gear", f"unknown gear {value}") from None
    return name.removeprefix(_GEAR_PREFIX)


def _gps(message: Telemetry, limits: Limits) -> Gps:
    gps = message.gps
    return Gps(
        latitude=quantized(_in_range("gps.latitude", gps.latitude, limits.latitude), "latitude"),
        longitude=quantized(
            _in_range("gps.longitude", gps.longitude, limits.longitude), "longitude"
        ),
        altitude_m=quantized(
            _in_range("gps.altitude_m", gps.altitude_m, limits.altitude_m), "altitude"
        ),
        heading_deg=quantized(
            _in_range("gps.heading_deg", gps.heading_deg, limits.heading_deg), "heading"
        ),
    )


def _tires(message: Telemetry, limits: Limits) -> Tires | None:
    """None when the vehicle reported no TPMS data: absent, or all four at
    exactly 0 (the batch codec always sets the field, so both forms occur)."""
    tires = message.tire_pressures
    if not message.HasField("tire_pressures") or not any(
        (tires.front_left_kpa, tires.front_right_kpa, tires.rear_left_kpa, tires.rear_right_kpa)
    ):
        return None
    values = [
        quantized(_in_range(f"tire_pressures.{name}", getattr(tires, name), limits.tire_kpa), col)
        for name, col in (
            ("front_left_kpa", "tire_front_left"),
            ("front_right_kpa", "tire_front_right"),
            ("rear_left_kpa", "tire_rear_left"),
            ("rear_right_kpa", "tire_rear_right"),
        )
    ]
    return Tires(*values)


def _check_dtcs(codes: Sequence[str], limits: Limits) -> None:
    if len(codes) > limits.max_dtc_codes:
        raise InvalidField("dtc_codes", f"{len(codes)} codes, at most {limits.max_dtc_codes}")
    for code in codes:
        if not _DTC.fullmatch(code):
            raise InvalidField("dtc_codes", f"{code!r} is not an OBD-II code such as P0301")


SINGLE_CONTENT_TYPES: Final = frozenset({"", "application/x-protobuf"})
BATCH_CONTENT_TYPES: Final = frozenset(
    {"", "application/x-protobuf", "application/x-protobuf+zstd"}
)


def check_content_type(content_type: str, allowed: frozenset[str]) -> None:
    """`CodecError` unless the MQTT 5 content type is one the path decodes."""
    if content_type not in allowed:
        raise CodecError(f"content type {content_type!r} is not one of {sorted(allowed)}")
