"""The simulated vehicle's telemetry source: deterministic, plausible, at sensor resolution."""

from __future__ import annotations

import itertools

from v2c.contract.ids import telemetry_message_id
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.sampler import DEFAULT_START_MS, TelemetrySampler

VIN = "VIN-1HGBH41JXMN109186"


def _on_grid(value: float, step: float) -> bool:
    return abs(value / step - round(value / step)) < 1e-3


def test_same_seed_gives_the_same_bytes() -> None:
    first = [s.SerializeToString() for s in TelemetrySampler(VIN, seed=3).samples(200)]
    again = [s.SerializeToString() for s in TelemetrySampler(VIN, seed=3).samples(200)]
    other = [s.SerializeToString() for s in TelemetrySampler(VIN, seed=4).samples(200)]
    assert first == again
    assert first != other


def test_headers_carry_derived_ids_and_advancing_time() -> None:
    samples = TelemetrySampler(VIN, epoch=2, seed=1, first_sequence=10).samples(30)
    assert [s.sequence for s in samples] == list(range(10, 40))
    for sample in samples:
        assert sample.header.message_id == telemetry_message_id(VIN, 2, sample.sequence)
        assert sample.header.schema_version == "1.0"
        assert len(sample.header.trace_id) == 32
        assert sample.header.correlation_id
    stamps = [s.header.timestamp for s in samples]
    assert DEFAULT_START_MS <= stamps[0] < DEFAULT_START_MS + 1000
    assert all(59_000 < b - a < 61_000 for a, b in itertools.pairwise(stamps))
    assert len({s.header.trace_id for s in samples}) == len(samples)


def test_signals_stay_in_their_physical_ranges_for_a_long_run() -> None:
    samples = TelemetrySampler(VIN, seed=7).samples(3000)
    for s in samples:
        assert 0 <= s.speed_kmh <= 131
        assert 0 <= s.rpm <= 4000
        assert 11.5 <= s.battery_voltage_v <= 14.6
        assert 0 <= s.state_of_charge_pct <= 100
        assert -40 <= s.coolant_temp_c <= 110
        assert 0 <= s.fuel_level_pct <= 100
        tires = s.tire_pressures
        for kpa in (tires.front_left_kpa, tires.front_right_kpa, tires.rear_left_kpa):
            assert 80 <= kpa <= 270
    odometer = [s.odometer_km for s in samples]
    assert odometer == sorted(odometer)
    assert odometer[-1] - odometer[0] > 100


def test_values_sit_on_their_sensor_resolution() -> None:
    for s in TelemetrySampler(VIN, seed=2).samples(300):
        assert _on_grid(s.speed_kmh, 0.1)
        assert _on_grid(s.battery_voltage_v, 0.01)
        assert _on_grid(s.odometer_km, 0.1)
        assert _on_grid(s.tire_pressures.rear_right_kpa, 1.0)
        assert _on_grid(s.gps.latitude, 1e-6)
        assert _on_grid(s.gps.heading_deg, 0.1)


def test_rpm_follows_speed() -> None:
    samples = [s for s in TelemetrySampler(VIN, seed=5).samples(2000) if s.ignition_on]
    slow = [s.rpm for s in samples if 5 < s.speed_kmh < 30]
    fast = [s.rpm for s in samples if s.speed_kmh > 100]
    assert slow
    assert fast
    assert sum(fast) / len(fast) > sum(slow) / len(slow) + 300


def test_a_parked_vehicle_reports_no_speed_no_rpm_and_park() -> None:
    parked = [s for s in TelemetrySampler(VIN, seed=9).samples(2000) if not s.ignition_on]
    assert parked
    for s in parked:
        assert not s.HasField("speed_kmh")
        assert s.rpm == 0
        assert s.gear == telemetry_pb2.GEAR_PARK


def test_without_consent_there_is_no_gps() -> None:
    assert not any(s.HasField("gps") for s in TelemetrySampler(VIN, with_gps=False).samples(100))


def test_active_dtcs_raise_their_diagnostic_flags() -> None:
    samples = TelemetrySampler(VIN, seed=1, dtc_probability=0.2).samples(200)
    with_dtcs = [s for s in samples if s.dtc_codes]
    assert with_dtcs
    check_engine = [s for s in with_dtcs if "P0301" in s.dtc_codes]
    assert all(
        s.diagnostic_flags & telemetry_pb2.DIAGNOSTIC_FLAG_CHECK_ENGINE for s in check_engine
    )
