"""Certificate rotation over MQTT, as AWS IoT's CreateCertificateFromCsr MQTT API does it.

A vehicle whose certificate nears its end makes a NEW key, and publishes a
CSR for it on its own `.../certificate/renew` (QoS 1); the cloud answers on
the vehicle's `.../certificate/issued` (QoS 1) with the new certificate, or
with why not. Both are JSON (as AWS IoT's own rotation topics are), small
and read by both sides, so they live here:

* `RenewalRequest`: `request_id` (the vehicle's, echoed in the answer, so a
  late answer to an earlier attempt is told apart), the CSR PEM, and the
  not-after of the certificate the vehicle holds now (epoch ms), which the
  registry records: the vehicles report their certificate's expiry;
* `RenewalAnswer`: `accepted` with the certificate PEM, its id and not-after,
  or `rejected` with a reason. Asking again with the same CSR is answered
  with the same certificate (the answer may have been lost).

Bounded before parsing (`MAX_MESSAGE_BYTES`): a certificate and its CSR are
a few KiB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from v2c.contract.errors import InvalidInput

CONTENT_TYPE: Final = "application/json"
MAX_MESSAGE_BYTES: Final = 16 * 1024
MAX_ID_CHARS: Final = 64
MAX_REASON_CHARS: Final = 300


class RenewalStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


def _object(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_MESSAGE_BYTES:
        raise InvalidInput(f"{what} larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{what} is not a JSON object")
    return doc


def _text(doc: dict[str, Any], name: str, most: int, *, empty: bool = False) -> str:
    value = doc.get(name, "")
    if not isinstance(value, str) or len(value) > most or (not empty and not value):
        raise InvalidInput(f"{name} must be a string of 1-{most} characters")
    return value


def _epoch_ms(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{name} must be epoch milliseconds")
    return value


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class RenewalRequest:
    request_id: str
    csr_pem: str
    current_not_after_ms: int  # the certificate the vehicle holds now; 0: unknown

    def encode(self) -> bytes:
        return _dump(
            {
                "request_id": self.request_id,
                "csr": self.csr_pem,
                "current_not_after_ms": self.current_not_after_ms,
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> RenewalRequest:
        doc = _object(payload, "renewal request")
        return cls(
            _text(doc, "request_id", MAX_ID_CHARS),
            _text(doc, "csr", MAX_MESSAGE_BYTES),
            _epoch_ms(doc, "current_not_after_ms"),
        )


@dataclass(frozen=True, slots=True)
class RenewalAnswer:
    request_id: str
    status: RenewalStatus
    certificate_pem: str = ""
    certificate_id: str = ""
    not_after_ms: int = 0
    reason: str = ""

    @classmethod
    def accepted(
        cls, request_id: str, certificate_pem: str, certificate_id: str, not_after_ms: int
    ) -> RenewalAnswer:
        return cls(
            request_id, RenewalStatus.ACCEPTED, certificate_pem, certificate_id, not_after_ms
        )

    @classmethod
    def rejected(cls, request_id: str, reason: str) -> RenewalAnswer:
        return cls(request_id, RenewalStatus.REJECTED, reason=reason[:MAX_REASON_CHARS])

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"request_id": self.request_id, "status": self.status.value}
        if self.status is RenewalStatus.ACCEPTED:
            doc.update(
                certificate=self.certificate_pem,
                certificate_id=self.certificate_id,
                not_after_ms=self.not_after_ms,
            )
        else:
            doc["reason"] = self.reason
        return _dump(doc)

    @classmethod
    def decode(cls, payload: bytes) -> RenewalAnswer:
        doc = _object(payload, "renewal answer")
        request_id = _text(doc, "request_id", MAX_ID_CHARS, empty=True)
        try:
            status = RenewalStatus(str(doc.get("status")))
        except ValueError:
            raise InvalidInput("status must be accepted or rejected") from None
        if status is RenewalStatus.REJECTED:
            return cls.rejected(request_id, _text(doc, "reason", MAX_REASON_CHARS, empty=True))
        return cls.accepted(
            request_id,
            _text(doc, "certificate", MAX_MESSAGE_BYTES),
            _text(doc, "certificate_id", 128),
            _epoch_ms(doc, "not_after_ms"),
        )


def build_csr(private_key: ec.EllipticCurvePrivateKey, vehicle_id: str) -> str:
    """A PEM CSR for `vehicle_id` (CN = the vehicle id), signed with SHA-256:
    what a vehicle sends to be onboarded or to rotate (the CLI and the
    simulator build it here). The key never leaves the caller."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, vehicle_id)])
    request = x509.CertificateSigningRequestBuilder().subject_name(name)
    csr = request.sign(private_key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
