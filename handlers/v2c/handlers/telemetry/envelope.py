"""What can still be read from a batch envelope that failed its checks.

The spec's "decompression failure context" (batch_id, compression type,
vehicle, sizes) goes into the DLQ record so an engineer can tell a library
mismatch from a corrupted upload without decoding the payload by hand. Best
effort: a payload that is not even an envelope yields only its size.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from v2c.contract.ids import id_text
from v2c.v1 import telemetry_pb2


def envelope_summary(payload: bytes) -> dict[str, Any]:
    summary: dict[str, Any] = {"payload_size": len(payload)}
    envelope = telemetry_pb2.TelemetryBatchEnvelope()
    try:
        envelope.ParseFromString(payload)
    except DecodeError:
        summary["envelope"] = "unparseable"
        return summary
    raw_id = envelope.batch_id
    if len(raw_id) == 16:
        summary["batch_id"] = id_text(raw_id)
    elif raw_id:
        summary["batch_id_hex"] = raw_id.hex()
    try:
        summary["compression"] = telemetry_pb2.Compression.Name(envelope.compression)
    except ValueError:
        summary["compression"] = str(envelope.compression)
    summary.update(
        dictionary_id=envelope.dictionary_id,
        message_count=envelope.message_count,
        declared_size=envelope.uncompressed_size,
        compressed_size=len(envelope.payload),
    )
    return summary
