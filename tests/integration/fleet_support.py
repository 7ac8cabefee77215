"""Shared pieces of the vehicle-runtime and fleet tests over a real stack.

* `LoopThread`: an asyncio loop in a background thread, so the tests stay
  synchronous (polling DynamoDB, waiting) while vehicles run on the loop;
* `ota_cloud`: the OTA handlers' environment from a `StackSettings` (as
  `v2c stack up` exports it) and the API's services built from it;
* `upload_firmware`: a real package (`package.build_package`) through the
  firmware registry's upload path, so S3 and the firmware table hold it;
* `trusted_keys`: the key set a vehicle trusts, from the campaign signer;
* `wait_progressing`: wait for an outcome for as long as the system moves,
  so a loaded machine makes a test slower, never gives it another verdict;
* `patient_rules`: the production rules with a handler timeout that a
  loaded test machine cannot reach by slowness alone.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.ota_sink import MqttNotificationSink
from v2c.gateway.publisher import OutboundPublisher
from v2c.gateway.rules import RULES, Rule
from v2c.handlers.ota.config import (
    SERVICES,
    OtaConfig,
    OtaServices,
    build_services,
    set_default_services,
)
from v2c.infra.local.wiring import (
    dead_letter_stores,
    handler_environment,
    use_local_ota_services,
)
from v2c.infra.settings import StackSettings
from v2c.vehicle_sim.ota.device.package import build_package

if TYPE_CHECKING:
    from v2c.vehicle_sim.fleet.simulator import FleetSimulator

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
    """The handlers' environment and the API's services over the stack.

    The API's notifications leave through a publisher of their own, under a
    client id of their own: `build_services` names its publisher
    `v2c-ota-<pid>`, and the gateway's status handler, running in this same
    process, builds one under the same id; two clients with one id make the
    broker close each in turn (session takeover) and lose QoS 2 messages in
    the handover.
    """
    for name, value in handler_environment(stack).items():
        monkeypatch.setenv(name, value)
    set_default_services(None)
    use_local_ota_services()  # the gateway's handlers here notify as `v2c gateway run`'s do
    mqtt = stack.require_mqtt()
    publisher = OutboundPublisher(
        MqttEndpoint(mqtt.host, mqtt.port),
        f"v2c-ota-api-{uuid.uuid4().hex[:8]}",
        dead_letter_stores(stack)["ota"],
    )
    publisher.start()
    services = build_services(OtaConfig.from_env(), sink=MqttNotificationSink(publisher))
    try:
        yield services
    finally:
        services.close()
        publisher.stop()
        SERVICES.build_with(None)  # closes the handlers' services


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


def cloud_mismatches(
    cloud: OtaServices, fleet: FleetSimulator, loop: LoopThread, update_id: str
) -> list[str]:
    """Every vehicle whose cloud record disagrees with what it reported last."""
    seen: dict[str, tuple[str, str, str, int]] = loop.call(
        lambda: {
            vid: (
                r.state[0],
                r.installed_version,
                r.last_status.update_id if r.last_status else "",
                # the update's own numbering: a report about a notification the
                # vehicle could not verify is numbered apart and never applied
                r.agent.last_sequence(r.last_status.update_id) if r.last_status else 0,
            )
            for vid, r in fleet.runtimes.items()
        }
    )
    problems = []
    for vid, (state, running, reported_update, sequence) in seen.items():
        record = cloud.deps.updates.find(vid, update_id)
        registered = cloud.deps.fleet.get(vid)
        if state == "IDLE":
            if record is not None:
                problems.append(f"{vid}: never notified, but the cloud has {record.state}")
            continue
        if record is None or reported_update != update_id:
            problems.append(f"{vid}: reported {state} for {reported_update}, cloud has no record")
            continue
        if record.state.value != state.lower() or record.last_sequence != sequence:
            problems.append(
                f"{vid}: reported {state} #{sequence}, cloud has "
                f"{record.state.value} #{record.last_sequence}"
            )
        elif registered is None or registered.installed_version != running:
            problems.append(f"{vid}: runs {running}, registry says {registered}")
    return problems


def wait_progressing(
    done: Callable[[], bool],
    progress: Callable[[], object],
    *,
    what: str,
    stall_s: float = 60.0,
    cap_s: float = 480.0,
    every_s: float = 0.2,
) -> None:
    """Wait until `done()`, as long as `progress()` keeps changing.

    A fixed deadline on a run of vehicles through one moto process measures
    the machine, not the code: on a loaded 2-core machine the same run takes
    three times as long. This fails only when nothing moved for `stall_s`
    seconds (a stuck campaign, a lost report) or after `cap_s` in all (keep
    it under the test's pytest timeout). `progress()` returns any comparable
    snapshot: reports sent, counters, the list of mismatches.
    """
    started = time.monotonic()
    last, moved = progress(), started
    while not done():
        now = time.monotonic()
        current = progress()
        if current != last:
            last, moved = current, now
        if now - moved > stall_s:
            raise AssertionError(f"no progress for {stall_s:.0f} s waiting for {what}: {last}")
        if now - started > cap_s:
            raise AssertionError(f"still moving after {cap_s:.0f} s waiting for {what}: {last}")
        time.sleep(every_s)


def fleet_progress(fleet: FleetSimulator, loop: LoopThread) -> tuple[int, int, int]:
    """What moves while a fleet works: reports made and delivered, notifications."""

    def read() -> tuple[int, int, int]:
        summary = fleet.summary()
        return (summary.reports, summary.delivered, summary.notifications)

    result: tuple[int, int, int] = loop.call(read)
    return result


def patient_rules(timeout_s: float = 240.0) -> tuple[Rule, ...]:
    """The production rules, each handler given `timeout_s` instead of 30 s.

    A status report's handler does a few moto transactions; on a 2-core
    machine running other suites, moto (one process, serialised) can take
    more than 30 s for one of them, the gateway then dead-letters the report
    by design, and the campaign waits for a vehicle whose report the cloud
    never applied. That is the gateway's timeout at work (tested in the
    gateway's own tests), not what a fleet test checks, so fleet tests give
    the handlers time and wait on progress instead (`wait_progressing`).
    """
    return tuple(replace(rule, timeout_s=timeout_s) for rule in RULES)
