"""Signing cloud-to-vehicle commands (the cloud's half; `v2c.contract.command` verifies)."""

from __future__ import annotations

from v2c.contract.command import command_bytes
from v2c.contract.errors import ValidationFailed
from v2c.handlers.signing.base import Signer
from v2c.v1.command_pb2 import OTACommand, OTACommandEnvelope


def sign_command(signer: Signer, command: OTACommand) -> OTACommandEnvelope:
    """Sign `command` (the signer's key id written in first, so the signature
    covers it) and return an envelope with command, signature and key id; the
    caller adds the header. Raises `ValidationFailed` for a command without an
    id, kind or expiry, and the signer's `SigningUnavailable` when it is down."""
    if not command.command_id or command.kind == OTACommand.Kind.KIND_UNSPECIFIED:
        raise ValidationFailed("a command needs an id and a kind")
    if command.expires_at <= 0:
        raise ValidationFailed("a command needs an expiry")
    signed = OTACommand()
    signed.CopyFrom(command)
    signed.key_id = signer.key_id
    data = command_bytes(signed)
    signature = signer.sign(data)
    return OTACommandEnvelope(command=data, signature=signature.der, key_id=signature.key_id)
