"""The errors that cross the wire, and the one base every v2c error derives from.

Every error a v2c component raises on purpose derives from `V2CError` and
carries its translations, so each edge reports it in its own terms without a
lookup table of its own:

* `reason`: a stable machine-readable word, written into DLQ records and
  metrics labels (`checksum_mismatch`, `invalid_topic`, ...);
* `http_status`: the status the fleet-manager API answers with (the JSON
  body's `detail` is the message);
* `retryable`: whether the same request may succeed later.

No MQTT reason code: no edge of v2c could send one. A vehicle's publish is
acknowledged by the broker (mosquitto, or IoT Core), not by the gateway, whose
PUBACK/PUBREC goes to the broker; and inbound MQTT is always acknowledged
after the message was handled or dead-lettered (ack-after-handle, as an IoT
Core rule with an error action does), so a refusal is a DLQ record with its
`reason`, never a code on the wire. The codes a *broker* answers a vehicle
with are `MqttReasonCode`, which the vehicle classifies (`v2c.contract.puback`).

The hierarchy splits the way python-tuf splits its errors: `InvalidInput`
(the data is wrong; retrying the same bytes cannot help, so it goes to a DLQ)
beside `TransientError` (a dependency failed; retry, then DLQ for replay),
and beside them the refusals that are neither (`NotAuthorized`, `NotFound`,
`Conflict`, `ConfigurationError`). The tools' and the simulator's own errors
derive from `V2CError` in their packages (`v2c.infra.errors`,
`v2c.vehicle_sim.errors`): they never cross the wire.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class MqttReasonCode(IntEnum):
    """The MQTT 5.0 reason codes a broker answers v2c's clients with that v2c
    acts on (OASIS MQTT 5.0, section 2.4): PUBACK, CONNACK, SUBACK."""

    SUCCESS = 0x00
    NO_MATCHING_SUBSCRIBERS = 0x10
    UNSPECIFIED_ERROR = 0x80
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    TOPIC_NAME_INVALID = 0x90
    PACKET_TOO_LARGE = 0x95
    QUOTA_EXCEEDED = 0x97
    PAYLOAD_FORMAT_INVALID = 0x99


class V2CError(Exception):
    """Base of every deliberate v2c error."""

    reason: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    @property
    def detail(self) -> str:
        """The human-readable text, as an API `detail` or a DLQ `error` field."""
        return str(self) or self.reason


class InvalidInput(V2CError):
    """The input itself is wrong: the same bytes will fail the same way again."""

    reason = "invalid_input"
    http_status = 400


class InvalidTopic(InvalidInput):
    reason = "invalid_topic"


class CodecError(InvalidInput):
    """A payload could not be turned into a message."""

    reason = "corrupt_payload"


class ChecksumMismatch(CodecError):
    reason = "checksum_mismatch"


class FirmwareChecksumMismatch(ChecksumMismatch):
    """An uploaded firmware package does not hash to the checksum its uploader
    gave. The request was well formed, so the API answers 422 (PRD), whereas a
    corrupt MQTT payload stays a 400-class `ChecksumMismatch`."""

    http_status = 422


class UnsupportedCompression(CodecError):
    reason = "unsupported_compression"


class UnknownDictionary(CodecError):
    """A batch names a ZSTD dictionary this receiver does not hold."""

    reason = "unknown_dictionary"


class DecompressionLimitExceeded(CodecError):
    """Declared or actual decompressed size above the cap: a decompression bomb."""

    reason = "decompression_limit_exceeded"
    http_status = 413


class PayloadTooLarge(InvalidInput):
    reason = "payload_too_large"
    http_status = 413


class TooManySamples(PayloadTooLarge):
    """A telemetry batch declares more samples than the codec's cap
    (`CodecConfig.max_samples`). Refused from the declaration, before any
    column is expanded: the work a batch causes grows with its sample count,
    not with its size on the wire (a 300-byte envelope can declare 65,000).
    A `PayloadTooLarge`, so the sender's `split_to_fit` halves such a batch."""

    reason = "too_many_samples"


class ValidationFailed(InvalidInput):
    """Parsed fine, but a field is missing or out of range."""

    reason = "validation_failed"


class InvalidField(ValidationFailed):
    """One named field is missing, malformed or out of range. `field` is the
    field's path in the message (`speed_kmh`, `header.schema_version`,
    `gps.latitude`), so a DLQ record says which field, not only why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class FilterSyntaxError(InvalidInput):
    """A campaign target filter is not in the filter grammar. It carries the
    1-based character position and what was expected there, so the 400 answer
    points at the mistake instead of merely rejecting the text."""

    reason = "invalid_target_filter"

    def __init__(self, message: str, *, position: int, expected: str) -> None:
        super().__init__(message)
        self.position = position
        self.expected = expected


class SignatureInvalid(InvalidInput):
    """A signed OTA manifest does not verify: its bytes, its signature or its
    key id were altered. A vehicle reports SIGNATURE_VERIFICATION_FAILED."""

    reason = "signature_invalid"


class UnknownSigningKey(SignatureInvalid):
    """The key id names no key of the trusted key set."""

    reason = "unknown_signing_key"


class SigningKeyNotValid(SignatureInvalid):
    """The key is trusted, but not at this time: before its rotation-in or
    after its retirement."""

    reason = "signing_key_not_valid"


class NotAuthorized(V2CError):
    reason = "not_authorized"
    http_status = 401


class Forbidden(NotAuthorized):
    reason = "forbidden"
    http_status = 403


class NotFound(V2CError):
    reason = "not_found"
    http_status = 404


class Conflict(V2CError):
    reason = "conflict"
    http_status = 409


class ConfigurationError(V2CError):
    """The deployment is wrong, not the request: no stack description, a bad
    settings file, or an existing AWS resource of the wrong shape. An operator
    must fix it; retrying cannot help."""

    reason = "configuration_error"


class TransientError(V2CError):
    """A dependency failed; the same request may succeed later."""

    reason = "dependency_unavailable"
    http_status = 503
    retryable = True


class Throttled(TransientError):
    reason = "throttled"
    http_status = 429


class HandlerTimeout(TransientError):
    reason = "handler_timeout"


class BatchItemFailed(TransientError):
    """A batch handler named the record in `batchItemFailures` on every receive
    it was given (`max_receive_count`): what SQS would move to the queue's DLQ."""

    reason = "batch_item_failure"


class SigningUnavailable(TransientError):
    """The signing backend (HSM, KMS) failed or timed out on every attempt:
    creating a campaign answers 503 and leaves nothing half-made."""

    reason = "signing_unavailable"
