"""Simulated time for a fleet on one event loop: a 10-minute installation in a second.

Two clocks, because the two kinds of waiting differ:

* `SimTime` is the fleet's clock. Simulated seconds run `1 / scale` times
  faster than the wall clock (scale 0.01: a simulated hour in 36 s). The
  update agent's timestamps, deadlines and retry times are simulated, and a
  runtime waits for a simulated moment with `await sim.sleep_until(t)`, an
  asyncio sleep of `(t - now) * scale` real seconds: thousands of vehicles
  wait on one loop without a thread each.
* `StepClock` is what the installer sees. The installer is synchronous and
  "spends" simulated seconds with `clock.sleep(s)` (620 s per installation);
  run in a worker thread with a really sleeping clock, a hundred vehicles
  installing at once would need a hundred threads. So `sleep` here only
  *records* the time owed; the installer runs through at disk speed in a
  short worker-thread call, and the runtime then waits the owed time on the
  loop (`SimTime.sleep_until(clock.now())`) before it tells the agent, so
  the agent sees each step at the simulated moment it happened.

Network transfers (the package download, MQTT) are not simulated: they take
the real time they take. At a small scale a real second is a long simulated
time, so the runtime gives the download a deadline of at least a few real
seconds (see `RuntimeConfig`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from v2c.contract.errors import ValidationFailed


class SimTime:
    """Simulated wall-clock seconds, `1 / scale` times faster than real time.

    `origin_s` is the simulated time at creation (default: the real wall
    clock then), so timestamps look like today's. Monotonic underneath: a
    wall-clock step (NTP) does not move simulated time.
    """

    def __init__(
        self,
        scale: float = 1.0,
        *,
        origin_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not scale > 0:
            raise ValidationFailed(f"the time scale must be positive, not {scale}")
        self.scale = scale
        self._monotonic = monotonic
        self._real0 = monotonic()
        self._sim0 = time.time() if origin_s is None else origin_s

    def now(self) -> float:
        return self._sim0 + (self._monotonic() - self._real0) / self.scale

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def real_delay(self, sim_seconds: float) -> float:
        """Real seconds that `sim_seconds` of simulated time take."""
        return max(0.0, sim_seconds * self.scale)

    def sim_seconds(self, real_seconds: float) -> float:
        """Simulated seconds that pass in `real_seconds`."""
        return real_seconds / self.scale

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(self.real_delay(sim_seconds))

    async def sleep_until(self, sim_time_s: float) -> None:
        """Return at (or just after) simulated time `sim_time_s`."""
        delay = sim_time_s - self.now()
        if delay > 0:
            await asyncio.sleep(self.real_delay(delay))


class StepClock:
    """The installer's clock: `sleep` records simulated time owed, never blocks.

    `begin()` starts a run at the fleet's current simulated time; during the
    run `now()` is that start plus everything slept so far. Between runs it
    follows the fleet clock. Thread-safe enough for its one use: a single
    worker-thread call at a time per vehicle, read afterwards on the loop.
    """

    def __init__(self, sim: SimTime) -> None:
        self._sim = sim
        self._start: float | None = None
        self._owed = 0.0

    def begin(self) -> float:
        """Start a run; returns its simulated start time."""
        previous_end = self.now() if self._start is not None else 0.0
        self._start = max(self._sim.now(), previous_end)
        self._owed = 0.0
        return self._start

    def end(self) -> None:
        """The run is over: `now()` follows the fleet clock again."""
        self._start = None
        self._owed = 0.0

    def now(self) -> float:
        if self._start is None:
            return self._sim.now()
        return self._start + self._owed

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            if self._start is None:
                self._start = self._sim.now()
            self._owed += seconds
