"""The vehicle's update agent: an explicit state machine with no I/O.

Driven by the notification, the vehicle's conditions, the clock (values
passed in) and what the ports report back (downloader, installer,
bootloader, post-install checks); it answers every event with a list of
`effects` for its runtime to execute in order (see `effects` for the
runtime's obligations). At most one update is active:

    notification ─► (checks) ─► REJECTED
                             └► DEFERRED ──(conditions clear / retry time)──┐
                             └► ACCEPTED ─► DOWNLOADING ⇄ PAUSED            │
                                              │  └► FAILED (S3, checksum,   │
                                              ▼          timeout)           │
                                           DOWNLOADED ─► DEFERRED (in use,  │
                                              │           battery) ─────────┤
                                              ▼                             │
                                           INSTALLING ◄─────────────────────┘
                                              │  └► FAILED (extraction, flash, partition, DTC)
                                              ▼
                                           REBOOTING ─► (boot) ─► VERIFYING ─► COMPLETED
                                                          └► ROLLED_BACK (boot failure,
                                                             verification failure)

Every transition is reported as `OTAStatus`, numbered per (vehicle, update)
from 1, and every sequence the agent emits is a legal walk of the cloud's
`update_state` machine. Deferred updates are retried by the agent itself,
when the conditions clear or at the retry time.

Decisions worth knowing:

* Duplicates. A delivery is recognised by a fingerprint of the whole
  notification (header `message_id` included): the same delivery again
  produces no effects at all. A *new* notification for the active update, or
  for one that completed or rolled back, re-reports the current state under
  the next sequence: the cloud re-notifies when it lost track (a retry, a
  timeout it decided), and the report puts its record right; nothing is
  downloaded or installed twice. A new notification for an update that was
  rejected or failed is processed again (the cloud's retry); its reports
  continue that update's numbering. Only a verified notification acts on an
  update (re-report, fresh URL, retry). The fingerprint includes the content,
  so a forged message reusing a genuine message id cannot suppress the
  genuine one.
* Verification comes first, before any other decision (concurrency
  included). A notification that fails it is answered with REJECTED
  SIGNATURE_VERIFICATION_FAILED flagged `notification_unverified`, carrying
  the SHA-256 of its signed part, numbered by the vehicle's own count of such
  reports with a message id of their own namespace; its fingerprint is kept
  apart from the genuine ones. It changes nothing about the update whose id
  it claims: not its memo, its numbering, its outcome, the active update nor
  the duplicate detection, so the genuine notification, arriving before or
  after, is installed as usual, and the cloud, which never applies such a
  report on the vehicle's word, keeps its record. The claimed ids only
  address the report.
* Concurrency: a second *verified* update is REJECTED UPDATE_IN_PROGRESS.
* Cancellation. The cloud sends a signed `OTACommand` (CANCEL_UPDATE, or
  ROLL_BACK for an update being rolled back) on `.../commands/request`; the
  runtime passes it to `on_command`, which verifies it with the trusted keys
  and this vehicle's id (anything else is `Dropped`, nothing changes) and
  acts on each command id once (see `commands`). Before the installation
  starts, the agent stops, discards the package and reports REJECTED
  CAMPAIGN_CANCELLED naming the command and its reason: the cloud already
  holds the update as cancelled, REJECTED is not a vehicle outcome that
  overrides it (FAILED would move the campaign's counters from cancelled to
  failed), and the report closes the vehicle's record. Once installing, the
  update goes on, as the cloud refuses a cancel there too (E3-US3); the late
  command is said in the final report. After COMPLETED a command changes
  nothing: only a signed rollback manifest rolls back. A cancel for an update
  not seen yet is remembered, and its notification, arriving later, is
  REJECTED CAMPAIGN_CANCELLED. `on_cancel(update_id)` does the same without
  a command (the runtime's own hook). REQUEST_STATUS re-reports, as a new
  notification for the active update does.
* Forced updates and update steps. A manifest's `force_update` (signed)
  accepts the same or an older version, never below an anti-rollback floor
  (`checks.check_version`). Its pre-update steps run before the slot write,
  its post-update steps after the commit, from the agent's allow-list only
  (`update_steps`); a failed pre-update step fails the update with nothing
  written, a failed post-update step is said in COMPLETED.
* A restart (`on_start`) resumes: the download continues from the partial
  file, an interrupted installation starts again (up to
  `max_install_attempts`), a boot is judged from the bootloader's word, and
  the last report, if the runtime never confirmed its delivery, is re-sent
  with its original sequence and message id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec

from v2c.contract.keyset import TrustedKeySet
from v2c.v1.command_pb2 import OTACommandEnvelope
from v2c.v1.ota_pb2 import OTAUpdateAvailable
from v2c.vehicle_sim.ota.agent import commands, fetch, install, offer
from v2c.vehicle_sim.ota.agent.checks import AgentPolicy
from v2c.vehicle_sim.ota.agent.effects import (
    BootResult,
    Effect,
    InstallStep,
    Reason,
    SaveState,
    StepStage,
)
from v2c.vehicle_sim.ota.agent.memory import Phase, load_snapshot, snapshot
from v2c.vehicle_sim.ota.agent.state import AgentState, new_memory
from v2c.vehicle_sim.ota.agent.vehicle_state import VehicleConditions

P = ParamSpec("P")

__all__ = ["UpdateAgent"]


class UpdateAgent:
    """One vehicle's update agent. Not thread-safe: the runtime serialises events.

    `UpdateAgent(vehicle_id, trusted_key_set, policy=AgentPolicy())`; after a
    restart, `restore(saved_state)` and then `on_start(...)`. Every event
    returns the effects to execute in order (empty: nothing to do). Port
    callbacks name their update: a late one for an update no longer active
    (or not in the phase that expects it) is ignored.

    The agent is its `AgentState` plus the transition functions of each phase
    (`offer`, `fetch`, `install`): this class only routes an event to its
    function and turns what the function left in the state into effects.
    """

    def __init__(
        self, vehicle_id: str, trusted: TrustedKeySet, *, policy: AgentPolicy | None = None
    ) -> None:
        policy = policy or AgentPolicy()
        self.state = AgentState(vehicle_id, trusted, policy, new_memory(policy))

    # -- persistence ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything that must survive a power cut, as a JSON-ready dict."""
        return snapshot(self.state.memory, self.state.active)

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Load a snapshot (then call `on_start`). Raises `ValidationFailed`
        for a snapshot that does not read, leaving the agent unchanged."""
        memory = new_memory(self.state.policy)
        active = load_snapshot(dict(saved), memory)
        self.state.memory, self.state.active = memory, active

    # -- introspection -------------------------------------------------------

    @property
    def vehicle_id(self) -> str:
        return self.state.vehicle_id

    @property
    def policy(self) -> AgentPolicy:
        return self.state.policy

    @property
    def trusted(self) -> TrustedKeySet:
        return self.state.trusted

    @trusted.setter
    def trusted(self, keys: TrustedKeySet) -> None:
        self.state.trusted = keys

    @property
    def active_update_id(self) -> str | None:
        return self.state.active_update_id

    @property
    def phase(self) -> Phase | None:
        return self.state.active.phase if self.state.active is not None else None

    @property
    def conditions(self) -> VehicleConditions | None:
        return self.state.conditions

    @property
    def rollback_floor(self) -> str:
        """The highest anti-rollback floor of a completed update."""
        return self.state.memory.rollback_floor

    def last_sequence(self, update_id: str) -> int:
        memo = self.state.memory.memo(update_id)
        return memo.sequence if memo is not None else 0

    def on_report_delivered(
        self, update_id: str, sequence: int, *, unverified: bool = False
    ) -> None:
        """The broker acknowledged a report (PUBCOMP). Optional: it only spares
        a harmless re-send after the next restart. Persisted with the next
        `SaveState`, so it produces no effect of its own. A report about an
        unverified notification (`unverified`, its `notification_unverified`)
        is numbered apart and confirms nothing about the update it names."""
        if unverified:
            return
        memo = self.state.memory.memo(update_id)
        if memo is not None and memo.sequence == sequence:
            memo.delivered = True

    def _handle(
        self,
        now_ms: int,
        transition: Callable[Concatenate[AgentState, P], None],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> list[Effect]:
        st = self.state
        st.out, st.dirty, st.now = [], False, now_ms
        transition(st, *args, **kwargs)
        if not st.out and not st.dirty:
            return []
        return [SaveState(self.snapshot()), *st.out]

    # -- events --------------------------------------------------------------

    def on_start(
        self, conditions: VehicleConditions, boot: BootResult, now_ms: int
    ) -> list[Effect]:
        """At every process start (after `restore`): resume what was under way,
        judge the boot, re-send the last report if its delivery is unconfirmed."""
        return self._handle(now_ms, offer.start, conditions, boot)

    def on_notification(
        self, message: bytes | OTAUpdateAvailable, conditions: VehicleConditions, now_ms: int
    ) -> list[Effect]:
        """An `OTAUpdateAvailable` from `.../ota/available` (raw payload or decoded)."""
        return self._handle(now_ms, offer.notified, message, conditions)

    def on_conditions_changed(self, conditions: VehicleConditions, now_ms: int) -> list[Effect]:
        """The vehicle changed (charging, parked, ...): a deferred update may proceed."""
        return self._handle(now_ms, offer.conditions_changed, conditions)

    def on_tick(self, now_ms: int, conditions: VehicleConditions | None = None) -> list[Effect]:
        """Time passed: a deferral's retry time or the download deadline may be
        due. A runtime that polls the vehicle instead of reporting changes
        passes the `conditions` here; a change acts as `on_conditions_changed`."""
        return self._handle(now_ms, offer.tick, conditions)

    def on_cancel(self, update_id: str, now_ms: int) -> list[Effect]:
        """The cloud cancelled `update_id` (campaign cancelled or update withdrawn),
        as the runtime learnt it without a command; `on_command` is the wire's way."""
        return self._handle(now_ms, offer.cancel, update_id)

    def on_command(self, message: bytes | OTACommandEnvelope, now_ms: int) -> list[Effect]:
        """An `OTACommandEnvelope` from `.../commands/request` (raw payload or decoded)."""
        return self._handle(now_ms, commands.commanded, message)

    def on_download_progress(
        self, update_id: str, bytes_downloaded: int, now_ms: int
    ) -> list[Effect]:
        """Bytes on board so far (call it per chunk; the agent reports every 10 %)."""
        return self._handle(now_ms, fetch.progress, update_id, bytes_downloaded)

    def on_download_paused(
        self, update_id: str, bytes_downloaded: int, now_ms: int, detail: str = ""
    ) -> list[Effect]:
        """The connection was lost; the downloader waits to resume."""
        return self._handle(now_ms, fetch.paused, update_id, bytes_downloaded, detail)

    def on_download_resumed(self, update_id: str, now_ms: int) -> list[Effect]:
        """Data flows again (a progress callback while paused means the same)."""
        return self._handle(now_ms, fetch.resumed, update_id)

    def on_download_finished(
        self,
        update_id: str,
        now_ms: int,
        *,
        failure: Reason | None = None,
        detail: str = "",
        attempts: int = 0,
    ) -> list[Effect]:
        """The package is complete and its SHA-256 matched (`failure` None), or
        the download failed for good: S3_UNAVAILABLE, CHECKSUM_MISMATCH,
        DOWNLOAD_TIMEOUT, after the downloader's own `attempts`."""
        return self._handle(now_ms, fetch.downloaded, update_id, failure, detail, attempts)

    def on_install_step(self, update_id: str, step: InstallStep, now_ms: int) -> list[Effect]:
        """The installer reached `step`: an INSTALLING progress report."""
        return self._handle(now_ms, install.install_step, update_id, step)

    def on_install_finished(
        self, update_id: str, now_ms: int, *, failure: Reason | None = None, detail: str = ""
    ) -> list[Effect]:
        """The slot is written and the bootloader armed (`failure` None), or the
        installation failed: EXTRACTION_FAILED, FLASH_WRITE_FAILURE,
        PARTITION_UNAVAILABLE, CRITICAL_DTC_PRESENT, CHECKSUM_MISMATCH."""
        return self._handle(now_ms, install.installed, update_id, failure, detail)

    def on_update_step(
        self,
        update_id: str,
        stage: StepStage,
        index: int,
        now_ms: int,
        *,
        ok: bool,
        detail: str = "",
    ) -> list[Effect]:
        """The runtime ran the `RunUpdateStep` at `index` of the manifest's
        `stage` steps: it worked (`ok`), or it failed for `detail`."""
        return self._handle(now_ms, install.update_step, update_id, stage, index, ok, detail)

    def on_boot_result(self, boot: BootResult, now_ms: int) -> list[Effect]:
        """The vehicle booted (after `Reboot` or `RollBack`) without the process
        restarting; after a real restart `on_start` does this."""
        return self._handle(now_ms, install.after_boot, boot)

    def on_verification(
        self, update_id: str, now_ms: int, *, ok: bool, detail: str = ""
    ) -> list[Effect]:
        """The post-install checks passed (then commit), or failed (then roll back)."""
        return self._handle(now_ms, install.verified, update_id, ok, detail)

    def on_committed(self, update_id: str, now_ms: int) -> list[Effect]:
        """The running slot is marked good: the update is complete."""
        return self._handle(now_ms, install.committed, update_id)
