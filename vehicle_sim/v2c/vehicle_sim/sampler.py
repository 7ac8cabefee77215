"""A deterministic, physically plausible telemetry source for one vehicle.

Why not uniform random numbers: compression, dedup and range checks are
only tested honestly on data that behaves like a car. Signals here drift
the way sensors do (speed random-walks around a road-type target, rpm
follows speed through an automatic gearbox, coolant warms up with a time
constant, the odometer integrates speed, GPS moves along the heading) and
are reported at their sensor resolution (speed 0.1 km/h, voltage 0.01 V,
GPS 1e-6 degree as NMEA sentences give...), never as full-precision
float noise, which no vehicle bus carries and which would make any
compression figure meaningless.

The vehicle is a plug-in hybrid: it has a traction battery (state of
charge, charging) and a fuel tank. It cycles between driving, parked and
charging; a `TelemetrySampler` starts at the beginning of a trip.

Deterministic: one seeded `random.Random` drives everything, including
trace and correlation ids, so a seed reproduces a fleet exactly.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Final

from v2c.contract.ids import telemetry_message_id
from v2c.v1 import telemetry_pb2

SCHEMA_VERSION: Final = "1.0"
DEFAULT_START_MS: Final = 1_735_689_600_000  # 2025-01-01T00:00:00Z

# Sensor resolutions the samples are reported at.
SPEED_STEP: Final = 0.1  # km/h, wheel-speed signal on CAN
VOLTAGE_STEP: Final = 0.01  # V
SOC_STEP: Final = 0.1  # %, BMS
COOLANT_STEP: Final = 1.0  # degC, OBD-II PID 0x05
FUEL_STEP: Final = 0.1  # %, filtered fuel gauge
ODOMETER_STEP: Final = 0.1  # km
TIRE_STEP: Final = 1.0  # kPa, TPMS
GPS_STEP: Final = 1e-6  # degree (6 decimals, as NMEA receivers report)
ALTITUDE_STEP: Final = 1.0  # m
HEADING_STEP: Final = 0.1  # degree

_KM_PER_DEG_LAT: Final = 111.32
_IDLE_RPM: Final = 750
# (upper speed km/h, rpm per km/h) of an automatic gearbox's gears.
_GEAR_RATIOS: Final = ((20.0, 110.0), (40.0, 60.0), (60.0, 42.0), (80.0, 32.0), (105.0, 26.0))
_TOP_GEAR_RATIO: Final = 22.0
# Road types: (target speed km/h, spread).
_ROADS: Final = ((45.0, 10.0), (80.0, 10.0), (118.0, 8.0))

_F = telemetry_pb2


@dataclass(frozen=True, slots=True)
class _Dtc:
    code: str
    flags: int


_DTCS: Final = (
    _Dtc("P0301", _F.DIAGNOSTIC_FLAG_CHECK_ENGINE),  # cylinder 1 misfire
    _Dtc("P0420", _F.DIAGNOSTIC_FLAG_CHECK_ENGINE),  # catalyst efficiency
    _Dtc("P0562", _F.DIAGNOSTIC_FLAG_LOW_BATTERY),  # system voltage low
    _Dtc("C0750", _F.DIAGNOSTIC_FLAG_LOW_TIRE_PRESSURE),  # TPMS sensor
    _Dtc("P0217", _F.DIAGNOSTIC_FLAG_CHECK_ENGINE | _F.DIAGNOSTIC_FLAG_CRITICAL_DTC),  # overheat
)


class _Phase(Enum):
    DRIVING = "driving"
    PARKED = "parked"
    CHARGING = "charging"


def _step(value: float, step: float) -> float:
    """Round to a sensor's resolution, as the bus would carry it."""
    digits = max(0, round(-math.log10(step)))
    return round(round(value / step) * step, digits)


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


class TelemetrySampler:
    """One vehicle's telemetry, one sample per `next_sample()`, `interval_ms` apart."""

    def __init__(
        self,
        vehicle_id: str,
        epoch: int = 1,
        *,
        seed: int = 0,
        start_ms: int = DEFAULT_START_MS,
        interval_ms: int = 60_000,
        with_gps: bool = True,
        first_sequence: int = 1,
        dtc_probability: float = 0.004,
        start_position: tuple[float, float] = (48.1372, 11.5756),
    ) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.vehicle_id = vehicle_id
        self.epoch = epoch
        self.with_gps = with_gps
        self._rng = random.Random(seed)
        self._interval_ms = interval_ms
        self._dt_min = interval_ms / 60_000
        self._walk = math.sqrt(self._dt_min)
        self._t_ms = start_ms - interval_ms  # the first sample is at start_ms
        self._sequence = first_sequence - 1
        self._dtc_probability = dtc_probability
        rng = self._rng

        self._phase = _Phase.DRIVING
        self._trip_id = self._new_uuid()
        self._trip_samples = 0
        self._road = rng.randrange(len(_ROADS))
        self._speed = 0.0
        self._lat, self._lon = start_position
        self._altitude = rng.uniform(300.0, 600.0)
        self._heading = rng.uniform(0.0, 360.0)
        self._odometer = rng.uniform(5_000.0, 120_000.0)
        self._fuel = rng.uniform(40.0, 90.0)
        self._soc = rng.uniform(30.0, 95.0)
        self._ambient = rng.uniform(-5.0, 25.0)
        self._coolant = self._ambient
        self._rest_voltage = rng.uniform(12.45, 12.75)
        self._charge_setpoint = rng.uniform(13.8, 14.4)
        self._tire_cold = [rng.uniform(232.0, 242.0) for _ in range(4)]
        self._tire_warm = 0.0
        self._leak: tuple[int, float] | None = None  # (tire index, kPa lost so far)
        self._dtcs: dict[_Dtc, int] = {}  # active DTC -> samples left

    def next_sample(self) -> telemetry_pb2.Telemetry:
        self._advance()
        return self._sample()

    def samples(self, count: int) -> list[telemetry_pb2.Telemetry]:
        return [self.next_sample() for _ in range(count)]

    # -- physics -----------------------------------------------------------

    def _advance(self) -> None:
        self._t_ms += self._interval_ms
        self._sequence += 1
        self._next_phase()
        dt_h = self._dt_min / 60
        self._drive()
        distance_km = self._speed * dt_h
        self._odometer += distance_km
        self._move(distance_km)
        self._energy(distance_km)
        self._temperatures()
        self._diagnostics()

    def _chance(self, per_minute: float) -> bool:
        """An event with the given rate per minute, scaled to the sample interval."""
        return self._rng.random() < 1 - math.exp(-per_minute * self._dt_min)

    def _next_phase(self) -> None:
        if self._phase is _Phase.DRIVING:
            self._trip_samples += 1
            if self._trip_samples > 5 and self._chance(0.02):
                self._phase = _Phase.CHARGING if self._soc < 40 else _Phase.PARKED
        elif self._phase is _Phase.CHARGING and self._soc >= 90:
            self._phase = _Phase.PARKED
        elif self._chance(0.05):
            self._phase = _Phase.DRIVING
            self._trip_id = self._new_uuid()
            self._trip_samples = 1

    def _drive(self) -> None:
        rng = self._rng
        if self._phase is not _Phase.DRIVING:
            self._speed = 0.0
            return
        if self._chance(0.08):
            self._road = rng.randrange(len(_ROADS))
        target, spread = _ROADS[self._road]
        if self._road == 0 and self._chance(0.15):
            self._speed = rng.uniform(0.0, 5.0)  # traffic light or junction
            return
        pull = 1 - math.exp(-0.5 * self._dt_min)
        # A random walk: its spread grows with the square root of the interval.
        self._speed += (target - self._speed) * pull + rng.gauss(0.0, spread * 0.6 * self._walk)
        self._speed = _clamp(self._speed, 0.0, 130.0)

    def _move(self, distance_km: float) -> None:
        rng = self._rng
        if self._speed > 2.0:
            self._heading = (self._heading + rng.gauss(0.0, 12.0 * self._walk)) % 360.0
            self._altitude = _clamp(self._altitude + rng.gauss(0.0, 3.0) * distance_km, 0, 2500)
        heading = math.radians(self._heading)
        self._lat += distance_km * math.cos(heading) / _KM_PER_DEG_LAT
        self._lon += (
            distance_km * math.sin(heading) / (_KM_PER_DEG_LAT * math.cos(math.radians(self._lat)))
        )

    def _energy(self, distance_km: float) -> None:
        rng = self._rng
        if self._phase is _Phase.CHARGING:
            self._soc = min(100.0, self._soc + 0.5 * self._dt_min)
        elif self._soc > 15.0:
            self._soc = max(15.0, self._soc - 0.12 * distance_km)  # electric first
        else:  # charge sustaining: the engine burns fuel
            self._fuel = max(0.0, self._fuel - 0.14 * distance_km)
        if self._speed > 100.0:  # the engine joins at motorway speed
            self._fuel = max(0.0, self._fuel - 0.05 * distance_km)
        if self._phase is not _Phase.DRIVING and self._fuel < 20.0:
            self._fuel = rng.uniform(90.0, 98.0)  # the trip ended at a filling station
        self._rest_voltage = max(12.2, self._rest_voltage - 0.0005 * self._dt_min)
        if self._chance(0.1):  # load and temperature compensation move the set point
            self._charge_setpoint = rng.uniform(13.8, 14.4)

    def _temperatures(self) -> None:
        driving = self._phase is _Phase.DRIVING
        coolant_target = 90.0 if driving else self._ambient
        self._coolant += (coolant_target - self._coolant) * (
            1 - math.exp(-self._dt_min / (5.0 if driving else 40.0))
        )
        warm_target = 8.0 if driving else 0.0
        self._tire_warm += (warm_target - self._tire_warm) * (1 - math.exp(-self._dt_min / 15.0))
        if self._leak is None:
            if self._chance(0.0005):  # a nail: a slow puncture
                self._leak = (self._rng.randrange(4), 0.0)
        elif self._phase is not _Phase.DRIVING and self._leak[1] > 30.0:
            self._leak = None  # the warning light sent the driver to a tyre shop
        else:
            self._leak = (self._leak[0], min(150.0, self._leak[1] + 0.4 * self._dt_min))

    def _diagnostics(self) -> None:
        for dtc in list(self._dtcs):
            self._dtcs[dtc] -= 1
            if self._dtcs[dtc] <= 0:
                del self._dtcs[dtc]
        if self._phase is _Phase.DRIVING and self._rng.random() < self._dtc_probability:
            self._dtcs[self._rng.choice(_DTCS)] = self._rng.randint(5, 60)

    # -- reporting ---------------------------------------------------------

    def _sample(self) -> telemetry_pb2.Telemetry:
        rng = self._rng
        driving = self._phase is _Phase.DRIVING
        ignition = driving
        sample = telemetry_pb2.Telemetry(
            vehicle_id=self.vehicle_id,
            epoch=self.epoch,
            sequence=self._sequence,
            rpm=self._rpm(),
            gear=self._gear(),
            battery_voltage_v=_step(self._voltage(), VOLTAGE_STEP),
            state_of_charge_pct=_step(self._soc, SOC_STEP),
            coolant_temp_c=_step(self._coolant + rng.gauss(0.0, 0.4), COOLANT_STEP),
            fuel_level_pct=_step(_clamp(self._fuel + rng.gauss(0.0, 0.03), 0.0, 100.0), FUEL_STEP),
            odometer_km=_step(self._odometer, ODOMETER_STEP),
            ignition_on=ignition,
            charging=self._phase is _Phase.CHARGING,
        )
        header = sample.header
        header.message_id = telemetry_message_id(self.vehicle_id, self.epoch, self._sequence)
        header.timestamp = self._t_ms + rng.randint(0, 40)  # scheduler jitter
        header.schema_version = SCHEMA_VERSION
        header.correlation_id = self._trip_id
        header.trace_id = f"{rng.getrandbits(128):032x}"
        if ignition and rng.random() > 0.01:  # rare dropped CAN frame
            sample.speed_kmh = _step(max(0.0, self._speed + rng.gauss(0.0, 0.3)), SPEED_STEP)
        if self.with_gps and rng.random() > 0.03:  # rare lost fix (tunnel, garage)
            self._report_gps(sample.gps)
        tires = [
            cold
            + self._tire_warm
            + rng.gauss(0.0, 0.6)
            - (self._leak[1] if self._leak and self._leak[0] == i else 0.0)
            for i, cold in enumerate(self._tire_cold)
        ]
        pressures = sample.tire_pressures
        pressures.front_left_kpa = _step(tires[0], TIRE_STEP)
        pressures.front_right_kpa = _step(tires[1], TIRE_STEP)
        pressures.rear_left_kpa = _step(tires[2], TIRE_STEP)
        pressures.rear_right_kpa = _step(tires[3], TIRE_STEP)
        flags = 0
        for dtc in self._dtcs:
            flags |= dtc.flags
            sample.dtc_codes.append(dtc.code)
        if min(tires) < 200.0:
            flags |= _F.DIAGNOSTIC_FLAG_LOW_TIRE_PRESSURE
        if sample.battery_voltage_v < 12.0:
            flags |= _F.DIAGNOSTIC_FLAG_LOW_BATTERY
        sample.diagnostic_flags = flags
        return sample

    def _report_gps(self, gps: telemetry_pb2.GpsPosition) -> None:
        rng = self._rng
        noise_deg = 2.5 / 1000 / _KM_PER_DEG_LAT  # ~2.5 m horizontal error
        gps.latitude = _step(self._lat + rng.gauss(0.0, noise_deg), GPS_STEP)
        gps.longitude = _step(self._lon + rng.gauss(0.0, noise_deg), GPS_STEP)
        gps.altitude_m = _step(self._altitude + rng.gauss(0.0, 1.5), ALTITUDE_STEP)
        gps.heading_deg = _step(self._heading, HEADING_STEP)

    def _rpm(self) -> int:
        if self._phase is not _Phase.DRIVING:
            return 0
        if self._speed < 3.0:
            return round(_IDLE_RPM + self._rng.gauss(0.0, 15.0))
        ratio = next((r for upper, r in _GEAR_RATIOS if self._speed < upper), _TOP_GEAR_RATIO)
        return round(max(_IDLE_RPM, self._speed * ratio) + self._rng.gauss(0.0, 40.0))

    def _gear(self) -> telemetry_pb2.Gear.ValueType:
        if self._phase is not _Phase.DRIVING:
            return _F.GEAR_PARK
        if self._trip_samples == 1 and self._speed < 6.0:
            return _F.GEAR_REVERSE  # backing out of the parking space
        return _F.GEAR_DRIVE

    def _voltage(self) -> float:
        rng = self._rng
        if self._phase is _Phase.DRIVING:  # the regulator holds a slowly moving set point
            return self._charge_setpoint + rng.gauss(0.0, 0.03)
        if self._phase is _Phase.CHARGING:
            return _clamp(13.9 + rng.gauss(0.0, 0.05), 13.6, 14.2)  # DC-DC converter on
        return self._rest_voltage + rng.gauss(0.0, 0.01)

    def _new_uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
