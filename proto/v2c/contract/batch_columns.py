"""The columnar transform between `Telemetry` samples and a `TelemetryBatch`.

Why columns: a batch of samples from one vehicle repeats the same vehicle id,
epoch and schema version in every sample, and neighbouring samples differ by
little. Sending constant fields once and every signal as a column of
quantized, delta-encoded integers (`sint64`, zigzag varints) turns a sample
into a handful of one- or two-byte numbers that ZSTD then squeezes further.
Message ids are not sent at all: they are derived from (vehicle id, epoch,
sequence), which keeps a sample's id identical on the single and batch paths.

What is lossy, on purpose:

* every signal is rounded to the resolution in `telemetry.proto` (the `SCALE`
  table below), so a decoded value equals the original within half a step,
  plus float32 rounding for the float fields;
* samples in a batch share the batch's trace id and correlation id; the
  encoder takes them from the first sample, the decoder gives them to all;
* a decoded sample always has `tire_pressures` and a `header` set.

Pure: bytes and messages in, messages out or a typed error; no I/O, no
compression (see `batch_codec`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import accumulate, pairwise
from types import MappingProxyType
from typing import Final

from v2c.contract.errors import CodecError, ValidationFailed
from v2c.contract.ids import telemetry_message_id
from v2c.v1 import telemetry_pb2

# Integers per unit of each scaled column (value = integer / scale), mirroring
# the resolution table of `TelemetryBatch` in telemetry.proto. Integer scales
# rather than float resolutions: `12.34 * 100` rounds right, `12.34 / 0.01` may not.
SCALE: Final = MappingProxyType(
    {
        "speed": 10,  # 0.1 km/h
        "battery_voltage": 100,  # 10 mV
        "state_of_charge": 10,  # 0.1 %
        "coolant_temp": 10,  # 0.1 degC
        "fuel_level": 10,  # 0.1 %
        "odometer": 10,  # 0.1 km (OBD-II PID 0xA6)
        "tire_front_left": 10,  # 0.1 kPa
        "tire_front_right": 10,
        "tire_rear_left": 10,
        "tire_rear_right": 10,
        "latitude": 1_000_000,  # 1e-6 degree
        "longitude": 1_000_000,
        "altitude": 1,  # 1 m
        "heading": 10,  # 0.1 degree
    }
)

# Bits of the state_bits column.
IGNITION_ON: Final = 1
CHARGING: Final = 2
SPEED_PRESENT: Final = 4
GPS_PRESENT: Final = 8

# Columns with exactly one entry per sample.
PER_SAMPLE_COLUMNS: Final = (
    "sequence",
    "timestamp",
    "speed",
    "rpm",
    "gear",
    "battery_voltage",
    "state_of_charge",
    "coolant_temp",
    "fuel_level",
    "odometer",
    "tire_front_left",
    "tire_front_right",
    "tire_rear_left",
    "tire_rear_right",
    "diagnostic_flags",
    "state_bits",
)
# Columns with one entry per sample whose GPS_PRESENT bit is set.
GPS_COLUMNS: Final = ("latitude", "longitude", "altitude", "heading")

# Every quantized value stays within +-2**53: exact as a double, and the delta
# of two such values cannot overflow sint64.
MAX_QUANTUM: Final = 2**53
_MAX_SEQUENCE: Final = 2**63 - 1  # the first delta is the absolute value: sint64
_UINT32_MAX: Final = 2**32 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

Telemetry = telemetry_pb2.Telemetry
TelemetryBatch = telemetry_pb2.TelemetryBatch


def to_columns(samples: Sequence[Telemetry]) -> TelemetryBatch:
    """Lay out samples of one vehicle and epoch as a columnar batch.

    Raises ValidationFailed for an empty batch, mixed vehicles, epochs or
    schema versions, a header id that is not the derived id (it would break
    dedup between the single and the batch path), and values that cannot be
    quantized (NaN, infinity, beyond +-2**53 steps, sequence beyond sint64).
    """
    if not samples:
        raise ValidationFailed("a telemetry batch needs at least one sample")
    first = samples[0]
    cols: dict[str, list[int]] = {name: [] for name in PER_SAMPLE_COLUMNS + GPS_COLUMNS}
    batch = TelemetryBatch(
        vehicle_id=first.vehicle_id,
        epoch=first.epoch,
        schema_version=first.header.schema_version,
        trace_id=first.header.trace_id,
        correlation_id=first.header.correlation_id,
        sample_count=len(samples),
    )
    last_speed = 0
    for index, sample in enumerate(samples):
        _check_belongs(sample, first, index)
        if sample.sequence > _MAX_SEQUENCE:
            raise ValidationFailed(f"sample {index}: sequence {sample.sequence} beyond sint64")
        cols["sequence"].append(sample.sequence)
        cols["timestamp"].append(_integer(sample.header.timestamp, "timestamp", index))
        bits = (IGNITION_ON if sample.ignition_on else 0) | (CHARGING if sample.charging else 0)
        if sample.HasField("speed_kmh"):
            bits |= SPEED_PRESENT
            last_speed = _quantize(sample.speed_kmh, "speed", index)
        # An absent speed repeats the previous value: a zero delta, the cheapest entry.
        cols["speed"].append(last_speed)
        cols["rpm"].append(sample.rpm)
        cols["gear"].append(sample.gear)
        cols["diagnostic_flags"].append(sample.diagnostic_flags)
        for column, value in (
            ("battery_voltage", sample.battery_voltage_v),
            ("state_of_charge", sample.state_of_charge_pct),
            ("coolant_temp", sample.coolant_temp_c),
            ("fuel_level", sample.fuel_level_pct),
            ("odometer", sample.odometer_km),
            ("tire_front_left", sample.tire_pressures.front_left_kpa),
            ("tire_front_right", sample.tire_pressures.front_right_kpa),
            ("tire_rear_left", sample.tire_pressures.rear_left_kpa),
            ("tire_rear_right", sample.tire_pressures.rear_right_kpa),
        ):
            cols[column].append(_quantize(value, column, index))
        if sample.HasField("gps"):
            bits |= GPS_PRESENT
            gps = sample.gps
            cols["latitude"].append(_quantize(gps.latitude, "latitude", index))
            cols["longitude"].append(_quantize(gps.longitude, "longitude", index))
            cols["altitude"].append(_quantize(gps.altitude_m, "altitude", index))
            cols["heading"].append(_quantize(gps.heading_deg, "heading", index))
        cols["state_bits"].append(bits)
        batch.dtcs.extend(
            telemetry_pb2.BatchDtc(sample_index=index, code=code) for code in sample.dtc_codes
        )
    for column, values in cols.items():
        getattr(batch, column).extend(_deltas(values))
    return batch


def from_columns(batch: TelemetryBatch) -> list[Telemetry]:
    """Rebuild the samples of a batch, with derived message ids.

    Raises CodecError when the batch is inconsistent (it cannot come from
    `to_columns`): no samples, a column of the wrong length, a value outside
    its field's range, a DTC pointing past the last sample. Nothing is
    allocated per sample before the column lengths have been checked.
    """
    count = batch.sample_count
    if count == 0:
        raise CodecError("corrupt batch: no samples")
    for column in PER_SAMPLE_COLUMNS:
        if len(getattr(batch, column)) != count:
            raise CodecError(
                f"corrupt batch: column {column} has {len(getattr(batch, column))} "
                f"entries for {count} samples"
            )
    q = {column: _undelta(getattr(batch, column)) for column in PER_SAMPLE_COLUMNS}
    _check_range(q["sequence"], "sequence", 0, 2**64 - 1)
    _check_range(q["timestamp"], "timestamp", -MAX_QUANTUM, MAX_QUANTUM)
    _check_range(q["rpm"], "rpm", 0, _UINT32_MAX)
    _check_range(q["diagnostic_flags"], "diagnostic_flags", 0, _UINT32_MAX)
    _check_range(q["gear"], "gear", _INT32_MIN, _INT32_MAX)
    # Unknown high bits are ignored: a newer encoder may add flags for new columns.
    _check_range(q["state_bits"], "state_bits", 0, 2**63 - 1)
    for column in SCALE:
        if column in q:
            _check_range(q[column], column, -MAX_QUANTUM, MAX_QUANTUM)

    gps_count = sum(1 for bits in q["state_bits"] if bits & GPS_PRESENT)
    for column in GPS_COLUMNS:
        if len(getattr(batch, column)) != gps_count:
            raise CodecError(
                f"corrupt batch: column {column} has {len(getattr(batch, column))} "
                f"entries for {gps_count} GPS fixes"
            )
        q[column] = _undelta(getattr(batch, column))
        _check_range(q[column], column, -MAX_QUANTUM, MAX_QUANTUM)

    dtcs: list[list[str]] = [[] for _ in range(count)]
    for dtc in batch.dtcs:
        if dtc.sample_index >= count:
            raise CodecError(f"corrupt batch: DTC for sample {dtc.sample_index} of {count}")
        dtcs[dtc.sample_index].append(dtc.code)

    samples: list[Telemetry] = []
    gps_index = 0
    for i in range(count):
        bits = q["state_bits"][i]
        sample = Telemetry(
            vehicle_id=batch.vehicle_id,
            epoch=batch.epoch,
            sequence=q["sequence"][i],
            rpm=q["rpm"][i],
            gear=telemetry_pb2.Gear.ValueType(q["gear"][i]),
            battery_voltage_v=_value(q, "battery_voltage", i),
            state_of_charge_pct=_value(q, "state_of_charge", i),
            coolant_temp_c=_value(q, "coolant_temp", i),
            fuel_level_pct=_value(q, "fuel_level", i),
            odometer_km=_value(q, "odometer", i),
            diagnostic_flags=q["diagnostic_flags"][i],
            dtc_codes=dtcs[i],
            ignition_on=bool(bits & IGNITION_ON),
            charging=bool(bits & CHARGING),
        )
        header = sample.header
        header.message_id = telemetry_message_id(batch.vehicle_id, batch.epoch, sample.sequence)
        header.timestamp = q["timestamp"][i]
        header.schema_version = batch.schema_version
        header.trace_id = batch.trace_id
        header.correlation_id = batch.correlation_id
        tires = sample.tire_pressures
        tires.front_left_kpa = _value(q, "tire_front_left", i)
        tires.front_right_kpa = _value(q, "tire_front_right", i)
        tires.rear_left_kpa = _value(q, "tire_rear_left", i)
        tires.rear_right_kpa = _value(q, "tire_rear_right", i)
        if bits & SPEED_PRESENT:
            sample.speed_kmh = _value(q, "speed", i)
        if bits & GPS_PRESENT:
            gps = sample.gps
            gps.latitude = _value(q, "latitude", gps_index)
            gps.longitude = _value(q, "longitude", gps_index)
            gps.altitude_m = _value(q, "altitude", gps_index)
            gps.heading_deg = _value(q, "heading", gps_index)
            gps_index += 1
        samples.append(sample)
    return samples


def _check_belongs(sample: Telemetry, first: Telemetry, index: int) -> None:
    if sample.vehicle_id != first.vehicle_id:
        raise ValidationFailed(
            f"sample {index}: vehicle {sample.vehicle_id!r} in a batch of {first.vehicle_id!r}"
        )
    if sample.epoch != first.epoch:
        raise ValidationFailed(f"sample {index}: epoch {sample.epoch} in a batch of {first.epoch}")
    if sample.header.schema_version != first.header.schema_version:
        raise ValidationFailed(
            f"sample {index}: schema version {sample.header.schema_version!r} in a batch of "
            f"{first.header.schema_version!r}"
        )
    message_id = sample.header.message_id
    if message_id and message_id != telemetry_message_id(
        sample.vehicle_id, sample.epoch, sample.sequence
    ):
        raise ValidationFailed(
            f"sample {index}: header.message_id is not the id derived from "
            "(vehicle_id, epoch, sequence); the batch path would give it another id"
        )


def _quantize(value: float, column: str, index: int) -> int:
    scale = SCALE[column]
    if not math.isfinite(value) or abs(value) * scale > MAX_QUANTUM:
        raise ValidationFailed(f"sample {index}: {column} = {value!r} cannot be quantized")
    return round(value * scale)


def _integer(value: int, column: str, index: int) -> int:
    if abs(value) > MAX_QUANTUM:
        raise ValidationFailed(f"sample {index}: {column} = {value} beyond +-2**53")
    return value


def _value(q: dict[str, list[int]], column: str, index: int) -> float:
    return q[column][index] / SCALE[column]


def _deltas(values: Sequence[int]) -> list[int]:
    return [value - previous for previous, value in pairwise([0, *values])]


def _undelta(deltas: Iterable[int]) -> list[int]:
    return list(accumulate(deltas))


def _check_range(values: Sequence[int], column: str, low: int, high: int) -> None:
    if values and (min(values) < low or max(values) > high):
        raise CodecError(f"corrupt batch: {column} outside [{low}, {high}]")
