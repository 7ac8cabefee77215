"""What the update agent keeps across restarts, and its JSON form.

Four things must survive a power cut: the active update (where it is, what
was verified, how far the download got), the report sequence of every
recent update (a restarted agent must never reuse a number the cloud has
seen, or its next report is dropped as a duplicate), which notifications
were handled (a notification redelivered after the restart must not start
the update again), and which cloud commands were acted on (a command
redelivered from the broker's session must not act twice). The JSON is
written by the runtime, atomically, from `SaveState` effects; nothing here
does I/O.

Notifications that failed verification are kept apart: their fingerprints in
a set of their own (a flood of forged messages cannot push a genuine
delivery's fingerprint out and make it look new), and their reports numbered
by one per-vehicle counter (`unverified_reports`), never in an update's memo.

Memory is bounded: the oldest updates, notification fingerprints and
command ids are forgotten first, never the active update.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Final

from v2c.contract.errors import ValidationFailed
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus
from v2c.vehicle_sim.ota.agent.checks import Reason, Stage

FORMAT: Final = 1


class Phase(StrEnum):
    """Where the active update is. Mostly the last reported state; the two
    internal phases are waits the proto has no state for (the report stays
    VERIFYING while the slot is committed or the rollback reboots)."""

    DEFERRED = "deferred"
    DOWNLOADING = "downloading"
    PAUSED = "paused"
    DOWNLOADED = "downloaded"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    VERIFYING = "verifying"
    COMMITTING = "committing"  # verified; waiting for the slot to be marked good
    FINISHING = "finishing"  # committed; running the post-update steps
    ROLLING_BACK = "rolling_back"  # verification failed; waiting for the old slot to boot


DOWNLOAD_PHASES: Final = frozenset({Phase.DOWNLOADING, Phase.PAUSED})
# Phases in which the cloud may still cancel (its CANCELLABLE set, vehicle side).
CANCELLABLE: Final = frozenset({Phase.DEFERRED, Phase.DOWNLOADING, Phase.PAUSED, Phase.DOWNLOADED})
# Phases after which a boot is the next thing that happens, or may have happened.
BOOT_PHASES: Final = frozenset(
    {
        Phase.INSTALLING,
        Phase.REBOOTING,
        Phase.VERIFYING,
        Phase.COMMITTING,
        Phase.FINISHING,
        Phase.ROLLING_BACK,
    }
)

CANCELLED: Final = "CANCELLED"  # an outcome the proto has no state for


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")  # base64.b64encode's


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(slots=True)
class ActiveUpdate:
    """The one update in progress. `manifest` holds the exact signed bytes,
    verified when the notification arrived."""

    update_id: str
    manifest: bytes
    download_url: str
    correlation_id: str
    received_at_ms: int
    from_version: str  # what the vehicle ran when the update arrived
    phase: Phase = Phase.DEFERRED
    stage: Stage = Stage.ACCEPT  # while DEFERRED: waiting to download or to install
    deferred_reason: Reason = OTAStatus.REASON_UNSPECIFIED
    retry_at_ms: int = 0
    bytes_downloaded: int = 0
    reported_percent: int = 0
    download_started_ms: int = 0
    download_finished_ms: int = 0
    install_started_ms: int = 0
    install_attempts: int = 0
    failure_reason: Reason = OTAStatus.REASON_UNSPECIFIED  # why a rollback was started
    failure_detail: str = ""
    pre_steps_done: int = 0  # of this installation attempt
    post_steps_done: int = 0
    post_step_failures: str = ""  # said in the COMPLETED report; the update stands
    late_command: str = ""  # a cancel or rollback that came once installing
    _parsed: OTAManifest | None = field(default=None, repr=False, compare=False)

    @property
    def parsed(self) -> OTAManifest:
        if self._parsed is None:
            self._parsed = OTAManifest.FromString(self.manifest)
        return self._parsed

    @property
    def campaign_id(self) -> str:
        return self.parsed.campaign_id

    def percent(self) -> int:
        size = self.parsed.size_bytes
        return 100 if size <= 0 else min(100, self.bytes_downloaded * 100 // size)

    def to_json(self) -> dict[str, Any]:
        doc = {name: getattr(self, name) for name in _ACTIVE_FIELDS}
        doc["manifest"] = _b64(self.manifest)
        doc["phase"] = self.phase.value
        doc["stage"] = self.stage.value
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ActiveUpdate:
        known = set(_ACTIVE_FIELDS)
        values = {k: v for k, v in doc.items() if k in known}
        values["manifest"] = _unb64(doc["manifest"])
        values["phase"] = Phase(doc["phase"])
        values["stage"] = Stage(doc["stage"])
        return cls(**values)


# What a snapshot holds of the active update, in field order (saved per report).
_ACTIVE_FIELDS: Final = tuple(f.name for f in fields(ActiveUpdate) if f.name != "_parsed")


@dataclass(slots=True)
class UpdateMemo:
    """One update the vehicle has reported on."""

    sequence: int = 0  # the last sequence used
    outcome: str = ""  # "" while active; then a terminal state name or CANCELLED
    last_report: bytes = b""  # serialized OTAStatus, re-sent after a restart
    delivered: bool = False  # the runtime confirmed the last report's delivery

    def last_status(self) -> OTAStatus | None:
        return OTAStatus.FromString(self.last_report) if self.last_report else None


class Memory:
    """Bounded memory of updates (insertion = recency order) and fingerprints."""

    def __init__(
        self,
        max_updates: int,
        max_notifications: int,
        max_unverified: int = 64,
        max_commands: int = 256,
    ) -> None:
        self._max_updates = max_updates
        self._max_notifications = max_notifications
        self._max_unverified = max_unverified
        self._max_commands = max_commands
        self.updates: OrderedDict[str, UpdateMemo] = OrderedDict()
        self.notifications: OrderedDict[str, None] = OrderedDict()
        self.unverified: OrderedDict[str, None] = OrderedDict()  # fingerprints
        self.commands: OrderedDict[str, None] = OrderedDict()  # ids acted on
        self.unverified_reports = 0  # the last sequence of an unverified report
        self.rollback_floor = ""

    def memo(self, update_id: str) -> UpdateMemo | None:
        return self.updates.get(update_id)

    def touch(self, update_id: str, *, keep: str | None = None) -> UpdateMemo:
        """The memo for `update_id`, made the most recent; forgets the oldest
        ones beyond the bound, except `keep` (the active update)."""
        memo = self.updates.get(update_id)
        if memo is None:
            memo = self.updates[update_id] = UpdateMemo()
        self.updates.move_to_end(update_id)
        if len(self.updates) <= self._max_updates:
            return memo
        for old in list(self.updates):
            if len(self.updates) <= self._max_updates:
                break
            if old not in (update_id, keep):
                del self.updates[old]
        return memo

    def seen(self, fingerprint: str) -> bool:
        return fingerprint in self.notifications or fingerprint in self.unverified

    def remember(self, fingerprint: str) -> None:
        self.notifications[fingerprint] = None
        while len(self.notifications) > self._max_notifications:
            self.notifications.popitem(last=False)

    def remember_unverified(self, fingerprint: str) -> None:
        self.unverified[fingerprint] = None
        while len(self.unverified) > self._max_unverified:
            self.unverified.popitem(last=False)

    def acted_on(self, command_id: str) -> bool:
        return command_id in self.commands

    def remember_command(self, command_id: str) -> None:
        self.commands[command_id] = None
        while len(self.commands) > self._max_commands:
            self.commands.popitem(last=False)

    def most_recent(self) -> tuple[str, UpdateMemo] | None:
        if not self.updates:
            return None
        update_id = next(reversed(self.updates))
        return update_id, self.updates[update_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "rollback_floor": self.rollback_floor,
            "notifications": list(self.notifications),
            "unverified": list(self.unverified),
            "unverified_reports": self.unverified_reports,
            "commands": list(self.commands),
            "updates": [
                {
                    "update_id": uid,
                    "sequence": memo.sequence,
                    "outcome": memo.outcome,
                    "last_report": _b64(memo.last_report),
                    "delivered": memo.delivered,
                }
                for uid, memo in self.updates.items()
            ],
        }

    def load(self, doc: dict[str, Any]) -> None:
        self.rollback_floor = str(doc.get("rollback_floor", ""))
        self.notifications = OrderedDict((str(fp), None) for fp in doc.get("notifications", []))
        self.unverified = OrderedDict((str(fp), None) for fp in doc.get("unverified", []))
        self.unverified_reports = int(doc.get("unverified_reports", 0))
        self.commands = OrderedDict((str(cid), None) for cid in doc.get("commands", []))
        self.updates = OrderedDict()
        for entry in doc.get("updates", []):
            self.updates[str(entry["update_id"])] = UpdateMemo(
                sequence=int(entry["sequence"]),
                outcome=str(entry["outcome"]),
                last_report=_unb64(entry["last_report"]),
                delivered=bool(entry.get("delivered", False)),
            )


def snapshot(memory: Memory, active: ActiveUpdate | None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        **memory.to_json(),
        "active": active.to_json() if active is not None else None,
    }


def load_snapshot(doc: Any, memory: Memory) -> ActiveUpdate | None:
    """Fill `memory` from a snapshot and return the active update. A snapshot
    that does not read is refused whole: half a memory could reuse sequences."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValidationFailed("not an update agent snapshot (format 1)")
    try:
        memory.load(doc)
        active = doc.get("active")
        return ActiveUpdate.from_json(active) if active is not None else None
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationFailed(f"unreadable update agent snapshot: {exc}") from exc
