"""What the rollout bench watches while a campaign runs: the fleet, the gateway, the processes.

* `FleetLoop`: the fleet's event loop on a thread of its own, so the bench's
  blocking calls (HTTP to the API, DynamoDB polls) never stall a vehicle;
  its native thread id, so the loop's own CPU can be read apart.
* `FleetWatch`: the vehicles' side, timed on their loop. Reports through the
  simulator's `on_report` hook (each report as it is sent; a vehicle's first
  terminal report); notifications by summing the vehicles' own counters
  every `every_s` (0.1 s): the first and last notification are known to
  within that step, which is all the window of a rate needs.
* `gateway_counts`: the gateway's Prometheus counters (status reports
  received, stored, failed; dead letters), scraped from its `/metrics`. (The
  OTA notification publisher in the gateway process counts into a registry
  of its own, which `/metrics` does not serve: notifications are counted by
  the vehicles.)
* `cpu_seconds`: user+system CPU of each process of the stack so far
  (`/proc/<pid>/stat`), and of the fleet loop's thread alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import urllib.request
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from v2c.infra.bench.common import process_cpu_s
from v2c.vehicle_sim.fleet.simulator import FleetSimulator
from v2c.vehicle_sim.fleet.summary import TERMINAL
from v2c.vehicle_sim.ota.device.runtime import VehicleRuntime

T = TypeVar("T")
STATUS_RULE: Final = "ota_status"


class FleetLoop:
    """An event loop on a background thread; the bench stays synchronous."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ids: list[int] = []
        ready = threading.Event()

        def run() -> None:
            self._ids.append(threading.get_native_id())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="fleet", daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def native_id(self) -> int | None:
        return self._ids[0] if self._ids else None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Cancel what still runs on the loop (a fleet that did not stop in
        time), let the cancellations finish, then stop the loop."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class FleetWatch:
    """The fleet's reports and notifications, with the moments they happened
    (`time.monotonic()`); attach before the campaign starts."""

    def __init__(self, fleet: FleetSimulator, every_s: float = 0.1) -> None:
        self._runtimes = list(fleet.runtimes.values())
        self.every_s = every_s
        self.reports = 0
        self.first_report: float | None = None
        self.last_report: float | None = None
        self.terminal: set[str] = set()
        self.last_terminal: float | None = None
        self.notifications = 0
        self.first_notification: float | None = None
        self.last_notification: float | None = None
        # (moment, notifications so far) at every sample that saw a change.
        self.series: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None
        fleet.on_report = self._on_report

    def _on_report(self, runtime: VehicleRuntime) -> None:
        now = time.monotonic()
        self.reports += 1
        if self.first_report is None:
            self.first_report = now
        self.last_report = now
        if runtime.state[0] in TERMINAL and runtime.vehicle_id not in self.terminal:
            self.terminal.add(runtime.vehicle_id)
            self.last_terminal = now

    def _sample(self) -> None:
        count = sum(r.notifications for r in self._runtimes)
        if count != self.notifications:
            now = time.monotonic()
            if self.first_notification is None:
                self.first_notification = now
            self.last_notification = now
            self.notifications = count
            self.series.append((now, count))

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.every_s)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fleet-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._sample()  # the last notifications, however close to the end


def gateway_counts(metrics_url: str | None) -> dict[str, float]:
    """The gateway's counters that tell what the cloud stored and sent; empty
    when its endpoint cannot be read."""
    if metrics_url is None:
        return {}
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as answer:  # noqa: S310 - loopback
            text = answer.read().decode(errors="replace")
    except OSError:
        return {}
    wanted = {
        "v2c_gateway_messages_received": "received",
        "v2c_gateway_messages_handled": "stored",
        "v2c_gateway_messages_failed": "failed",
    }
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            if family.name in wanted and sample.labels.get("rule") == STATUS_RULE:
                key = f"reports_{wanted[family.name]}"
                out[key] = out.get(key, 0.0) + sample.value
            elif family.name == "v2c_dlq_messages":
                out["dead_lettered"] = out.get("dead_lettered", 0.0) + sample.value
    return out


def thread_cpu_s(tid: int | None) -> float | None:
    """User+system CPU seconds of one thread of this process (/proc/self/task/<tid>/stat)."""
    if tid is None:
        return None
    try:
        stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(
    pids: Mapping[str, int | None], threads: Mapping[str, int | None] | None = None
) -> dict[str, float | None]:
    """CPU so far of each process in `pids` and each thread of this process in `threads`."""
    out = {name: process_cpu_s(pid) for name, pid in pids.items()}
    out.update({name: thread_cpu_s(tid) for name, tid in (threads or {}).items()})
    return out


def cpu_delta(
    before: Mapping[str, float | None], after: Mapping[str, float | None], wall_s: float
) -> dict[str, dict[str, float | None]]:
    """CPU seconds each process spent between two snapshots, and as a share of
    one core over the wall time (100 % = one core busy all along)."""
    out: dict[str, dict[str, float | None]] = {}
    for name, start in before.items():
        end = after.get(name)
        spent = None if start is None or end is None else round(end - start, 2)
        share = round(spent / wall_s * 100, 1) if spent is not None and wall_s > 0 else None
        out[name] = {"cpu_s": spent, "core_percent": share}
    return out


def wave_windows(
    series: Sequence[tuple[float, int]], sizes: Sequence[int]
) -> list[tuple[int, float | None]]:
    """Each wave's notifications and the time from its first to its last,
    from the notification counts over time: wave k is notified when the
    count passes the waves before it, done when it reaches their sum with it."""
    out: list[tuple[int, float | None]] = []
    before = 0
    for size in sizes:
        after = before + size
        first = next((t for t, n in series if n > before), None)
        last = next((t for t, n in series if n >= after), None)
        out.append((size, None if first is None or last is None else last - first))
        before = after
    return out
