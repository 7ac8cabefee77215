"""The campaign as stored: one DynamoDB item, counters included.

Counters live on the campaign item as top-level numbers (`c_completed`,
and per wave `w0_completed`, ...) so that a status report moves them with
`ADD` in the same transaction as the vehicle's record; they are never
recomputed and written back, which concurrent reports would overwrite.
Failures by reason are counters too, one top-level number per reason
(`fr_<reason>`, `reason_attr`): `ADD` starts a missing top-level attribute at
0, where a map's entry would need the map to exist first. A campaign created
before they were kept has no `reasons_counted` flag: its reasons counted only
from then on, so it answers none (None) and readers fold its records instead.

Targets that were not notified yet exist only in the stored plan and in
`c_pending`: per-vehicle records are written wave by wave as vehicles are
notified, which keeps creation of a 100,000-vehicle campaign to one plan
upload and one item write.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.counters import CampaignCounters, Counter
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import Wave

REASON_PREFIX: Final = "fr_"
REASONS_COUNTED: Final = "reasons_counted"  # the flag of a campaign that counts them


def reason_attr(reason: str) -> str:
    """The attribute counting the failures with `reason` (any text: written
    through expression attribute names)."""
    return REASON_PREFIX + reason


def _reasons(item: Mapping[str, Any]) -> dict[str, int]:
    counts = {
        k[len(REASON_PREFIX) :]: int(v) for k, v in item.items() if k.startswith(REASON_PREFIX)
    }
    return {reason: count for reason, count in sorted(counts.items()) if count}


def counter_attr(counter: Counter | str, wave: int | None = None) -> str:
    name = counter.value if isinstance(counter, Counter) else counter
    return f"c_{name}" if wave is None else f"w{wave}_{name}"


def _counters(item: dict[str, Any], wave: int | None = None) -> CampaignCounters:
    return CampaignCounters(
        **{c.value: max(0, int(item.get(counter_attr(c, wave), 0))) for c in Counter}
    )


@dataclass(frozen=True, slots=True)
class Release:
    """The signed update every vehicle of the campaign receives."""

    update_id: str
    manifest: bytes
    signature: bytes
    key_id: str
    expires_at_ms: int

    def to_item(self) -> dict[str, Any]:
        return {
            "update_id": self.update_id,
            "manifest": base64.b64encode(self.manifest).decode(),
            "signature": base64.b64encode(self.signature).decode(),
            "key_id": self.key_id,
            "expires_at_ms": self.expires_at_ms,
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Release:
        return cls(
            update_id=str(item["update_id"]),
            manifest=base64.b64decode(item["manifest"]),
            signature=base64.b64decode(item["signature"]),
            key_id=str(item["key_id"]),
            expires_at_ms=int(item["expires_at_ms"]),
        )


@dataclass(frozen=True, slots=True)
class Campaign:
    campaign_id: str
    spec: CampaignSpec
    status: CampaignStatus
    firmware_id: str
    version: str
    device_model: str
    release: Release
    target_count: int
    waves: tuple[Wave, ...]
    created_at_ms: int
    created_by: str = ""
    current_wave: int = 0
    cursor: int = 0  # targets notified so far, in plan order
    counters: CampaignCounters = field(default_factory=CampaignCounters)
    wave_counters: tuple[CampaignCounters, ...] = ()
    # Failures by reason as stored (zeros left out), moved with `counters`;
    # meaningful only when `reasons_counted` (False: created before they were
    # kept). Read them through `failures_by_reason`.
    failure_reasons: Mapping[str, int] = field(default_factory=dict)
    reasons_counted: bool = True
    updated_at_ms: int = 0
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    approved_by: str | None = None
    approved_at_ms: int | None = None
    approval_comment: str = ""  # what the approver said with the approval (PRD E2-US6 AC2)
    rejected_by: str | None = None  # the approver who rejected it; the reason: status_reason
    rejected_at_ms: int | None = None
    # A start asked for while the campaign was planning: it starts when planned.
    start_requested_at_ms: int | None = None
    status_reason: str = ""
    last_progress_at_ms: int = 0
    stalled: bool = False
    gate: dict[str, Any] | None = None
    lease_owner: str = ""
    lease_until_ms: int = 0
    revision: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def approved(self) -> bool:
        return self.approved_by is not None

    @property
    def remaining(self) -> int:
        return self.target_count - self.cursor

    @property
    def failures_by_reason(self) -> dict[str, int] | None:
        """The failures by reason, most first; None for a campaign created
        before they were counted (its counts would be partial)."""
        if not self.reasons_counted:
            return None
        counted = [r for r in self.failure_reasons.items() if r[1] > 0]  # as counters: not below 0
        return dict(sorted(counted, key=lambda r: (-r[1], r[0])))

    def wave_start(self, wave: int) -> int:
        return 0 if wave == 0 else self.waves[wave - 1].end

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "campaign_id": self.campaign_id,
            "name": self.spec.name,
            "spec": self.spec.model_dump_json(exclude_unset=True),
            "status": self.status.value,
            "firmware_id": self.firmware_id,
            "version": self.version,
            "device_model": self.device_model,
            "release": self.release.to_item(),
            "target_count": self.target_count,
            "waves": json.dumps([[w.name, w.end, w.gated] for w in self.waves]),
            "created_at": self.created_at_ms,
            "created_by": self.created_by,
            "current_wave": self.current_wave,
            "cursor": self.cursor,
            "updated_at": self.updated_at_ms,
            "started_at": self.started_at_ms,
            "finished_at": self.finished_at_ms,
            "approved_by": self.approved_by,
            "approved_at": self.approved_at_ms,
            "approval_comment": self.approval_comment,
            "rejected_by": self.rejected_by,
            "rejected_at": self.rejected_at_ms,
            "start_requested_at": self.start_requested_at_ms,
            "status_reason": self.status_reason,
            "last_progress_at": self.last_progress_at_ms,
            "stalled": self.stalled,
            "gate": json.dumps(self.gate) if self.gate is not None else None,
            "lease_owner": self.lease_owner,
            "lease_until": self.lease_until_ms,
            "revision": self.revision,
            REASONS_COUNTED: self.reasons_counted,
        }
        for reason, count in self.failure_reasons.items():
            if count:
                item[reason_attr(reason)] = count
        for counter in Counter:
            item[counter_attr(counter)] = self.counters.get(counter)
            for number, wave_counters in enumerate(self.wave_counters):
                item[counter_attr(counter, number)] = wave_counters.get(counter)
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Campaign:
        waves = tuple(Wave(str(n), int(e), bool(g)) for n, e, g in json.loads(item["waves"]))
        gate = item.get("gate")
        return cls(
            campaign_id=str(item["campaign_id"]),
            spec=CampaignSpec.model_validate_json(item["spec"]),
            status=CampaignStatus(item["status"]),
            firmware_id=str(item["firmware_id"]),
            version=str(item["version"]),
            device_model=str(item["device_model"]),
            release=Release.from_item(item["release"]),
            target_count=int(item["target_count"]),
            waves=waves,
            created_at_ms=int(item["created_at"]),
            created_by=str(item.get("created_by", "")),
            current_wave=int(item.get("current_wave", 0)),
            cursor=int(item.get("cursor", 0)),
            counters=_counters(item),
            wave_counters=tuple(_counters(item, n) for n in range(len(waves))),
            failure_reasons=_reasons(item),
            reasons_counted=bool(item.get(REASONS_COUNTED, False)),
            updated_at_ms=int(item.get("updated_at", 0)),
            started_at_ms=_opt_int(item.get("started_at")),
            finished_at_ms=_opt_int(item.get("finished_at")),
            approved_by=item.get("approved_by"),
            approved_at_ms=_opt_int(item.get("approved_at")),
            approval_comment=str(item.get("approval_comment") or ""),
            rejected_by=item.get("rejected_by"),
            rejected_at_ms=_opt_int(item.get("rejected_at")),
            start_requested_at_ms=_opt_int(item.get("start_requested_at")),
            status_reason=str(item.get("status_reason", "")),
            last_progress_at_ms=int(item.get("last_progress_at", 0)),
            stalled=bool(item.get("stalled", False)),
            gate=json.loads(gate) if gate else None,
            lease_owner=str(item.get("lease_owner", "")),
            lease_until_ms=int(item.get("lease_until", 0)),
            revision=int(item.get("revision", 0)),
        )

    def event_detail(self, **extra: Any) -> dict[str, Any]:
        """The campaign as every `campaign.*` event shows it, with `extra`."""
        from v2c.handlers.ota.events import campaign_detail  # events.py types this module

        return campaign_detail(self, **extra)

    def evolve(self, **changes: Any) -> Campaign:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown campaign fields {sorted(unknown)}")
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A campaign's move to `status` and what is recorded with it (None: left
    as stored). A value, so a service states the move and the repository
    alone knows how it is written."""

    status: CampaignStatus
    updated_at_ms: int | None = None
    status_reason: str | None = None
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    last_progress_at_ms: int | None = None
    approved_by: str | None = None
    approved_at_ms: int | None = None
    approval_comment: str | None = None
    rejected_by: str | None = None
    rejected_at_ms: int | None = None
    gate: dict[str, Any] | None = None

    def changes(self) -> dict[str, Any]:
        """The `Campaign` fields this change sets."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if value is not None}


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
