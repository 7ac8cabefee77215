"""Shared pieces of the vehicle-runtime and fleet tests over a real stack.

* `LoopThread`: an asyncio loop in a background thread, so the tests stay
  synchronous (polling DynamoDB, waiting) while vehicles run on the loop;
* `ota_cloud`: the OTA handlers' environment from a `StackSettings` (as
  `v2c stack up` exports it) and the API's services built from it;
* `upload_firmware`: a real package (`package.build_package`) through the
  firmware registry's upload path, so S3 and the firmware table hold it;
* `trusted_keys`: the key set a vehicle trusts, from the campaign signer.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from v2c.handlers.ota.config import OtaConfig, OtaServices, build_services, set_default_services
from v2c.handlers.signing.keyset import TrustedKey, TrustedKeySet
from v2c.infra.settings import StackSettings
from v2c.infra.wiring import handler_environment
from v2c.vehicle_sim.ota.package import build_package

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread; `run(coro)` waits for the result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the loop (reading runtime state safely)."""

        async def wrapper() -> Any:
            return fn(*args)

        return self.run(wrapper())

    def close(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(drain(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextmanager
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    try:
        yield runner
    finally:
        runner.close()


@contextmanager
def ota_cloud(stack: StackSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtaServices]:
    """The handlers' environment and the API's services over the stack."""
    for name, value in handler_environment(stack).items():
        monkeypatch.setenv(name, value)
    set_default_services(None)
    services = build_services(OtaConfig.from_env())
    try:
        yield services
    finally:
        services.close()
        from v2c.handlers.ota.config import _DEFAULT

        if _DEFAULT is not None:
            _DEFAULT.close()
        set_default_services(None)


def upload_firmware(
    cloud: OtaServices,
    version: str,
    *,
    model: str = "Accord",
    image_bytes: int = 256 * 1024,
    hardware_id: str = "",
) -> str:
    """Build a real update package holding a `version` image and register it."""
    image = (f"v2c image {model} {version}\n".encode() * (image_bytes // 24 + 1))[:image_bytes]
    package = build_package(version, image)
    result = cloud.firmware.upload(
        io.BytesIO(package),
        {
            "name": "ecu",
            "version": version,
            "device_model": model,
            "manufacturer": "Honda",
            "hardware_id": hardware_id,
        },
        filename=f"ecu-{version}.bin",
    )
    return result.record.firmware_id


def trusted_keys(cloud: OtaServices) -> TrustedKeySet:
    signer = cloud.deps.signer
    since = datetime(2020, 1, 1, tzinfo=UTC)
    return TrustedKeySet([TrustedKey(signer.key_id, signer.public_key(), since)])
