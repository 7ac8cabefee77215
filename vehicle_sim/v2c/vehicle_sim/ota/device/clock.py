"""Simulated time for the installer: a 10-minute installation in milliseconds.

The installer asks the clock for *simulated* seconds (`now`) and spends
simulated seconds (`sleep`): durations it reports are what a real vehicle
would report (the FMEA's 620 s installation), however fast the simulation
runs. `ManualClock` never waits (tests); `ScaledClock(scale)` really sleeps
`scale` real seconds per simulated second (demos: 0.001 turns 620 s into
0.62 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class SimClock(Protocol):
    def now(self) -> float:
        """Simulated seconds on a clock that survives reboots (a wall clock)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let `seconds` of simulated time pass."""
        ...


class ManualClock:
    """Time moves only when someone sleeps: deterministic, instant."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self._now += max(0.0, seconds)


class ScaledClock:
    """Simulated time runs `1/scale` times faster than the wall clock."""

    def __init__(
        self,
        scale: float,
        *,
        wall: Callable[[], float] = time.time,
        sleeper: Callable[[float], None] = time.sleep,
    ) -> None:
        if scale <= 0:
            raise ValueError("the time scale must be positive")
        self._scale = scale
        self._wall = wall
        self._sleeper = sleeper
        self._origin = wall()

    def now(self) -> float:
        return self._origin + (self._wall() - self._origin) / self._scale

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._sleeper(seconds * self._scale)
