"""One simulated vehicle's OTA runtime: the I/O around the pure update agent, on asyncio.

The agent (`agent.py`) decides and returns effects; this runtime executes
them, in order, and feeds what the ports report back into the agent:

==================  ==========================================================
effect              what the runtime does
==================  ==========================================================
SaveState           `agent.json` in the vehicle's directory, atomically
                    (temp file, `os.replace`; fsync when `durable`)
Report              publish the `OTAStatus` on `.../ota/status` at QoS 2; the
                    PUBCOMP calls `on_report_delivered`
StartDownload       a `RangeDownloader` task (through the fault proxy if the
                    vehicle has download faults) feeding `on_download_*`;
                    PAUSED: `on_download_paused`, retry after a backoff in
                    simulated time; URL_EXPIRED: paused until the cloud sends
                    the notification again with a fresh URL
CancelDownload      cancel that task; DiscardPackage: delete its files
StartInstall        `Installer.install` (`flash_port`) feeding
                    `on_install_step` / `on_install_finished`
Reboot, RollBack    the bootloader (watchdog, fallback) -> `on_boot_result`
RunVerification     the six post-install checks -> `on_verification`
CommitUpdate        mark the slot good -> `on_committed`
ScheduleTick        a loop timer (simulated time) -> `on_tick`
==================  ==========================================================

Events are handled one at a time per vehicle (a queue and one pump task),
so the agent, which is not thread-safe, sees them in order; a port task
posts its callbacks to the queue. Each event carries the "boot generation"
it belongs to: after a power cut the runtime boots again from disk and late
callbacks of the old boot are dropped, as a real reboot would drop them.

Restart safety: a runtime built again on the same directory powers the
flash on (U-Boot decides what boots), restores the agent from `agent.json`,
and calls `on_start` with the bootloader's word, so it resumes a download
from its partial file, judges an interrupted installation, re-sends an
unconfirmed report, and reports the version the vehicle actually runs.

Time: the agent's clock is the fleet's simulated clock (`SimTime`); the
installer spends simulated time (`flash_port`); the network runs in real
time, so the download deadlines are stretched to at least
`RuntimeConfig.min_download_timeout_real_s` real seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec

from v2c.contract.errors import ValidationFailed
from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.contract.topics import Domain, Topic
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.backoff import BackoffPolicy
from v2c.vehicle_sim.mqtt_async import AsyncMqttSession, MqttTarget
from v2c.vehicle_sim.ota.agent import UpdateAgent
from v2c.vehicle_sim.ota.checks import AgentPolicy
from v2c.vehicle_sim.ota.download import (
    DownloadConfig,
    DownloadOutcome,
    DownloadProgress,
    DownloadResult,
    RangeDownloader,
    discard_download,
    package_path,
)
from v2c.vehicle_sim.ota.effects import (
    BootResult,
    CancelDownload,
    CommitUpdate,
    DiscardPackage,
    Dropped,
    Effect,
    InstallStep,
    Reboot,
    Report,
    RollBack,
    RunVerification,
    SaveState,
    ScheduleTick,
    StartDownload,
    StartInstall,
)
from v2c.vehicle_sim.ota.fault_proxy import DownloadFaultProxy
from v2c.vehicle_sim.ota.faults import SignatureInvalid, VehicleFaults
from v2c.vehicle_sim.ota.flash_port import FlashPort, factory_image
from v2c.vehicle_sim.ota.installer import BootReport, InstallTimings
from v2c.vehicle_sim.ota.sim_time import SimTime
from v2c.vehicle_sim.ota.steps import InstallStep as Step
from v2c.vehicle_sim.ota.steps import PowerCut
from v2c.vehicle_sim.ota.vehicle_model import ConditionsPlan, VehicleModel
from v2c.vehicle_sim.ota.vehicle_state import VehicleConditions

logger = logging.getLogger(__name__)

AGENT_FILE: Final = "agent.json"
OTA_QOS: Final = 2
AgentCall = Callable[[UpdateAgent, int], list[Effect]]
Control = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class VehicleSpec:
    """Who the vehicle is. `installed_version` only provisions a new flash:
    afterwards the flash says what runs."""

    vehicle_id: str
    model: str
    region: str
    installed_version: str = "1.0.0"
    hardware_id: str = ""
    faults: VehicleFaults = field(default_factory=VehicleFaults)

    def topic(self, kind: str) -> str:
        return str(Topic(self.region, self.vehicle_id, Domain.OTA, kind))


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Every knob of a vehicle runtime (simulated seconds unless named real)."""

    policy: AgentPolicy = field(default_factory=AgentPolicy)
    durable: bool = False  # fsync flash, agent state and downloads (slow; tests of power loss)
    min_download_timeout_real_s: float = 120.0
    # The downloader's minimum progress (real seconds: the network runs in real
    # time): fewer bytes in a window fails the download DOWNLOAD_TIMEOUT and
    # frees the update slot long before the overall deadline.
    min_progress_bytes: int = 4096
    min_progress_window_real_s: float = 60.0
    # Between download attempts after PAUSED (simulated seconds, then jitter).
    resume_backoff: BackoffPolicy = field(
        default_factory=lambda: BackoffPolicy(initial_s=30.0, max_s=600.0)
    )
    conditions: ConditionsPlan = field(default_factory=ConditionsPlan)
    timings: InstallTimings | None = None
    factory_image_bytes: int = 4096
    keep_reports: bool = False  # keep every report (tests); else the last one only

    def agent_policy(self, scale: float) -> AgentPolicy:
        """The agent's policy, its download deadline stretched to real time."""
        floor = math.ceil(self.min_download_timeout_real_s / scale)
        return replace(self.policy, download_timeout_s=max(self.policy.download_timeout_s, floor))

    def download_config(self, scale: float) -> DownloadConfig:
        """The downloader's limits: its retry waits scale with simulated time
        (2 s simulated, at least 50 ms real), its timeouts are real."""
        return DownloadConfig(
            backoff=BackoffPolicy(initial_s=max(0.05, 2.0 * scale), max_s=max(0.5, 30.0 * scale)),
            overall_timeout_s=max(self.min_download_timeout_real_s, 3600.0 * scale),
            min_progress_bytes=self.min_progress_bytes,
            min_progress_window_s=self.min_progress_window_real_s,
            fsync=self.durable,
        )


class VehicleRuntime:
    """One vehicle: `await start()` (boot, then connect), `await stop()`."""

    def __init__(
        self,
        directory: Path,
        spec: VehicleSpec,
        trusted: TrustedKeySet,
        *,
        sim: SimTime,
        mqtt: MqttTarget | None = None,
        http: aiohttp.ClientSession | None = None,
        fault_proxy: DownloadFaultProxy | None = None,
        config: RuntimeConfig | None = None,
        on_report: Callable[[VehicleRuntime, OTAStatus], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.spec = spec
        self.config = config or RuntimeConfig()
        self.sim = sim
        self.trusted = _impostor(trusted) if spec.faults.get(SignatureInvalid) else trusted
        self.policy = self.config.agent_policy(sim.scale)
        self._downloader = RangeDownloader(self.config.download_config(sim.scale), session=http)
        self._proxy = fault_proxy
        self._on_report = on_report
        self.flash = FlashPort(
            self.directory,
            spec.faults,
            sim,
            durable=self.config.durable,
            timings=self.config.timings,
        )
        self.model = VehicleModel(
            model=spec.model,
            hardware_id=spec.hardware_id,
            installed_version=spec.installed_version,
            faults=spec.faults,
            plan=self.config.conditions,  # its faults' story starts at the first offer
        )
        self.session = (
            AsyncMqttSession(
                spec.vehicle_id,
                mqtt,
                subscriptions=[(spec.topic("available"), OTA_QOS)],
                on_message=self.handle_message,
            )
            if mqtt is not None
            else None
        )
        self.agent = UpdateAgent(spec.vehicle_id, self.trusted, policy=self.policy)
        self.last_status: OTAStatus | None = None
        self.reports: list[OTAStatus] = []
        self.report_count = 0
        self.delivered = 0
        self.notifications = 0
        self.power_cuts = 0
        self.errors = 0
        self._generation = 0
        self._queue: asyncio.Queue[_Event] = asyncio.Queue()
        self._pump_task: asyncio.Task[None] | None = None
        self._downloads: dict[str, asyncio.Task[None]] = {}
        self._port_task: asyncio.Task[None] | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._conditions_timer: asyncio.TimerHandle | None = None
        self._random = random.Random(spec.vehicle_id)
        self._booted = asyncio.Event()

    # -- identity and state --------------------------------------------------

    @property
    def vehicle_id(self) -> str:
        return self.spec.vehicle_id

    @property
    def installed_version(self) -> str:
        """The version the vehicle runs (from the bootloader, after `boot()`)."""
        return self.model.installed_version

    @property
    def state(self) -> tuple[str, str]:
        """(state, reason) of the last report, or ("IDLE", "") before any."""
        status = self.last_status
        if status is None:
            return ("IDLE", "")
        reason = OTAStatus.Reason.Name(status.reason) if status.reason else ""
        return (OTAStatus.State.Name(status.state), reason)

    @property
    def busy(self) -> bool:
        return self.agent.active_update_id is not None

    def conditions_now(self) -> VehicleConditions:
        return self.model.at(self.sim.now())

    def _conditions_on_offer(self) -> VehicleConditions:
        """The conditions as the agent looks at an offered update. The first
        offer starts the faults' story (`VehicleModel.begin`): a vehicle in
        use is still driving when the notification is processed, whatever
        real time connecting and the campaign took, and parks `duration_s`
        simulated seconds later."""
        if self.model.begin(self.sim.now()):
            self._schedule_conditions()
        return self.conditions_now()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        await self.boot()
        await self.connect()

    async def boot(self) -> None:
        """Power on from disk, restore the agent, resume what was under way."""
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(self._pump(), name=f"{self.vehicle_id}-agent")
        await self._power_on()
        self._booted.set()

    async def connect(self) -> None:
        if self.session is not None:
            await self.session.connect()

    async def stop(self) -> None:
        """Stop everything (a process exit: what is on disk is what survives)."""
        self._shutdown_ports()
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
            self._pump_task = None
        tasks = [*self._downloads.values()]
        if self._port_task is not None:
            tasks.append(self._port_task)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception, PowerCut):
                await task
        if self.session is not None:
            await self.session.close()

    def cancel(self, update_id: str) -> None:
        """The cloud cancelled `update_id` (the contract has no message for it yet)."""
        self._post(lambda agent, now: agent.on_cancel(update_id, now))

    async def handle_message(self, topic: str, payload: bytes) -> None:
        """An inbound MQTT message; returns once the agent persisted its decision."""
        if topic != self.spec.topic("available"):
            return
        await self._booted.wait()
        self.notifications += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._post(
            lambda agent, now: agent.on_notification(payload, self._conditions_on_offer(), now),
            generation=None,
            done=done,
        )
        await done

    # -- booting -------------------------------------------------------------

    async def _power_on(self) -> None:
        """A (re)boot: flash from disk, agent from its snapshot, then `on_start`."""
        self._generation += 1
        image = factory_image(
            self.vehicle_id, self.spec.installed_version, self.config.factory_image_bytes
        )
        report = await self.flash.power_on((self.spec.installed_version, image))
        self.model.installed_version = report.running_version
        self.agent = UpdateAgent(self.vehicle_id, self.trusted, policy=self.policy)
        saved = await asyncio.to_thread(_read_json, self.directory / AGENT_FILE)
        if saved is not None:
            try:
                self.agent.restore(saved)
            except ValidationFailed:
                logger.exception("%s: unreadable agent state; starting afresh", self.vehicle_id)
        boot = _boot_result(report)
        self._post(
            lambda agent, now: agent.on_start(
                self._conditions_on_offer() if agent.active_update_id else self.conditions_now(),
                boot,
                now,
            )
        )
        self._schedule_conditions()

    async def _power_cut(self, cut: PowerCut) -> None:
        """The supply failed: everything in memory is gone; boot again."""
        self.power_cuts += 1
        logger.info("%s: %s; rebooting", self.vehicle_id, cut)
        self.flash.power_cut_happened()
        self._shutdown_ports()
        await self._power_on()

    def _shutdown_ports(self) -> None:
        for task in [*self._downloads.values(), self._port_task]:
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._downloads.clear()
        self._port_task = None
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._conditions_timer is not None:
            self._conditions_timer.cancel()
            self._conditions_timer = None
        self.flash.power_off()

    # -- the event pump --------------------------------------------------------

    def _post(
        self,
        call: AgentCall | None = None,
        *,
        control: Control | None = None,
        generation: int | None = -1,
        done: asyncio.Future[None] | None = None,
    ) -> None:
        """Queue an agent call (or a control step such as a reboot);
        `generation` -1 means "this boot's" (dropped after a reboot), None
        "whatever boot handles it" (notifications)."""
        tag = self._generation if generation == -1 else generation
        self._queue.put_nowait(_Event(tag, call, control, done))

    async def _pump(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                if event.generation is None or event.generation == self._generation:
                    if event.control is not None:
                        await event.control()
                    elif event.call is not None:
                        await self._execute(event.call(self.agent, self.sim.now_ms()))
            except Exception:
                self.errors += 1
                logger.exception("%s: an agent event failed", self.vehicle_id)
            finally:
                if event.done is not None and not event.done.done():
                    event.done.set_result(None)

    async def _execute(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case SaveState(state=state):
                    await self._save(state)
                case Report():
                    self._publish(effect)
                case StartDownload():
                    self._start_download(effect)
                case CancelDownload(update_id=update_id):
                    await self._cancel_download(update_id)
                case DiscardPackage(update_id=update_id):
                    await self._cancel_download(update_id)
                    await asyncio.to_thread(discard_download, self.flash.packages_dir, update_id)
                case StartInstall():
                    self._spawn_port(self._install(effect))
                case Reboot():
                    self._spawn_port(self._boot_port(self.flash.reboot))
                case RollBack():
                    self._spawn_port(self._boot_port(self.flash.roll_back))
                case RunVerification(update_id=update_id, version=version):
                    self._spawn_port(self._verify(update_id, version))
                case CommitUpdate(update_id=update_id):
                    self._spawn_port(self._commit(update_id))
                case ScheduleTick(at_ms=at_ms):
                    self._schedule_tick(at_ms)
                case Dropped(why=why):
                    logger.info("%s: notification dropped: %s", self.vehicle_id, why)

    async def _save(self, state: dict[str, Any]) -> None:
        path = self.directory / AGENT_FILE
        if self.config.durable:
            await asyncio.to_thread(_write_json, path, state, True)
        else:
            _write_json(path, state, False)

    # -- reports ---------------------------------------------------------------

    def _publish(self, report: Report) -> None:
        status = report.status
        self.last_status = status
        self.report_count += 1
        if self.config.keep_reports:
            self.reports.append(status)
        if self._on_report is not None:
            self._on_report(self, status)
        if self.session is None:
            return
        delivered = self.session.publish(
            self.spec.topic("status"), status.SerializeToString(), OTA_QOS
        )
        agent, update_id, sequence = self.agent, status.update_id, status.sequence
        unverified = status.notification_unverified

        def confirm(future: asyncio.Future[bool]) -> None:
            if not future.cancelled() and future.result():
                self.delivered += 1
                agent.on_report_delivered(update_id, sequence, unverified=unverified)

        delivered.add_done_callback(confirm)

    # -- timers ----------------------------------------------------------------

    def _schedule_tick(self, at_ms: int) -> None:
        if at_ms in self._timers:
            return
        delay = self.sim.real_delay(at_ms / 1000 - self.sim.now())
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(at_ms, None)
            self._post(lambda agent, now: agent.on_tick(now, self.conditions_now()))

        self._timers[at_ms] = loop.call_later(delay, fire)

    def _schedule_conditions(self) -> None:
        if self._conditions_timer is not None:
            self._conditions_timer.cancel()
            self._conditions_timer = None
        now = self.sim.now()
        moment = self.model.next_change(now)
        if moment is None:
            return

        def fire() -> None:
            self._conditions_timer = None
            self._post(
                lambda agent, now_ms: agent.on_conditions_changed(self.conditions_now(), now_ms)
            )
            self._schedule_conditions()

        delay = self.sim.real_delay(moment - now) + 0.001
        self._conditions_timer = asyncio.get_running_loop().call_later(delay, fire)

    # -- the download port -------------------------------------------------------

    def _start_download(self, effect: StartDownload) -> None:
        running = self._downloads.pop(effect.update_id, None)
        if running is not None:
            running.cancel()  # a fresh URL: continue from the partial file with it
        self._downloads[effect.update_id] = asyncio.create_task(
            self._download(effect, running), name=f"{self.vehicle_id}-download"
        )

    async def _cancel_download(self, update_id: str) -> None:
        task = self._downloads.pop(update_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

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
                url = self._proxy.url_for(self.vehicle_id, self.spec.faults, url)
            result = await self._downloader.download(
                url,
                self.flash.packages_dir,
                update_id,
                effect.size_bytes,
                effect.sha256,
                progress,
            )
            self._post(_download_outcome(result))
            if result.outcome is not DownloadOutcome.PAUSED:
                break  # done, failed, or waiting for a fresh URL (a new StartDownload)
            attempt += 1
            delay = self.config.resume_backoff.delay(attempt, None, self._random.random)
            await self.sim.sleep(delay)
        if self._downloads.get(update_id) is asyncio.current_task():
            del self._downloads[update_id]

    # -- the installer port ------------------------------------------------------

    def _spawn_port(self, work: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await work
            except PowerCut as cut:
                # Rebooting is the pump's job: it holds the agent between events.
                self._post(control=functools.partial(self._power_cut, cut))

        self._port_task = asyncio.create_task(run(), name=f"{self.vehicle_id}-flash")

    async def _install(self, effect: StartInstall) -> None:
        update_id = effect.update_id

        def step(reached: Step) -> None:
            mapped = InstallStep.__members__.get(reached.name)
            if mapped is not None:
                self._post(lambda agent, now: agent.on_install_step(update_id, mapped, now))

        package = package_path(self.flash.packages_dir, update_id)
        result = await self.flash.install(package, effect.version, effect.sha256.hex(), step)
        failure, detail = result.failure, result.detail
        self._post(
            lambda agent, now: agent.on_install_finished(
                update_id, now, failure=failure, detail=detail
            )
        )

    async def _boot_port(self, boot: Callable[[], Any]) -> None:
        report: BootReport = await boot()
        self.model.installed_version = report.running_version
        result = _boot_result(report)
        self._post(lambda agent, now: agent.on_boot_result(result, now))

    async def _verify(self, update_id: str, version: str) -> None:
        verification = await self.flash.verify(version)
        ok, detail = verification.ok, verification.detail
        self._post(lambda agent, now: agent.on_verification(update_id, now, ok=ok, detail=detail))

    async def _commit(self, update_id: str) -> None:
        await self.flash.commit()
        self._post(lambda agent, now: agent.on_committed(update_id, now))


def _download_outcome(result: DownloadResult) -> AgentCall:
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


@dataclass(frozen=True, slots=True)
class _Event:
    generation: int | None
    call: AgentCall | None
    control: Control | None
    done: asyncio.Future[None] | None


def _boot_result(report: BootReport) -> BootResult:
    return BootResult(
        running_version=report.running_version,
        trial=report.trial,
        fell_back=report.fell_back,
        boot_attempts=report.boot_attempts,
    )


def _impostor(trusted: TrustedKeySet) -> TrustedKeySet:
    """The `signature_invalid` fault: the vehicle's key store holds a wrong
    public key under each trusted id, so every genuine signature fails."""
    keys = []
    for key in trusted:
        wrong = ec.generate_private_key(ec.SECP256R1()).public_key()
        keys.append(TrustedKey(key.key_id, wrong, key.valid_from, key.valid_until))
    return TrustedKeySet(keys)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        logger.warning("unreadable %s; ignored", path)
        return None
    return doc if isinstance(doc, dict) else None


def _write_json(path: Path, doc: dict[str, Any], durable: bool) -> None:
    """Temp file, then `os.replace`: a reader sees the old state or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        json.dump(doc, out, separators=(",", ":"))
        if durable:
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, path)
