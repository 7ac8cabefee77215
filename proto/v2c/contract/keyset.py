"""The keys a verifier trusts, each for a time window.

Vehicles trust a key *set*, not a key: during a rotation the old and the new
key are both valid for an overlap window, so notifications signed before the
switch still verify while the new key is rolled out, and the old key is
refused once its window closes. Pure: no I/O, no clock (`now` is passed in).
The JSON form is what the cloud distributes and a vehicle stores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from v2c.contract.errors import SigningKeyNotValid, UnknownSigningKey, ValidationFailed


def key_fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """The default key id: SHA-256 of the DER SubjectPublicKeyInfo, in hex (as
    python-tuf derives key ids). It names the key itself, so it is the same
    whichever backend holds the private half, and cannot drift from it."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationFailed(f"{name} must carry a time zone (use UTC)")


@dataclass(frozen=True)
class TrustedKey:
    """One trusted public key and its validity window [valid_from, valid_until)."""

    key_id: str
    public_key: ec.EllipticCurvePublicKey = field(repr=False)
    valid_from: datetime
    valid_until: datetime | None = None  # None: until a rotation retires it

    def __post_init__(self) -> None:
        if not self.key_id:
            raise ValidationFailed("a trusted key needs a key id")
        if not isinstance(self.public_key.curve, ec.SECP256R1):
            raise ValidationFailed(f"key {self.key_id} is not an EC P-256 key")
        _require_aware("valid_from", self.valid_from)
        if self.valid_until is not None:
            _require_aware("valid_until", self.valid_until)
            if self.valid_until <= self.valid_from:
                raise ValidationFailed(f"key {self.key_id}: valid_until is not after valid_from")

    @classmethod
    def from_pem(
        cls,
        pem: bytes,
        valid_from: datetime,
        valid_until: datetime | None = None,
        *,
        key_id: str | None = None,
    ) -> TrustedKey:
        """A key from its PEM SubjectPublicKeyInfo; the key id defaults to its
        fingerprint, as a `Signer` without an explicit id reports it."""
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ValidationFailed("unreadable public key PEM") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValidationFailed("not an EC public key")
        return cls(key_id or key_fingerprint(key), key, valid_from, valid_until)

    def public_key_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def is_valid_at(self, now: datetime) -> bool:
        _require_aware("now", now)
        return self.valid_from <= now and (self.valid_until is None or now < self.valid_until)


class TrustedKeySet:
    """key_id → `TrustedKey`. Immutable: rotation steps return a new set."""

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        by_id: dict[str, TrustedKey] = {}
        for key in keys:
            if key.key_id in by_id:
                raise ValidationFailed(f"key id {key.key_id} appears twice in the key set")
            by_id[key.key_id] = key
        self._keys: Mapping[str, TrustedKey] = by_id

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __repr__(self) -> str:
        return f"TrustedKeySet({sorted(self._keys)!r})"

    def key_for(self, key_id: str, now: datetime) -> TrustedKey:
        """The key a signature by `key_id` must verify with at `now`.

        Raises `UnknownSigningKey` for an id outside the set and
        `SigningKeyNotValid` outside the key's window.
        """
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownSigningKey(f"key id {key_id!r} is not in the trusted key set")
        if not key.is_valid_at(now):
            raise SigningKeyNotValid(
                f"key {key_id} is trusted from {key.valid_from.isoformat()} until "
                f"{key.valid_until.isoformat() if key.valid_until else 'retired'}, "
                f"not at {now.isoformat()}"
            )
        return key

    def valid_at(self, now: datetime) -> list[TrustedKey]:
        """The keys a signature may come from at `now` (two during an overlap)."""
        return [key for key in self._keys.values() if key.is_valid_at(now)]

    def with_key(self, key: TrustedKey) -> TrustedKeySet:
        """Rotation, step 1: add the new key (its window opens the overlap)."""
        return TrustedKeySet([*self._keys.values(), key])

    def retire(self, key_id: str, at: datetime) -> TrustedKeySet:
        """Rotation, step 2: close the old key's window at `at` (the overlap's end)."""
        old = self._keys.get(key_id)
        if old is None:
            raise UnknownSigningKey(f"key id {key_id!r} is not in the trusted key set")
        retired = TrustedKey(old.key_id, old.public_key, old.valid_from, at)
        return TrustedKeySet(retired if k.key_id == key_id else k for k in self._keys.values())

    def without(self, key_id: str) -> TrustedKeySet:
        """Rotation, step 3: drop a key whose window has closed."""
        return TrustedKeySet(k for k in self._keys.values() if k.key_id != key_id)

    def to_json(self) -> str:
        """The distributable form: key ids, PEM public keys, ISO-8601 windows."""
        doc = {
            "keys": [
                {
                    "key_id": k.key_id,
                    "public_key_pem": k.public_key_pem().decode("ascii"),
                    "valid_from": k.valid_from.isoformat(),
                    "valid_until": k.valid_until.isoformat() if k.valid_until else None,
                }
                for k in self._keys.values()
            ]
        }
        return json.dumps(doc, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> TrustedKeySet:
        try:
            doc: Any = json.loads(text)
            entries = doc["keys"]
            return cls(
                TrustedKey.from_pem(
                    e["public_key_pem"].encode("ascii"),
                    datetime.fromisoformat(e["valid_from"]),
                    datetime.fromisoformat(e["valid_until"]) if e.get("valid_until") else None,
                    key_id=e["key_id"],
                )
                for e in entries
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValidationFailed(f"not a trusted key set document: {exc}") from exc
