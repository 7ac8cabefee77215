"""Telemetry validation: what a valid sample becomes, and the precise field each bad one names."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest
from telemetry_events import OTHER_VIN, VIN

from v2c.contract.batch_codec import decode_envelope, encode_envelope
from v2c.contract.errors import CodecError, InvalidField, PayloadTooLarge, ValidationFailed
from v2c.contract.ids import id_text, telemetry_message_id
from v2c.handlers.telemetry.validation import (
    DEFAULT_LIMITS,
    batch_span_outliers,
    parse_telemetry,
    validate,
)
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.sampler import TelemetrySampler

Telemetry = telemetry_pb2.Telemetry


def _sample(**changes: object) -> Telemetry:
    sample = TelemetrySampler(VIN, seed=7).samples(3)[-1]
    for name, value in changes.items():
        setattr(sample, name, value)
    return sample


def test_every_sample_of_a_long_simulated_drive_is_valid() -> None:
    for with_gps in (True, False):
        for message in TelemetrySampler(VIN, seed=11, with_gps=with_gps).samples(1500):
            sample = validate(message, topic_vehicle_id=VIN)
            assert sample.message_id == id_text(message.header.message_id)
            assert (sample.gps is not None) == message.HasField("gps")


def test_a_valid_sample_keeps_its_identity_and_rounds_values_to_the_contract_resolution() -> None:
    message = _sample()
    message.speed_kmh = 52.3  # float32: 52.29999923706055

    sample = validate(message, topic_vehicle_id=VIN)

    assert (sample.vehicle_id, sample.epoch, sample.sequence) == (VIN, 1, message.sequence)
    assert sample.key == f"{1:010d}#{message.sequence:020d}"
    assert sample.speed_kmh == 52.3
    assert sample.gear in {"DRIVE", "REVERSE", "PARK"}


def test_an_absent_speed_stays_absent_instead_of_becoming_zero() -> None:
    message = _sample()
    message.ClearField("speed_kmh")

    assert validate(message, topic_vehicle_id=VIN).speed_kmh is None


def test_a_sample_decoded_from_a_batch_has_the_same_values_as_sent_alone() -> None:
    messages = TelemetrySampler(VIN, seed=5).samples(40)
    decoded = decode_envelope(encode_envelope(messages)).samples

    for alone, batched in zip(messages, decoded, strict=True):
        a = validate(alone, topic_vehicle_id=VIN)
        b = validate(batched, topic_vehicle_id=VIN)
        # A batch shares one trace/correlation id; every signal is identical.
        assert replace(b, trace_id=a.trace_id, correlation_id=a.correlation_id) == a


Mutation = Callable[[Telemetry], None]


def _set(path: str, value: object) -> Mutation:
    def mutate(message: Telemetry) -> None:
        target: object = message
        *parents, name = path.split(".")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return mutate


def _clear(name: str) -> Mutation:
    return lambda message: message.ClearField(name)  # type: ignore[arg-type]


def _reid(message: Telemetry) -> None:
    message.header.message_id = telemetry_message_id(
        message.vehicle_id, message.epoch, message.sequence
    )


def _both(*mutations: Mutation) -> Mutation:
    def mutate(message: Telemetry) -> None:
        for mutation in mutations:
            mutation(message)

    return mutate


BAD = {
    "schema version missing": (_set("header.schema_version", ""), "header.schema_version"),
    "schema version 2.0": (_set("header.schema_version", "2.0"), "header.schema_version"),
    "schema version not a version": (_set("header.schema_version", "one"), "header.schema_version"),
    "vehicle id missing": (_set("vehicle_id", ""), "vehicle_id"),
    "vehicle id not a VIN": (_both(_set("vehicle_id", "car-42"), _reid), "vehicle_id"),
    "vehicle id of another vehicle": (_both(_set("vehicle_id", OTHER_VIN), _reid), "vehicle_id"),
    "sequence missing": (_both(_set("sequence", 0), _reid), "sequence"),
    "message id missing": (_set("header.message_id", b""), "header.message_id"),
    "message id random": (_set("header.message_id", b"\x01" * 16), "header.message_id"),
    "message id of another sequence": (_set("sequence", 999_999), "header.message_id"),
    "timestamp missing": (_set("header.timestamp", 0), "header.timestamp"),
    "timestamp of an unset clock": (_set("header.timestamp", 86_400_000), "header.timestamp"),
    "speed above 300": (_set("speed_kmh", 301.0), "speed_kmh"),
    "speed negative": (_set("speed_kmh", -1.0), "speed_kmh"),
    "speed NaN": (_set("speed_kmh", math.nan), "speed_kmh"),
    "rpm above 10000": (_set("rpm", 10_001), "rpm"),
    "voltage infinite": (_set("battery_voltage_v", math.inf), "battery_voltage_v"),
    "voltage above 20": (_set("battery_voltage_v", 24.5), "battery_voltage_v"),
    "state of charge above 100": (_set("state_of_charge_pct", 100.5), "state_of_charge_pct"),
    "coolant below -40": (_set("coolant_temp_c", -41.0), "coolant_temp_c"),
    "fuel negative": (_set("fuel_level_pct", -0.5), "fuel_level_pct"),
    "odometer negative": (_set("odometer_km", -1.0), "odometer_km"),
    "latitude beyond a pole": (_set("gps.latitude", 91.0), "gps.latitude"),
    "longitude beyond 180": (_set("gps.longitude", -180.5), "gps.longitude"),
    "heading above 360": (_set("gps.heading_deg", 361.0), "gps.heading_deg"),
    "tire pressure absurd": (
        _set("tire_pressures.rear_left_kpa", 5000.0),
        "tire_pressures.rear_left_kpa",
    ),
    "gear unknown": (_set("gear", 42), "gear"),
    "dtc malformed": (lambda m: m.dtc_codes.append("XYZ"), "dtc_codes"),
    "too many dtcs": (lambda m: m.dtc_codes.extend(["P0301"] * 33), "dtc_codes"),
}


@pytest.mark.parametrize(("mutate", "field"), BAD.values(), ids=BAD.keys())
def test_an_invalid_sample_names_the_field_that_is_wrong(mutate: Mutation, field: str) -> None:
    message = _sample()
    if not message.HasField("gps"):
        message.gps.latitude = 48.1
    mutate(message)

    with pytest.raises(InvalidField) as caught:
        validate(message, topic_vehicle_id=VIN)

    assert caught.value.field == field
    assert caught.value.reason == "validation_failed"
    assert isinstance(caught.value, ValidationFailed)
    assert caught.value.detail.startswith(f"{field}: ")


def test_minor_schema_versions_of_the_same_major_are_accepted() -> None:
    message = _sample()
    message.header.schema_version = "1.7"

    assert validate(message, topic_vehicle_id=VIN).schema_version == "1.7"


def test_four_zero_tire_pressures_mean_no_tpms_data() -> None:
    message = _sample()
    message.tire_pressures.SetInParent()
    for name in ("front_left_kpa", "front_right_kpa", "rear_left_kpa", "rear_right_kpa"):
        setattr(message.tire_pressures, name, 0.0)

    assert validate(message, topic_vehicle_id=VIN).tires is None


def test_a_payload_that_is_not_a_telemetry_message_is_a_codec_error() -> None:
    with pytest.raises(CodecError):
        parse_telemetry(b"\xff\xff\xff\xff")


def test_a_payload_above_the_packet_limit_is_refused_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_telemetry(b"\x00" * (128 * 1024 + 1))


def test_a_sample_far_from_the_rest_of_its_batch_is_an_outlier() -> None:
    hour = 3_600_000
    stamps = [10 * hour + i * 60_000 for i in range(10)]
    stamps[3] = 10 * hour + 30 * hour  # a day and more away from the median

    assert batch_span_outliers(stamps, DEFAULT_LIMITS) == [3]
    assert batch_span_outliers([], DEFAULT_LIMITS) == []
