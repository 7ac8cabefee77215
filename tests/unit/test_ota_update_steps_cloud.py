"""Pre- and post-update steps from the cloud's side (BR-OTA-027): a campaign or a
device update names them, the cloud checks them against the shared vocabulary,
and they travel inside the signed manifest."""

from __future__ import annotations

import pytest
from ota_service_harness import Ota, fleet

from v2c.contract.errors import ValidationFailed
from v2c.contract.update_steps import ALLOWED_ACTIONS, MAX_STEPS
from v2c.v1.ota_pb2 import OTAManifest

STEPS = {
    "pre_update_steps": [
        {"action": "stop_service", "argument": "navigation"},
        {"action": "backup_config", "argument": "infotainment"},
    ],
    "post_update_steps": [{"action": "restart_service", "argument": "navigation"}],
}


def _manifest(raw: bytes) -> OTAManifest:
    manifest = OTAManifest()
    manifest.ParseFromString(raw)
    return manifest


def _pairs(steps: object) -> list[tuple[str, str]]:
    return [(s.action, s.argument) for s in steps]  # type: ignore[attr-defined]


def test_a_campaigns_steps_are_signed_into_its_manifest_in_order() -> None:
    ota = Ota()
    campaign_id = ota.campaign(3, **STEPS)
    manifest = _manifest(ota.campaigns.get(campaign_id).release.manifest)
    assert _pairs(manifest.pre_update_steps) == [
        ("stop_service", "navigation"),
        ("backup_config", "infotainment"),
    ]
    assert _pairs(manifest.post_update_steps) == [("restart_service", "navigation")]


def test_a_device_updates_steps_are_signed_into_its_manifest() -> None:
    ota = Ota()
    vehicle = fleet(1)[0]
    ota.fleet.put([vehicle])
    update = ota.devices.update_device(
        vehicle.vehicle_id, {"firmware_id": ota.package().firmware_id, **STEPS}
    )
    manifest = _manifest(update.manifest)
    assert _pairs(manifest.post_update_steps) == [("restart_service", "navigation")]


@pytest.mark.parametrize(
    ("steps", "says"),
    [
        ([{"action": "rm_rf", "argument": "/"}], "unknown action"),
        ([{"action": "stop_service", "argument": "nav; reboot"}], "letters, digits"),
        ([{"action": "stop_service", "extra": 1}], "extra"),
        ([{"action": "clear_cache"}] * (MAX_STEPS + 1), f"at most {MAX_STEPS}"),
    ],
)
def test_a_step_the_vehicles_could_not_run_is_a_400_naming_it(
    steps: list[dict[str, object]], says: str
) -> None:
    ota = Ota()
    with pytest.raises(ValidationFailed) as caught:
        ota.campaign(2, pre_update_steps=steps)
    assert "pre_update_steps" in str(caught.value)
    assert says in str(caught.value)


def test_the_cloud_and_the_vehicle_read_one_vocabulary() -> None:
    from v2c.vehicle_sim.ota.agent import update_steps as vehicle

    assert vehicle.ALLOWED_ACTIONS is ALLOWED_ACTIONS
