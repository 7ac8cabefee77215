"""What the update agent asks its runtime to do, and what the ports tell it back.

The agent decides and never acts: each event handler returns a list of
effects, plain values, which the runtime executes *in order*. A non-empty
list always starts with `SaveState`: the runtime writes that snapshot to
flash atomically (temp file, then `os.replace`) before anything else, so a
report is never published, nor a reboot started, from a state a power cut
could forget. An empty list means nothing changed and nothing is written.

Effects (runtime obligations):

* `SaveState(state)`: persist `state` (a JSON-ready dict); `UpdateAgent.restore` reads it back.
* `Report(status)`: publish `status.SerializeToString()` on `.../ota/status` at QoS 2.
  `redelivery` marks the last report re-sent after a restart (same sequence, same message id).
* `StartDownload(...)`: start (or, with `resume`, continue from the partial file) the
  HTTP Range download; call `on_download_progress` / `_paused` / `_resumed` / `_finished`.
  Verify the SHA-256 before reporting success. Issued again for a download already
  running when the cloud re-issued an expired URL: continue with the new URL.
* `CancelDownload(update_id)`: stop a running download (no further callbacks needed).
* `DiscardPackage(update_id)`: delete the downloaded or partial package.
* `StartInstall(...)`: write the package to the inactive slot and arm the bootloader
  (boot the new slot on trial); call `on_install_step` and then `on_install_finished`.
* `Reboot(update_id)`: reboot into the armed slot; then call `on_boot_result`
  (or, after a real process restart, `on_start` with the boot result).
* `RunVerification(update_id, version)`: run the post-install checks; call `on_verification`.
* `CommitUpdate(update_id)`: mark the running slot good (bootcount=0,
  upgrade_available=0); call `on_committed`.
* `RollBack(update_id)`: switch the bootloader back to the previous slot and reboot;
  then call `on_boot_result` / `on_start`.
* `RunUpdateStep(update_id, stage, index, action, argument)`: run one pre- or
  post-update step of the verified manifest (BR-OTA-027; an action of the agent's
  allow-list, `update_steps.ALLOWED_ACTIONS`); call `on_update_step` with its outcome.
* `ScheduleTick(at_ms)`: call `on_tick` at or after `at_ms` (calling it more often is harmless).
* `Dropped(why)`: a notification the agent could not even address, or a command it
  refused (unverified, expired, for another vehicle) or cannot act on (log it; no report).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, TypeAlias

from v2c.v1.ota_pb2 import OTAStatus


@dataclass(frozen=True, slots=True)
class SaveState:
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Report:
    status: OTAStatus
    redelivery: bool = False

    @property
    def update_id(self) -> str:
        return self.status.update_id


@dataclass(frozen=True, slots=True)
class StartDownload:
    update_id: str
    url: str
    size_bytes: int
    sha256: bytes  # 32 raw bytes, from the verified manifest
    resume: bool  # continue from the partial file if there is one


@dataclass(frozen=True, slots=True)
class CancelDownload:
    update_id: str


@dataclass(frozen=True, slots=True)
class DiscardPackage:
    update_id: str


@dataclass(frozen=True, slots=True)
class StartInstall:
    update_id: str
    version: str
    size_bytes: int
    sha256: bytes  # the installer re-checks the package before writing the slot
    attempt: int  # 1 for the first try, more after an interrupted installation


@dataclass(frozen=True, slots=True)
class Reboot:
    update_id: str


@dataclass(frozen=True, slots=True)
class RunVerification:
    update_id: str
    version: str


@dataclass(frozen=True, slots=True)
class CommitUpdate:
    update_id: str


@dataclass(frozen=True, slots=True)
class RollBack:
    update_id: str


class StepStage(StrEnum):
    """When an update step runs: before the slot is written, or after the commit."""

    PRE = "pre"
    POST = "post"


@dataclass(frozen=True, slots=True)
class RunUpdateStep:
    update_id: str
    stage: StepStage
    index: int  # its position in the manifest's list, from 0
    action: str  # one of the agent's allow-list, checked before the update was accepted
    argument: str


@dataclass(frozen=True, slots=True)
class ScheduleTick:
    at_ms: int


@dataclass(frozen=True, slots=True)
class Dropped:
    why: str


Effect = (
    SaveState
    | Report
    | StartDownload
    | CancelDownload
    | DiscardPackage
    | StartInstall
    | Reboot
    | RunVerification
    | CommitUpdate
    | RollBack
    | RunUpdateStep
    | ScheduleTick
    | Dropped
)


class InstallStep(IntEnum):
    """The installer's steps (FMEA phase 3), valued at the progress they report."""

    PRECHECK = 5
    BACKUP = 10
    EXTRACT = 20
    WRITE = 40
    WRITTEN = 70
    BOOT_FLAGS = 80


REBOOTING_PERCENT = 90
VERIFYING_PERCENT = 95


@dataclass(frozen=True, slots=True)
class BootResult:
    """What the bootloader says after a boot.

    `trial`: running the updated slot on trial (upgrade_available=1, not yet
    committed). `fell_back`: the bootloader gave up on the updated slot after
    `boot_attempts` failed boots and runs the previous one. Neither: a normal
    boot of a committed slot.
    """

    running_version: str
    trial: bool = False
    fell_back: bool = False
    boot_attempts: int = 0


State: TypeAlias = OTAStatus.State.ValueType
Reason: TypeAlias = OTAStatus.Reason.ValueType
