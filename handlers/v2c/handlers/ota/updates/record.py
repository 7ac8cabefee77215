"""One vehicle's update as stored, keyed (vehicle_id, update_id).

`update_id` is the signed release's id: what the vehicle sees in its
manifest and echoes in every `OTAStatus`, so a report finds its record by
key without an index. `device_update_id` is the per-vehicle handle the API
exposes (`GET /updates/{update_id}`): a UUIDv5 of (release, vehicle), so
it is deterministic and a retried notification never makes a second one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, Final

from v2c.handlers.ota.domain.update_state import UpdateRecord, UpdateState

_NAMESPACE: Final = uuid.UUID("6f1c2b7e-5d0a-4c1e-9a57-0b7f2c3d4e51")


class UpdateKind(StrEnum):
    CAMPAIGN = "campaign"
    DEVICE = "device"  # a single-device or bulk update outside any campaign
    ROLLBACK = "rollback"  # a signed rollback to the version installed before


def device_update_id(update_id: str, vehicle_id: str) -> str:
    return uuid.uuid5(_NAMESPACE, f"{update_id}/{vehicle_id}").hex


@dataclass(frozen=True, slots=True)
class VehicleUpdate:
    vehicle_id: str
    update_id: str
    kind: UpdateKind
    firmware_id: str
    to_version: str
    from_version: str = ""
    campaign_id: str = ""
    wave: int | None = None
    region: str = ""
    state: UpdateState = UpdateState.PENDING
    last_sequence: int = 0
    retries: int = 0
    decided_by_cloud: bool = False
    reason: str = ""
    error_detail: str = ""
    progress_percent: int = 0
    bytes_downloaded: int = 0
    download_duration_ms: int = 0
    install_duration_ms: int = 0
    total_duration_ms: int = 0
    installed_version: str = ""
    reverts_update_id: str = ""  # a rollback: the update it undoes
    # A device update's own limits (BR-OTA-024/025); a campaign's records
    # leave them unset and follow their campaign's spec.
    max_retries: int | None = None
    timeout_ms: int = 0  # how long the update may take from notified; 0: not set here
    created_at_ms: int = 0
    notified_at_ms: int = 0
    started_at_ms: int = 0
    completed_at_ms: int = 0
    updated_at_ms: int = 0
    notifications: int = 0
    # The signed release of an update outside a campaign (a campaign's
    # records share the release stored on the campaign item).
    manifest: bytes = b""
    signature: bytes = b""
    key_id: str = ""

    @classmethod
    def notified(
        cls, *, vehicle_id: str, update_id: str, now_ms: int, **fields: Any
    ) -> VehicleUpdate:
        """A record born notified: the cloud writes it when it tells the
        vehicle, never earlier (pending targets live only in the plan)."""
        return cls(
            vehicle_id=vehicle_id,
            update_id=update_id,
            state=UpdateState.NOTIFIED,
            created_at_ms=now_ms,
            notified_at_ms=now_ms,
            updated_at_ms=now_ms,
            notifications=1,
            **fields,
        )

    @property
    def device_update_id(self) -> str:
        return device_update_id(self.update_id, self.vehicle_id)

    @property
    def machine(self) -> UpdateRecord:
        """The part the state machine reads and moves."""
        return UpdateRecord(self.state, self.last_sequence, self.retries, self.decided_by_cloud)

    def with_machine(self, record: UpdateRecord, **changes: Any) -> VehicleUpdate:
        return replace(
            self,
            state=record.state,
            last_sequence=record.last_sequence,
            retries=record.retries,
            decided_by_cloud=record.decided_by_cloud,
            **changes,
        )

    def to_item(self) -> dict[str, Any]:
        item = {f.name: getattr(self, f.name) for f in fields(self)}
        item["kind"] = self.kind.value
        item["state"] = self.state.value
        item["device_update_id"] = self.device_update_id
        if not self.campaign_id:
            item.pop("campaign_id")  # GSI keys cannot be empty strings
        for name in ("manifest", "signature", "key_id"):
            if not item[name]:
                item.pop(name)
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> VehicleUpdate:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in item.items() if k in known}
        values["kind"] = UpdateKind(values["kind"])
        values["state"] = UpdateState(values["state"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The API's view: what a fleet manager needs to follow one update."""
        data = self.to_item()
        data["update_id"] = self.device_update_id
        data["release_id"] = self.update_id
        data.pop("device_update_id")
        for name in ("manifest", "signature"):
            data.pop(name, None)
        return data
