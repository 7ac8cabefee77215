"""Signed cloud-to-vehicle commands: their canonical bytes and how a vehicle checks them.

A command (`OTACommand`: cancel an update, roll back, request status) changes
what a vehicle does, so it is trusted exactly as a manifest is: an ECDSA
P-256 signature by a key in the vehicle's trusted set over the exact bytes it
received (`v2c.contract.manifest.verify_manifest` is the model). Beyond the
signature a vehicle checks what only a command has:

* the addressee: a command for another vehicle is refused (`vehicle_id` ""
  is a campaign-wide command, signed once per campaign action as ADR 0004
  signs one manifest per release; it names the campaign and the release, so
  replaying it elsewhere asks of a vehicle only what the cloud asked of
  every vehicle in that campaign);
* the expiry: a command captured and replayed after `expires_at` is refused,
  so an old cancel cannot stop a later retry of the same update.

Pure: bytes, a key set and `now` in, a command or a typed error out.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError

from v2c.contract.errors import CodecError, SignatureInvalid, ValidationFailed
from v2c.contract.keyset import TrustedKeySet
from v2c.contract.manifest import MAX_DER_SIGNATURE_BYTES
from v2c.v1.command_pb2 import OTACommand, OTACommandEnvelope

COMMAND_VALIDITY_MS: Final = 7 * 24 * 3600 * 1000
"""A week: longer than a vehicle is expected to stay offline with a queued
session (the broker keeps it), shorter than a campaign's manifest (30 days)."""

_COMMAND_NS: Final = uuid.UUID("7f1d2a60-3c55-4d0e-9b7a-5e2c8d4f6a31")


class CommandRefused(ValidationFailed):
    """A verified command this vehicle must not act on (expired, or for another vehicle)."""


def command_id(*parts: str) -> str:
    """A deterministic command id: the same cloud decision (say, cancelling
    one campaign) always yields the same id, so a retried publish is the same
    command and a vehicle acts on it once."""
    return uuid.uuid5(_COMMAND_NS, "/".join(parts)).hex


def command_bytes(command: OTACommand) -> bytes:
    """The canonical bytes of a command: what is signed and what is sent."""
    return command.SerializeToString(deterministic=True)


def decode_envelope(payload: bytes) -> OTACommandEnvelope:
    envelope = OTACommandEnvelope()
    try:
        envelope.ParseFromString(payload)
    except DecodeError as exc:
        raise CodecError("the command envelope does not parse") from exc
    return envelope


def verify_command(
    envelope: OTACommandEnvelope,
    *,
    trusted: TrustedKeySet,
    now: datetime,
    vehicle_id: str,
) -> OTACommand:
    """Check the signature over the exact command bytes with the trusted key
    the envelope names, then parse them and check addressee and expiry.

    Raises `SignatureInvalid` (or its `UnknownSigningKey`/`SigningKeyNotValid`),
    `CodecError` for signed bytes that do not parse, and `CommandRefused` for
    a genuine command that is expired or addressed to another vehicle.
    """
    key = trusted.key_for(envelope.key_id, now)
    signature = envelope.signature
    if not signature or len(signature) > MAX_DER_SIGNATURE_BYTES:
        raise SignatureInvalid(f"a {len(signature)}-byte signature is not a P-256 DER signature")
    try:
        key.public_key.verify(signature, envelope.command, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureInvalid(
            f"the command signature does not verify with key {envelope.key_id}"
        ) from exc
    command = OTACommand()
    try:
        command.ParseFromString(envelope.command)
    except DecodeError as exc:
        raise CodecError("the signed command does not parse") from exc
    if command.key_id != envelope.key_id:
        raise SignatureInvalid(
            f"the envelope names key {envelope.key_id!r}, the signed command {command.key_id!r}"
        )
    if command.vehicle_id and command.vehicle_id != vehicle_id:
        raise CommandRefused(f"the command is for {command.vehicle_id}, not {vehicle_id}")
    now_ms = int(now.timestamp() * 1000)
    if command.expires_at and command.expires_at <= now_ms:
        raise CommandRefused(f"the command expired at {command.expires_at} (now {now_ms})")
    if command.kind == OTACommand.Kind.KIND_UNSPECIFIED:
        raise CommandRefused("the command names no kind")
    return command
