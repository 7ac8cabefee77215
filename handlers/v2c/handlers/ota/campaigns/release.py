"""The signed release: the manifest every vehicle of a campaign receives.

Signed once per campaign (and once per rollback target version), not once
per vehicle: an HSM or KMS signs at hundreds of operations a second, and a
100,000-vehicle campaign must not wait minutes for signatures. The manifest
names the campaign and the package (by SHA-256), never the vehicle.
"""

from __future__ import annotations

import uuid
from typing import Final

from v2c.handlers.ota.campaigns.record import Release
from v2c.handlers.ota.domain import update_steps
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.ports import Package
from v2c.handlers.signing.base import Signer
from v2c.handlers.signing.manifest import sign_manifest
from v2c.v1.ota_pb2 import OTAManifest

MANIFEST_VALIDITY_MS: Final = 30 * 24 * 3600 * 1000
_RELEASE_NS: Final = uuid.UUID("0b0e5c43-9f7c-4f0b-8a7e-2b8f9d6c1a10")


def release_id(campaign_id: str, purpose: str = "release") -> str:
    return uuid.uuid5(_RELEASE_NS, f"{campaign_id}/{purpose}").hex


def manifest_for(
    package: Package,
    spec: CampaignSpec,
    update_id: str,
    campaign_id: str,
    now_ms: int,
    *,
    is_rollback: bool = False,
) -> OTAManifest:
    return OTAManifest(
        update_id=update_id,
        version=package.version,
        type=spec.update_type.to_proto(),
        priority=spec.priority.to_proto(),
        size_bytes=package.size_bytes,
        checksum_sha256=bytes.fromhex(package.sha256_hex),
        min_battery_level=spec.min_battery_level,
        can_install_while_driving=spec.can_install_while_driving,
        estimated_install_time_sec=spec.estimated_install_time_sec,
        expires_at=now_ms + MANIFEST_VALIDITY_MS,
        target_model=package.device_model,
        target_hardware_id=package.hardware_id,
        min_installed_version=package.min_installed_version,
        campaign_id=campaign_id,
        firmware_id=package.firmware_id,
        is_rollback=is_rollback,
        issued_at=now_ms,
        pre_update_steps=update_steps.to_proto(spec.pre_update_steps),
        post_update_steps=update_steps.to_proto(spec.post_update_steps),
    )


def sign_release(
    signer: Signer, manifest: OTAManifest, expires_at_ms: int | None = None
) -> Release:
    signed = sign_manifest(signer, manifest)
    return Release(
        update_id=manifest.update_id,
        manifest=signed.manifest,
        signature=signed.signature,
        key_id=signed.key_id,
        expires_at_ms=expires_at_ms or manifest.expires_at,
    )
