"""Simulated time: the fleet clock and the installer's recording clock."""

from __future__ import annotations

import pytest

from v2c.contract.errors import ValidationFailed
from v2c.vehicle_sim.ota.device.sim_time import SimTime, StepClock


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_simulated_time_runs_one_over_scale_times_faster() -> None:
    real = FakeMonotonic()
    sim = SimTime(0.01, origin_s=1_000.0, monotonic=real)
    real.now += 2.0
    assert sim.now() == pytest.approx(1_200.0)
    assert sim.real_delay(620) == pytest.approx(6.2)
    assert sim.sim_seconds(1.0) == pytest.approx(100.0)
    assert sim.real_delay(-5) == 0.0


def test_a_scale_must_be_positive() -> None:
    with pytest.raises(ValidationFailed):
        SimTime(0)


def test_the_step_clock_records_time_owed_without_waiting() -> None:
    real = FakeMonotonic()
    sim = SimTime(0.001, origin_s=5_000.0, monotonic=real)
    clock = StepClock(sim)
    start = clock.begin()
    assert start == pytest.approx(5_000.0)
    clock.sleep(120)
    clock.sleep(420)
    assert clock.now() == pytest.approx(5_540.0)  # no real time passed
    clock.end()
    assert clock.now() == pytest.approx(sim.now())


def test_a_run_begun_before_the_last_one_was_waited_for_continues_after_it() -> None:
    real = FakeMonotonic()
    clock = StepClock(SimTime(0.001, origin_s=0.0, monotonic=real))
    clock.begin()
    clock.sleep(600)
    assert clock.begin() == pytest.approx(600.0)
