"""Properties of the batch codec over generated batches and hostile bytes."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Sequence

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from v2c.contract.batch_codec import (
    NONE,
    ZSTD,
    CodecConfig,
    Compression,
    decode_envelope,
    encode_envelope,
    split_to_fit,
)
from v2c.contract.batch_columns import PER_SAMPLE_COLUMNS, SCALE, from_columns, to_columns
from v2c.contract.errors import CodecError, InvalidInput
from v2c.contract.ids import telemetry_message_id
from v2c.v1 import telemetry_pb2

Telemetry = telemetry_pb2.Telemetry

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

SINT64 = st.integers(-(2**63), 2**63 - 1)


def _f32(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, width=32)


@st.composite
def sample_batches(draw: st.DrawFn, max_size: int = 40) -> list[Telemetry]:
    """Samples of one vehicle and epoch, every field anywhere in its documented range."""
    vehicle_id = draw(st.text(max_size=24))
    epoch = draw(st.integers(0, 2**32 - 1))
    schema_version = draw(st.sampled_from(["1.0", "", "2.0"]))
    count = draw(st.integers(1, max_size))
    samples = []
    for _ in range(count):
        sequence = draw(st.integers(0, 2**63 - 1))
        sample = Telemetry(
            vehicle_id=vehicle_id,
            epoch=epoch,
            sequence=sequence,
            rpm=draw(st.integers(0, 2**32 - 1)),
            gear=draw(st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 1, 2, 3, 4, 5])),  # type: ignore[arg-type]
            battery_voltage_v=draw(_f32(0, 20)),
            state_of_charge_pct=draw(_f32(0, 100)),
            coolant_temp_c=draw(_f32(-40, 150)),
            fuel_level_pct=draw(_f32(0, 100)),
            odometer_km=draw(st.floats(0, 10_000_000)),
            diagnostic_flags=draw(st.integers(0, 2**32 - 1)),
            dtc_codes=draw(st.lists(st.text(max_size=8), max_size=3)),
            ignition_on=draw(st.booleans()),
            charging=draw(st.booleans()),
        )
        header = sample.header
        header.timestamp = draw(st.integers(0, 2**53))
        header.schema_version = schema_version
        header.trace_id = draw(st.text(max_size=32))
        header.correlation_id = draw(st.text(max_size=36))
        if draw(st.booleans()):
            header.message_id = telemetry_message_id(vehicle_id, epoch, sequence)
        if draw(st.booleans()):
            sample.speed_kmh = draw(_f32(0, 300))
        if draw(st.booleans()):
            sample.gps.latitude = draw(st.floats(-90, 90))
            sample.gps.longitude = draw(st.floats(-180, 180))
            sample.gps.altitude_m = draw(_f32(-500, 9000))
            sample.gps.heading_deg = draw(_f32(0, 360))
        tires = sample.tire_pressures
        tires.front_left_kpa, tires.front_right_kpa = draw(_f32(0, 1000)), draw(_f32(0, 1000))
        tires.rear_left_kpa, tires.rear_right_kpa = draw(_f32(0, 1000)), draw(_f32(0, 1000))
        samples.append(sample)
    return samples


def _close(a: float, b: float, column: str) -> bool:
    """Half a resolution step, plus float32 rounding of the decoded value."""
    tolerance = 0.5 / SCALE[column] + math.ulp(max(abs(a), abs(b), 1e-30)) * 2**29
    return abs(a - b) <= tolerance


def _assert_close(original: Sequence[Telemetry], decoded: Sequence[Telemetry]) -> None:
    assert len(decoded) == len(original)
    first = original[0].header
    for a, b in zip(original, decoded, strict=True):
        assert (b.vehicle_id, b.epoch, b.sequence) == (a.vehicle_id, a.epoch, a.sequence)
        assert b.header.message_id == telemetry_message_id(a.vehicle_id, a.epoch, a.sequence)
        assert b.header.timestamp == a.header.timestamp
        assert (b.header.trace_id, b.header.correlation_id) == (
            first.trace_id,
            first.correlation_id,
        )
        assert b.header.schema_version == a.header.schema_version
        assert (b.rpm, b.gear, b.diagnostic_flags) == (a.rpm, a.gear, a.diagnostic_flags)
        assert (b.ignition_on, b.charging) == (a.ignition_on, a.charging)
        assert list(b.dtc_codes) == list(a.dtc_codes)
        assert b.HasField("speed_kmh") == a.HasField("speed_kmh")
        assert b.HasField("gps") == a.HasField("gps")
        assert _close(a.speed_kmh, b.speed_kmh, "speed")
        assert _close(a.battery_voltage_v, b.battery_voltage_v, "battery_voltage")
        assert _close(a.state_of_charge_pct, b.state_of_charge_pct, "state_of_charge")
        assert _close(a.coolant_temp_c, b.coolant_temp_c, "coolant_temp")
        assert _close(a.fuel_level_pct, b.fuel_level_pct, "fuel_level")
        assert _close(a.odometer_km, b.odometer_km, "odometer")
        ta, tb = a.tire_pressures, b.tire_pressures
        assert _close(ta.front_left_kpa, tb.front_left_kpa, "tire_front_left")
        assert _close(ta.front_right_kpa, tb.front_right_kpa, "tire_front_right")
        assert _close(ta.rear_left_kpa, tb.rear_left_kpa, "tire_rear_left")
        assert _close(ta.rear_right_kpa, tb.rear_right_kpa, "tire_rear_right")
        assert _close(a.gps.latitude, b.gps.latitude, "latitude")
        assert _close(a.gps.longitude, b.gps.longitude, "longitude")
        assert _close(a.gps.altitude_m, b.gps.altitude_m, "altitude")
        assert _close(a.gps.heading_deg, b.gps.heading_deg, "heading")


@SETTINGS
@given(samples=sample_batches(), compression=st.sampled_from([ZSTD, NONE]))
def test_any_batch_round_trips_within_resolution(
    samples: list[Telemetry], compression: Compression
) -> None:
    decoded = decode_envelope(encode_envelope(samples, compression=compression))
    _assert_close(samples, decoded.samples)


@SETTINGS
@given(samples=sample_batches())
def test_quantization_is_stable_once_applied(samples: list[Telemetry]) -> None:
    once = from_columns(to_columns(samples))
    twice = from_columns(to_columns(once))
    assert [s.SerializeToString() for s in twice] == [s.SerializeToString() for s in once]


@SETTINGS
@given(samples=sample_batches(), packet=st.integers(900, 8192))
def test_split_envelopes_fit_and_keep_every_sample_in_order(
    samples: list[Telemetry], packet: int
) -> None:
    config = CodecConfig(max_packet_bytes=packet, mqtt_overhead_bytes=128)
    envelopes = split_to_fit(samples, config)
    assert all(len(e) <= config.max_envelope_bytes for e in envelopes)
    decoded = [s for e in envelopes for s in decode_envelope(e, config).samples]
    assert [s.sequence for s in decoded] == [s.sequence for s in samples]


@SETTINGS
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_invalid_input(data: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        decode_envelope(data)


@SETTINGS
@given(
    samples=sample_batches(max_size=10),
    compression=st.sampled_from([ZSTD, NONE]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
    reseal=st.booleans(),
)
def test_tampered_payload_is_refused_or_decodes_without_foreign_errors(
    samples: list[Telemetry],
    compression: Compression,
    edits: list[tuple[int, int]],
    reseal: bool,
) -> None:
    envelope = telemetry_pb2.TelemetryBatchEnvelope.FromString(
        encode_envelope(samples, compression=compression)
    )
    payload = bytearray(envelope.payload)
    for position, mask in edits:
        payload[position % len(payload)] ^= mask
    assume(payload != envelope.payload)  # two edits may cancel out
    envelope.payload = bytes(payload)
    if reseal:
        envelope.payload_sha256 = hashlib.sha256(envelope.payload).digest()
    try:
        decoded = decode_envelope(envelope.SerializeToString())
    except CodecError:
        return
    assert reseal  # without a fresh checksum nothing gets through
    assert len(decoded.samples) == len(samples)


@st.composite
def raw_batches(draw: st.DrawFn) -> telemetry_pb2.TelemetryBatch:
    """Structurally arbitrary batches: what a hostile or buggy encoder could send."""
    count = draw(st.integers(0, 6))
    batch = telemetry_pb2.TelemetryBatch(
        vehicle_id=draw(st.text(max_size=8)),
        epoch=draw(st.integers(0, 2**32 - 1)),
        sample_count=draw(st.sampled_from([count, count, count, count + 1, 2**32 - 1])),
    )
    for column in (*PER_SAMPLE_COLUMNS, "latitude", "longitude", "altitude", "heading"):
        size = draw(st.sampled_from([count, count, draw(st.integers(0, 8))]))
        getattr(batch, column).extend(draw(st.lists(SINT64, min_size=size, max_size=size)))
    for _ in range(draw(st.integers(0, 3))):
        batch.dtcs.add(sample_index=draw(st.integers(0, 2**32 - 1)), code=draw(st.text()))
    return batch


@SETTINGS
@given(batch=raw_batches())
def test_arbitrary_columns_decode_or_raise_codec_error(batch: telemetry_pb2.TelemetryBatch) -> None:
    try:
        samples = from_columns(batch)
    except CodecError:
        return
    assert len(samples) == batch.sample_count
