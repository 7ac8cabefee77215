"""A `Vehicle` driven from a synchronous test through its telemetry uplink.

The vehicle lives on an event loop in a background thread (`LoopThread`), as
in the fleet simulator; `TelemetryDriver` hands each call to that loop, so the
uplink tests read as before: publish, flush, look at the stats. Starting
does not wait for the connection (a vehicle with no network still samples
and buffers), and closing ends the process's side of it: what is not
acknowledged stays in the buffer file for the next start.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from fleet_support import LoopThread

from v2c.contract.keyset import TrustedKeySet
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.backoff import BackoffPolicy
from v2c.vehicle_sim.buffer import OfflineBuffer
from v2c.vehicle_sim.mqtt_async import MqttTarget
from v2c.vehicle_sim.ota.device.sim_time import SimTime
from v2c.vehicle_sim.ota.device.spec import VehicleSpec
from v2c.vehicle_sim.telemetry_publisher import (
    PublishedSample,
    PublisherConfig,
    PublisherStats,
    VehicleIdentity,
)
from v2c.vehicle_sim.vehicle import Vehicle


def telemetry_vehicle(
    identity: VehicleIdentity,
    target: MqttTarget,
    buffer_path: Path,
    config: PublisherConfig,
    *,
    backoff: BackoffPolicy | None = None,
) -> TelemetryDriver:
    """A vehicle (OTA trusting no key: these tests send none) whose telemetry
    buffer is `buffer_path`; its flash lives beside it."""
    spec = VehicleSpec(
        identity.vehicle_id,
        identity.vehicle_model,
        identity.region,
        installed_version=identity.firmware_version,
    )
    return TelemetryDriver(
        lambda: Vehicle(
            buffer_path.parent / f"{buffer_path.stem}-vehicle",
            spec,
            target,
            TrustedKeySet(),
            sim=SimTime(0.002),  # boots in milliseconds, not a real ECU's seconds
            telemetry=config,
            telemetry_buffer=buffer_path,
            backoff=backoff,
            reconnect_delay_s=0.2,
        )
    )


class TelemetryDriver:
    def __init__(self, build: Callable[[], Vehicle]) -> None:
        self._build = build
        self._loop: LoopThread | None = None
        self._vehicle: Vehicle | None = None

    @property
    def vehicle(self) -> Vehicle:
        assert self._vehicle is not None, "start() first"
        return self._vehicle

    @property
    def loop(self) -> LoopThread:
        assert self._loop is not None, "start() first"
        return self._loop

    def start(self) -> Self:
        self._loop = LoopThread()

        async def start() -> Vehicle:
            vehicle = self._build()
            await vehicle.boot()
            vehicle.telemetry.open()
            vehicle.connect_in_background()
            return vehicle

        self._vehicle = self._loop.run(start())
        return self

    def close(self) -> None:
        if self._loop is None:
            return
        if self._vehicle is not None:
            self._loop.run(self._vehicle.stop())
        self._loop.close()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the uplink, called from the test's thread ----------------------------
    @property
    def buffer(self) -> OfflineBuffer:
        buffer: OfflineBuffer = self.loop.call(lambda: self.vehicle.telemetry.buffer)
        return buffer

    def publish(self, sample: telemetry_pb2.Telemetry) -> PublishedSample:
        published: PublishedSample = self.loop.call(self.vehicle.telemetry.publish, sample)
        return published

    def flush(self, timeout: float) -> bool:
        return self.loop.run(self.vehicle.telemetry.flush(timeout), timeout + 30)

    def wait_connected(self, timeout: float) -> bool:
        return self.loop.run(self.vehicle.telemetry.wait_connected(timeout), timeout + 30)

    def stats(self) -> PublisherStats:
        stats: PublisherStats = self.loop.call(self.vehicle.telemetry.stats)
        return stats
