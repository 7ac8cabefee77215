"""One simulated vehicle's OTA runtime: the I/O around the pure update agent, on asyncio.

The agent (`agent.py`) decides and returns effects; this runtime executes
them, in order, and feeds what the ports report back into the agent:

==================  ==========================================================
effect              what the runtime does
==================  ==========================================================
SaveState           `agent.json` in the vehicle's directory, atomically
                    (`v2c.vehicle_sim.atomic`; fsync when `durable`)
Report              publish the `OTAStatus` on `.../ota/status` at QoS 2 on
                    the vehicle's session; the PUBCOMP calls
                    `on_report_delivered`
StartDownload       the download port (`download_port`) feeding
                    `on_download_*`
CancelDownload      cancel that task; DiscardPackage: delete its files
StartInstall        `Installer.install` (`flash_port`) feeding
                    `on_install_step` / `on_install_finished`
Reboot, RollBack    the bootloader (watchdog, fallback) -> `on_boot_result`
RunVerification     the six post-install checks -> `on_verification`
CommitUpdate        mark the slot good -> `on_committed`
RunUpdateStep       an allowed pre/post-update action, simulated as an instant
                    step (`RuntimeConfig.failing_update_steps` fail) ->
                    `on_update_step`
ScheduleTick        a loop timer (simulated time) -> `on_tick`
==================  ==========================================================

Events are handled one at a time per vehicle (a queue and one pump task),
so the agent, which is not thread-safe, sees them in order; a port task
posts its callbacks to the queue. Each event carries the "boot generation"
it belongs to: after a power cut the runtime boots again from disk and late
callbacks of the old boot are dropped, as a real reboot would drop them.

The MQTT session is the vehicle's (`v2c.vehicle_sim.vehicle.Vehicle`), shared
with its telemetry: the runtime publishes its reports on it, and the vehicle
routes `.../ota/available` and `.../commands/request` to `handle_message`.

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
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from v2c.contract.errors import ValidationFailed
from v2c.contract.keyset import TrustedKeySet
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.atomic import atomic_write_json, read_json
from v2c.vehicle_sim.mqtt_async import AsyncMqttSession
from v2c.vehicle_sim.ota.agent import UpdateAgent
from v2c.vehicle_sim.ota.agent.effects import (
    CancelDownload,
    CommitUpdate,
    DiscardPackage,
    Dropped,
    Effect,
    InstallStep,
    Reboot,
    Report,
    RollBack,
    RunUpdateStep,
    RunVerification,
    SaveState,
    ScheduleTick,
    StartDownload,
    StartInstall,
)
from v2c.vehicle_sim.ota.agent.reports import named_state
from v2c.vehicle_sim.ota.agent.steps import InstallStep as Step
from v2c.vehicle_sim.ota.agent.steps import PowerCut
from v2c.vehicle_sim.ota.agent.vehicle_state import VehicleConditions
from v2c.vehicle_sim.ota.device.download import RangeDownloader, discard_download, package_path
from v2c.vehicle_sim.ota.device.download_port import DownloadPort
from v2c.vehicle_sim.ota.device.fault_proxy import DownloadFaultProxy
from v2c.vehicle_sim.ota.device.flash_port import FlashPort, factory_image
from v2c.vehicle_sim.ota.device.installer import BootReport
from v2c.vehicle_sim.ota.device.sim_time import SimTime
from v2c.vehicle_sim.ota.device.spec import RuntimeConfig, VehicleSpec
from v2c.vehicle_sim.ota.device.vehicle_model import VehicleModel

logger = logging.getLogger(__name__)

AGENT_FILE: Final = "agent.json"
OTA_QOS: Final = 2
AgentCall = Callable[[UpdateAgent, int], list[Effect]]
Control = Callable[[], Coroutine[Any, Any, None]]


class VehicleRuntime:
    """The OTA half of one vehicle: `await boot()`, `await stop()`; its
    `Vehicle` connects the session and feeds it `handle_message`."""

    def __init__(
        self,
        directory: Path,
        spec: VehicleSpec,
        trusted: TrustedKeySet,
        *,
        sim: SimTime,
        session: AsyncMqttSession | None = None,
        http: aiohttp.ClientSession | None = None,
        fault_proxy: DownloadFaultProxy | None = None,
        config: RuntimeConfig | None = None,
        on_report: Callable[[VehicleRuntime, OTAStatus], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.spec = spec
        # Once, not per message: the topics and the state file's path.
        self._status_topic = spec.topic("status")
        self._available_topic = spec.topic("available")
        self._command_topic = spec.command_topic()
        self._agent_path = str(self.directory / AGENT_FILE)
        self.config = config or RuntimeConfig()
        self.sim = sim
        self.trusted = spec.key_store(trusted)
        self.policy = self.config.agent_policy(sim.scale)
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
        self.session = session  # the vehicle's: reports go out on it
        self.downloads = DownloadPort(
            spec,
            self.config,
            sim,
            RangeDownloader(self.config.download_config(sim.scale), session=http),
            lambda: self.flash.packages_dir,
            self._post,
            fault_proxy,
        )
        self.agent = UpdateAgent(spec.vehicle_id, self.trusted, policy=self.policy)
        self.last_status: OTAStatus | None = None
        self._state: tuple[str, str] = ("IDLE", "")  # of last_status, named once per report
        self.reports: list[OTAStatus] = []
        self.report_count = 0
        self.delivered = 0
        self.notifications = 0
        self.commands = 0
        self.power_cuts = 0
        self.errors = 0
        self._generation = 0
        self._queue: asyncio.Queue[_Event] = asyncio.Queue()
        self._pump_task: asyncio.Task[None] | None = None
        self._port_task: asyncio.Task[None] | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._conditions_timer: asyncio.TimerHandle | None = None
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
        return self._state

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

    async def boot(self) -> None:
        """Power on from disk, restore the agent, resume what was under way."""
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(self._pump(), name=f"{self.vehicle_id}-agent")
        await self._power_on()
        self._booted.set()

    async def stop(self) -> None:
        """Stop everything (a process exit: what is on disk is what survives)."""
        self._shutdown_ports()
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
            self._pump_task = None
        tasks = self.downloads.tasks
        if self._port_task is not None:
            tasks.append(self._port_task)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception, PowerCut):
                await task

    def cancel(self, update_id: str) -> None:
        """The cloud cancelled `update_id`, learnt some other way than a command."""
        self._post(lambda agent, now: agent.on_cancel(update_id, now))

    async def handle_message(self, topic: str, payload: bytes) -> None:
        """An inbound MQTT message; returns once the agent persisted its decision
        (the session acknowledges it then, so the broker redelivers what a
        power cut lost before that)."""
        if topic == self._available_topic:
            self.notifications += 1
            await self._deliver(
                lambda agent, now: agent.on_notification(payload, self._conditions_on_offer(), now)
            )
        elif topic == self._command_topic:
            self.commands += 1
            await self._deliver(lambda agent, now: agent.on_command(payload, now))

    async def _deliver(self, call: AgentCall) -> None:
        await self._booted.wait()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._post(call, generation=None, done=done)
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
        saved = await asyncio.to_thread(read_json, self.directory / AGENT_FILE)
        if saved is not None:
            try:
                self.agent.restore(saved)
            except ValidationFailed:
                logger.exception("%s: unreadable agent state; starting afresh", self.vehicle_id)
        boot = report.to_agent()
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
        self.downloads.shut_down()
        if self._port_task is not None and self._port_task is not asyncio.current_task():
            self._port_task.cancel()
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
                    self.downloads.start(effect)
                case CancelDownload(update_id=update_id):
                    await self.downloads.cancel(update_id)
                case DiscardPackage(update_id=update_id):
                    await self.downloads.cancel(update_id)
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
                case RunUpdateStep():
                    self._update_step(effect)
                case ScheduleTick(at_ms=at_ms):
                    self._schedule_tick(at_ms)
                case Dropped(why=why):
                    logger.info("%s: dropped: %s", self.vehicle_id, why)

    async def _save(self, state: dict[str, Any]) -> None:
        path = self._agent_path
        if self.config.durable:
            await asyncio.to_thread(atomic_write_json, path, state, durable=True)
        else:
            atomic_write_json(path, state, durable=False)

    # -- reports ---------------------------------------------------------------

    def _publish(self, report: Report) -> None:
        status = report.status
        self.last_status = status
        self._state = named_state(status)
        self.report_count += 1
        if self.config.keep_reports:
            self.reports.append(status)
        if self._on_report is not None:
            self._on_report(self, status)
        if self.session is None:
            return
        delivered = self.session.publish(self._status_topic, status.SerializeToString(), OTA_QOS)
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
        result = report.to_agent()
        self._post(lambda agent, now: agent.on_boot_result(result, now))

    async def _verify(self, update_id: str, version: str) -> None:
        verification = await self.flash.verify(version)
        ok, detail = verification.ok, verification.detail
        self._post(lambda agent, now: agent.on_verification(update_id, now, ok=ok, detail=detail))

    def _update_step(self, step: RunUpdateStep) -> None:
        """A simulated action: instant, no I/O; its outcome goes through the queue."""
        ok = step.action not in self.config.failing_update_steps
        detail = "" if ok else f"{step.action} failed (simulated)"
        self._post(
            lambda agent, now: agent.on_update_step(
                step.update_id, step.stage, step.index, now, ok=ok, detail=detail
            )
        )

    async def _commit(self, update_id: str) -> None:
        await self.flash.commit()
        self._post(lambda agent, now: agent.on_committed(update_id, now))


@dataclass(slots=True)  # not frozen: one per event, and a frozen __init__ costs more
class _Event:
    generation: int | None
    call: AgentCall | None
    control: Control | None
    done: asyncio.Future[None] | None
