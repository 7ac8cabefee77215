"""The rollout bench's stage: a fresh stack and N onboarded, connected mTLS vehicles.

Onboarding is what a fleet known in advance goes through, each step timed:

1. certificates: one ECC P-256 key and client certificate per vehicle
   (CN = VIN), issued by the stack's fleet CA into `stack/pki/vehicles`;
2. the broker's policy: the dynamic-security state rendered with every
   vehicle as a client with a role of its own literal topics (the per-VIN
   ACL, `device_policy`), timed here as `prepare_broker_files` does it; the
   stack renders it again as the first step of its start (the same work, so
   `stack_start_s` includes it once more). Admitting vehicles to a running
   broker instead costs O(N^2) (the plugin saves its whole JSON after every
   command: docs/architecture.md), which is why the policy is rendered first;
3. the stack: mosquitto (loading that policy), moto and every resource, the
   gateway and the API;
4. the vehicles booted (flash provisioned on disk) and written to the
   cloud's registry (`registry_writer`: BatchWriteItem), the registry timed apart.

Then every vehicle connects its one mTLS MQTT session, a bounded number at a
time. Memory per vehicle is the growth of this process's resident memory
from before the fleet was built to all connected, over the vehicles
connected, after a garbage collection at both ends.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from v2c.infra.bench.common import BenchError, JsonDict, per_second
from v2c.infra.bench.fleet import established_sockets, rss_bytes
from v2c.infra.bench.rollout_aws import recording_env
from v2c.infra.bench.rollout_watch import FleetLoop
from v2c.infra.local.fleet_provisioning import (
    ensure_vehicle_certs,
    registry_writer,
    stack_trusted_keys,
    tls_vehicles,
)
from v2c.infra.local.stack import LocalStack
from v2c.infra.local.stack_control import BROKER
from v2c.infra.local.stack_layout import StackLayout, prepare_broker_files
from v2c.infra.pki.authority import init_pki
from v2c.infra.settings import StackSettings
from v2c.vehicle_sim.fleet.identity import FleetMember, fleet_members
from v2c.vehicle_sim.fleet.simulator import FleetSimulator

MODEL: Final = "RolloutBench"
OLD_VERSION: Final = "1.0.0"
KIB: Final = 1024


@contextlib.contextmanager
def workdir(directory: Path | None) -> Iterator[Path]:
    """`directory` (new or empty, kept afterwards), else a temporary one (removed)."""
    if directory is None:
        root = Path(tempfile.mkdtemp(prefix="v2c-brollout-"))
        try:
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise BenchError(f"--dir {directory} must be a new or empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    yield directory


def open_files_limit(pid: int | None) -> int | None:
    """The soft open-files limit of a process (/proc/<pid>/limits)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                value = line.split()[3]
                return int(value) if value.isdigit() else -1
    except OSError:
        return None
    return None


@dataclass
class Stage:
    """The running stack and fleet, and what setting them up took."""

    root: Path
    vehicles: int
    time_scale: float
    connect_concurrency: int
    timeout_s: float
    recording: Path | None
    stack: LocalStack | None = None
    settings: StackSettings | None = None
    loop: FleetLoop | None = None
    fleet: FleetSimulator | None = None
    members: Sequence[FleetMember] = ()
    onboarding: JsonDict = field(default_factory=dict)
    connect: JsonDict = field(default_factory=dict)

    @property
    def running(self) -> tuple[StackSettings, FleetLoop, FleetSimulator]:
        if self.settings is None or self.loop is None or self.fleet is None:
            raise BenchError("the stage is not set up")
        return self.settings, self.loop, self.fleet

    def set_up(self) -> None:
        """Onboard the fleet, start the stack, boot, register and connect every vehicle."""
        layout = StackLayout.for_dir(self.root / "stack")
        self.members = fleet_members(self.vehicles, models=(MODEL,))
        ids = [m.vehicle_id for m in self.members]
        began = time.perf_counter()
        init_pki(layout.pki)
        certs, issued = ensure_vehicle_certs(layout.pki, ids)
        certified = time.perf_counter()
        prepare_broker_files(layout)
        rendered = time.perf_counter()
        self.stack = LocalStack(layout.root)
        with recording_env(self.recording) if self.recording else contextlib.nullcontext():
            settings = self.settings = self.stack.start()
        started = time.perf_counter()
        vehicles = tls_vehicles(self.members, settings.require_mqtt(), certs)
        registry_s: list[float] = []
        register = registry_writer(settings)

        def timed_register(installed: Sequence[tuple[FleetMember, str]]) -> object:
            at = time.perf_counter()
            written = register(installed)
            registry_s.append(time.perf_counter() - at)
            return written

        gc.collect()
        rss_before = rss_bytes()
        self.loop = FleetLoop()
        self.fleet = FleetSimulator(
            vehicles,
            stack_trusted_keys(settings),
            time_scale=self.time_scale,
            base_dir=self.root / "fleet",
            installed_version=OLD_VERSION,
            registrar=timed_register,
            connect_concurrency=self.connect_concurrency,
        )
        booting = time.perf_counter()
        self.loop.run(self.fleet.start(connect=False), self.timeout_s)
        booted = time.perf_counter()
        self.onboarding = {
            "certificates_issued": issued,
            "certificates_s": round(certified - began, 2),
            "broker_policy_s": round(rendered - certified, 2),
            "broker_policy_bytes": layout.dynsec.stat().st_size,
            "stack_start_s": round(started - rendered, 2),
            "boot_s": round(booted - booting - sum(registry_s), 2),
            "registry_s": round(sum(registry_s), 2),
            "seconds": round(booted - began, 2),
        }
        self._connect(rss_before)

    def _connect(self, rss_before: int | None) -> None:
        settings, loop, fleet = self.running
        broker = settings.processes.get(BROKER)
        broker_rss_before = rss_bytes(broker) if broker else None
        began = time.perf_counter()
        try:
            loop.run(fleet.connect(), self.timeout_s)
        except TimeoutError as exc:
            raise BenchError(f"not every vehicle connected within {self.timeout_s:g} s") from exc
        took = time.perf_counter() - began
        gc.collect()
        rss_after = rss_bytes()
        connected = fleet.summary().connected
        grown = None if rss_before is None or rss_after is None else rss_after - rss_before
        broker_after = rss_bytes(broker) if broker else None
        broker_grown = (
            None if broker_rss_before is None or broker_after is None
            else broker_after - broker_rss_before
        )  # fmt: skip
        self.connect = {
            "connected": connected,
            "broker_established": established_sockets(broker),
            "seconds": round(took, 2),
            "connects_per_s": per_second(connected, took),
            "rss_after_mib": round(rss_after / KIB / KIB, 1) if rss_after else None,
            "kib_per_vehicle": round(grown / connected / KIB, 1) if grown and connected else None,
            "broker_kib_per_vehicle": (
                round(broker_grown / connected / KIB, 1) if broker_grown and connected else None
            ),
            "open_files_limit": {
                "simulator": open_files_limit(os.getpid()),
                "mosquitto": open_files_limit(broker),
            },
        }
        if connected != self.vehicles:
            raise BenchError(f"{connected} of {self.vehicles} vehicles connected")

    def tear_down(self) -> None:
        """Stop the fleet, its loop and the stack; each step runs even if one before failed.

        Thousands of TLS sessions closing at once make gmqtt log a warning with
        a traceback for each (the broker's last bytes after close-notify): the
        end of a bench, not news, so its logger is quieted meanwhile.
        """
        quiet = logging.getLogger("gmqtt")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            if self.fleet is not None and self.loop is not None:
                self.loop.loop.set_exception_handler(lambda _loop, _context: None)
                with contextlib.suppress(Exception):
                    self.loop.run(self.fleet.stop(), max(120.0, self.vehicles / 20))
        finally:
            try:
                if self.loop is not None:
                    self.loop.close()
                if self.stack is not None:
                    self.stack.stop()
            finally:
                quiet.setLevel(level)
