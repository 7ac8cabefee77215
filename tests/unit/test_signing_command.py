"""Signed commands: a vehicle acts only on a command from the signer it trusts,
addressed to it (or to its whole campaign) and not yet expired."""

from __future__ import annotations

from datetime import timedelta

import pytest
from signing_helpers import T0, flip_bit

from v2c.contract.command import (
    CommandRefused,
    command_id,
    decode_envelope,
    verify_command,
)
from v2c.contract.errors import CodecError, SignatureInvalid, UnknownSigningKey, ValidationFailed
from v2c.handlers.signing import TrustedKey, TrustedKeySet
from v2c.handlers.signing.command import sign_command
from v2c.handlers.signing.software import SoftwareSigner
from v2c.v1.command_pb2 import OTACommand, RollbackTrigger

VIN = "VIN-1HGBH41JXMN109186"
OTHER = "VIN-2HGBH41JXMN109187"
NOW_MS = int(T0.timestamp() * 1000)


@pytest.fixture(scope="module")
def signer() -> SoftwareSigner:
    return SoftwareSigner.generate()


@pytest.fixture(scope="module")
def trusted(signer: SoftwareSigner) -> TrustedKeySet:
    return TrustedKeySet([TrustedKey.from_pem(signer.public_key_pem(), T0 - timedelta(days=1))])


def command(**overrides: object) -> OTACommand:
    fields: dict[str, object] = {
        "command_id": command_id("camp-1", "cancel"),
        "kind": OTACommand.Kind.CANCEL_UPDATE,
        "campaign_id": "camp-1",
        "update_id": "rel-1",
        "reason": "cancelled by fleet manager",
        "issued_at": NOW_MS,
        "expires_at": NOW_MS + 60_000,
    }
    fields.update(overrides)
    return OTACommand(**fields)  # type: ignore[arg-type]


def test_a_campaign_wide_command_verifies_for_any_vehicle_and_survives_the_wire(
    signer: SoftwareSigner, trusted: TrustedKeySet
) -> None:
    envelope = decode_envelope(sign_command(signer, command()).SerializeToString())
    for vin in (VIN, OTHER):
        got = verify_command(envelope, trusted=trusted, now=T0, vehicle_id=vin)
        assert got.kind == OTACommand.Kind.CANCEL_UPDATE
        assert got.key_id == signer.key_id


def test_a_command_for_one_vehicle_is_refused_by_another(
    signer: SoftwareSigner, trusted: TrustedKeySet
) -> None:
    envelope = sign_command(
        signer,
        command(
            vehicle_id=VIN,
            kind=OTACommand.Kind.ROLL_BACK,
            to_version="1.0.0",
            trigger=RollbackTrigger.ROLLBACK_TRIGGER_MANUAL,
        ),
    )
    assert verify_command(envelope, trusted=trusted, now=T0, vehicle_id=VIN).to_version == "1.0.0"
    with pytest.raises(CommandRefused, match="is for"):
        verify_command(envelope, trusted=trusted, now=T0, vehicle_id=OTHER)


def test_an_expired_command_is_refused(signer: SoftwareSigner, trusted: TrustedKeySet) -> None:
    envelope = sign_command(signer, command())
    later = T0 + timedelta(minutes=1)
    with pytest.raises(CommandRefused, match="expired"):
        verify_command(envelope, trusted=trusted, now=later, vehicle_id=VIN)


def test_any_altered_bit_or_a_foreign_signer_is_refused(
    signer: SoftwareSigner, trusted: TrustedKeySet
) -> None:
    envelope = sign_command(signer, command())
    for index in (0, len(envelope.command) // 2, -1):
        tampered = type(envelope)()
        tampered.CopyFrom(envelope)
        tampered.command = flip_bit(envelope.command, index)
        with pytest.raises((SignatureInvalid, CodecError)):
            verify_command(tampered, trusted=trusted, now=T0, vehicle_id=VIN)
    forged = sign_command(SoftwareSigner.generate(), command())
    with pytest.raises(UnknownSigningKey):
        verify_command(forged, trusted=trusted, now=T0, vehicle_id=VIN)
    relabelled = type(forged)()
    relabelled.CopyFrom(forged)
    relabelled.key_id = signer.key_id
    with pytest.raises(SignatureInvalid):
        verify_command(relabelled, trusted=trusted, now=T0, vehicle_id=VIN)


def test_the_cloud_refuses_to_sign_a_command_without_id_kind_or_expiry(
    signer: SoftwareSigner,
) -> None:
    for bad in (command(command_id=""), command(kind=0), command(expires_at=0)):
        with pytest.raises(ValidationFailed):
            sign_command(signer, bad)


def test_command_ids_are_deterministic_per_decision() -> None:
    assert command_id("camp-1", "cancel") == command_id("camp-1", "cancel")
    assert command_id("camp-1", "cancel") != command_id("camp-2", "cancel")
