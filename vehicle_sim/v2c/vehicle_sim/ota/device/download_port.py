"""The runtime's download port: one resumable download task per update.

`StartDownload` becomes a `RangeDownloader` task (through the fault proxy if
the vehicle has download faults) whose progress and outcome go back to the
agent as calls posted on the runtime's queue. PAUSED: the agent hears
`on_download_paused` and the port tries again after a backoff in simulated
time; URL_EXPIRED: paused until the cloud sends the notification again with
a fresh URL (a new `StartDownload`, which continues from the partial file).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from pathlib import Path

from v2c.vehicle_sim.ota.agent.effects import Effect, StartDownload
from v2c.vehicle_sim.ota.agent.update_agent import UpdateAgent
from v2c.vehicle_sim.ota.device.download import (
    DownloadOutcome,
    DownloadProgress,
    DownloadResult,
    RangeDownloader,
)
from v2c.vehicle_sim.ota.device.fault_proxy import DownloadFaultProxy
from v2c.vehicle_sim.ota.device.sim_time import SimTime
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig, VehicleSpec

AgentCall = Callable[[UpdateAgent, int], list[Effect]]


class DownloadPort:
    def __init__(
        self,
        spec: VehicleSpec,
        config: RuntimeConfig,
        sim: SimTime,
        downloader: RangeDownloader,
        packages_dir: Callable[[], Path],
        post: Callable[[AgentCall], None],
        proxy: DownloadFaultProxy | None = None,
    ) -> None:
        self.spec = spec
        self.config = config
        self.sim = sim
        self._downloader = downloader
        self._packages_dir = packages_dir
        self._post = post
        self._proxy = proxy
        self._random: random.Random | None = None  # made at the first retry: 2.5 KiB each
        self._downloads: dict[str, asyncio.Task[None]] = {}

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [*self._downloads.values()]

    def start(self, effect: StartDownload) -> None:
        running = self._downloads.pop(effect.update_id, None)
        if running is not None:
            running.cancel()  # a fresh URL: continue from the partial file with it
        self._downloads[effect.update_id] = asyncio.create_task(
            self._download(effect, running), name=f"{self.spec.vehicle_id}-download"
        )

    async def cancel(self, update_id: str) -> None:
        task = self._downloads.pop(update_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def shut_down(self) -> None:
        """The power went: every download stops where it is (the partial file stays)."""
        for task in self._downloads.values():
            if task is not asyncio.current_task():
                task.cancel()
        self._downloads.clear()

    async def _download(self, effect: StartDownload, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await previous
        update_id = effect.update_id

        def progress(update: DownloadProgress) -> None:
            done = update.bytes_downloaded
            self._post(lambda agent, now: agent.on_download_progress(update_id, done, now))

        attempt = 0
        while True:
            url = effect.url
            if self._proxy is not None:
                url = self._proxy.url_for(self.spec.vehicle_id, self.spec.faults, url)
            result = await self._downloader.download(
                url,
                self._packages_dir(),
                update_id,
                effect.size_bytes,
                effect.sha256,
                progress,
            )
            self._post(download_outcome(result))
            if result.outcome is not DownloadOutcome.PAUSED:
                break  # done, failed, or waiting for a fresh URL (a new StartDownload)
            attempt += 1
            if self._random is None:  # deterministic per vehicle, as if made up front
                self._random = random.Random(self.spec.vehicle_id)
            delay = self.config.resume_backoff.delay(attempt, None, self._random.random)
            await self.sim.sleep(delay)
        if self._downloads.get(update_id) is asyncio.current_task():
            del self._downloads[update_id]


def download_outcome(result: DownloadResult) -> AgentCall:
    """What the agent hears when a download call ends."""
    update_id, got, detail = result.update_id, result.bytes_downloaded, result.detail
    if result.outcome is DownloadOutcome.COMPLETED:
        return lambda agent, now: agent.on_download_finished(update_id, now)
    if result.outcome is DownloadOutcome.FAILED:
        reason, attempts = result.reason, result.attempts
        return lambda agent, now: agent.on_download_finished(
            update_id, now, failure=reason, detail=detail, attempts=attempts
        )
    if result.outcome is DownloadOutcome.URL_EXPIRED:
        why = f"the download URL expired ({detail}); waiting for a new one"
        return lambda agent, now: agent.on_download_paused(update_id, got, now, why)
    return lambda agent, now: agent.on_download_paused(update_id, got, now, detail)
