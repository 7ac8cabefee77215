"""The telemetry batch envelope: columnar batch, ZSTD, checksum, size limits.

A vehicle sends 25-50 samples at a time on `.../telemetry/batch` as a
`TelemetryBatchEnvelope`: the columnar `TelemetryBatch` (see `batch_columns`),
serialized, optionally ZSTD-compressed (optionally with a trained dictionary),
with its SHA-256 and its declared uncompressed size.

The receiver treats every envelope as hostile until proven otherwise, and
the checks run in the order that spends the least on a bad payload:

1. envelope size against the broker's packet limit, then protobuf parse;
2. declared sample count against `max_samples` (a sample bomb: a few hundred
   bytes that declare 65,000 samples, each then validated and dead-lettered,
   cost minutes of a handler's time; the count is the unit of work);
3. compression and dictionary known;
4. SHA-256 of the payload as sent (cheap; before any decompression);
5. declared size against the cap and against what the declared samples can
   need (`max_batch_bytes`: an expansion bound per sample, so a 1-sample
   envelope cannot inflate to a megabyte), and the ZSTD frame header
   (content size, window size, dictionary id) against the declaration: a
   bomb is refused before a single byte is decompressed when the frame
   admits what it is;
6. streaming decompression that never produces more than declared + 1 bytes,
   so a frame lying about its size costs at most the declared size in memory;
7. batch parse, then the batch's own sample count against the envelope's
   (before a single column is expanded), then column consistency.

Pure: bytes in, samples out or a typed error from `v2c.contract.errors`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import zstandard
from google.protobuf.message import DecodeError

from v2c.contract.batch_columns import from_columns, to_columns
from v2c.contract.errors import (
    ChecksumMismatch,
    CodecError,
    DecompressionLimitExceeded,
    PayloadTooLarge,
    TooManySamples,
    UnknownDictionary,
    UnsupportedCompression,
    ValidationFailed,
)
from v2c.contract.ids import id_text, new_message_id
from v2c.v1 import telemetry_pb2

Telemetry = telemetry_pb2.Telemetry
Compression: TypeAlias = telemetry_pb2.Compression.ValueType
ZSTD: Compression = telemetry_pb2.COMPRESSION_ZSTD
NONE: Compression = telemetry_pb2.COMPRESSION_NONE

_SHA256_BYTES = 32


@dataclass(frozen=True, slots=True)
class CodecConfig:
    """Every limit and knob of the batch codec, shared by sender and receiver.

    `mqtt_overhead_bytes` is what the encoder keeps free below
    `max_packet_bytes` for the rest of the MQTT 5 PUBLISH packet: fixed
    header (<= 5), topic (2 + ~60 for `v2c/v1/{region}/{vehicle}/telemetry/batch`),
    packet id (2) and properties (content type, user properties
    `compression` / `message_count`, topic alias, ~100). 1 KiB leaves room
    for longer vehicle ids and extra user properties.

    `dictionaries` maps a trained ZSTD dictionary's own id (as written in
    its header, see `train_dictionary`) to its bytes; both sides need it.

    `max_samples` caps the samples of one batch. The design sends 25-50;
    1,000 is the vehicle's whole offline buffer (a vehicle flushing it in one
    envelope is still accepted) and, at ~27 bytes per columnar sample, about
    a fifth of what a 128 KB packet could carry compressed, so the cap, not
    the packet, bounds the work one message can ask for (validation,
    writes, dead-letter reasons grow with the count).

    `max_sample_bytes` bounds expansion: a batch may inflate to at most
    `batch_overhead_bytes` + `max_sample_bytes` per declared sample (and
    never past `max_decompressed_bytes`). A real sample takes ~30 bytes in
    a batch of 25, ~420 with 32 DTCs (the validation limit); 1 KiB is room
    to spare, and a 25-sample envelope can no longer inflate to a megabyte.
    """

    zstd_level: int = 3
    max_decompressed_bytes: int = 1024 * 1024
    max_packet_bytes: int = 128 * 1024
    mqtt_overhead_bytes: int = 1024
    max_samples: int = 1000
    max_sample_bytes: int = 1024
    batch_overhead_bytes: int = 1024
    dictionaries: Mapping[int, bytes] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.max_decompressed_bytes < 1:
            raise ValueError("max_decompressed_bytes must be positive")
        if self.max_samples < 1 or self.max_sample_bytes < 1 or self.batch_overhead_bytes < 0:
            raise ValueError("max_samples and max_sample_bytes must be positive")
        if self.max_packet_bytes <= self.mqtt_overhead_bytes:
            raise ValueError("max_packet_bytes must exceed mqtt_overhead_bytes")
        for dict_id, data in self.dictionaries.items():
            actual = zstandard.ZstdCompressionDict(data).dict_id()
            if dict_id == 0 or actual != dict_id:
                raise ValueError(f"dictionary registered as {dict_id} has id {actual}")

    @property
    def max_envelope_bytes(self) -> int:
        """The largest envelope that still fits one MQTT packet."""
        return self.max_packet_bytes - self.mqtt_overhead_bytes

    @property
    def max_window_bytes(self) -> int:
        """ZSTD window the decoder accepts: a power of two, 1-2x the size cap.

        Legitimate frames never need a window larger than their content, and
        the window is memory the decompressor allocates up front.
        """
        return 1 << max(10, self.max_decompressed_bytes.bit_length())

    def max_batch_bytes(self, samples: int) -> int:
        """The most a serialized batch of `samples` samples may take: the expansion bound."""
        return min(
            self.max_decompressed_bytes,
            self.batch_overhead_bytes + samples * self.max_sample_bytes,
        )

    def check_sample_count(self, count: int, what: str = "batch") -> None:
        """Raise TooManySamples above `max_samples`: before any work per sample."""
        if count > self.max_samples:
            raise TooManySamples(
                f"{what} declares {count} samples, above the cap of {self.max_samples}"
            )


DEFAULT_CONFIG = CodecConfig()


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    batch_id: str  # canonical UUID text
    vehicle_id: str
    samples: list[Telemetry]
    compressed_size: int  # bytes of the payload as sent
    uncompressed_size: int  # bytes of the serialized TelemetryBatch


def encode_envelope(
    samples: Sequence[Telemetry],
    *,
    batch_id: bytes | None = None,
    compression: Compression = ZSTD,
    dictionary_id: int = 0,
    config: CodecConfig = DEFAULT_CONFIG,
    created_ms: int | None = None,
) -> bytes:
    """Serialize samples of one vehicle as a batch envelope.

    Raises PayloadTooLarge when the receiver would refuse the result (more
    than `max_samples` samples, batch above `max_batch_bytes`, envelope above
    `max_envelope_bytes`): `split_to_fit` catches it and halves the batch. `batch_id` defaults to
    a fresh UUIDv4. The envelope header holds only `created_ms` (default:
    now) and the schema version: repeating the batch id, trace id and
    correlation id there would cost ~90 bytes, 10 % of a 25-sample envelope.
    """
    config.check_sample_count(len(samples))
    batch = to_columns(samples)
    raw = batch.SerializeToString()
    if len(raw) > config.max_batch_bytes(len(samples)):
        raise PayloadTooLarge(
            f"batch of {len(samples)} samples is {len(raw)} bytes, "
            f"above the {config.max_batch_bytes(len(samples))}-byte cap"
        )
    payload = _compress(raw, compression, dictionary_id, config)
    batch_id = new_message_id() if batch_id is None else batch_id
    id_text(batch_id)  # raises CodecError unless 16 bytes
    envelope = telemetry_pb2.TelemetryBatchEnvelope(
        batch_id=batch_id,
        vehicle_id=batch.vehicle_id,
        message_count=len(samples),
        compression=compression,
        dictionary_id=dictionary_id,
        uncompressed_size=len(raw),
        payload_sha256=hashlib.sha256(payload).digest(),
        payload=payload,
    )
    # The header carries only what the envelope does not say elsewhere: its id
    # is batch_id, its trace and correlation ids travel inside the batch.
    header = envelope.header
    header.timestamp = int(time.time() * 1000) if created_ms is None else created_ms
    header.schema_version = batch.schema_version
    data = envelope.SerializeToString()
    if len(data) > config.max_envelope_bytes:
        raise PayloadTooLarge(
            f"envelope of {len(samples)} samples is {len(data)} bytes, "
            f"above {config.max_envelope_bytes} (packet limit minus MQTT overhead)"
        )
    return data


def decode_envelope(payload: bytes, config: CodecConfig = DEFAULT_CONFIG) -> DecodedBatch:
    """Check, decompress and decode one envelope; see the module docstring for the order."""
    if len(payload) > config.max_packet_bytes:
        raise PayloadTooLarge(f"envelope of {len(payload)} bytes above the packet limit")
    envelope = telemetry_pb2.TelemetryBatchEnvelope()
    try:
        envelope.ParseFromString(payload)
    except DecodeError as exc:
        raise CodecError(f"corrupt envelope: {exc}") from exc
    batch_id = id_text(envelope.batch_id)
    count = envelope.message_count
    config.check_sample_count(count, f"batch {batch_id}")
    if count == 0:
        raise CodecError(f"batch {batch_id}: declares no samples")
    dictionary = _dictionary(envelope.compression, envelope.dictionary_id, config)
    if len(envelope.payload_sha256) != _SHA256_BYTES or not hmac.compare_digest(
        hashlib.sha256(envelope.payload).digest(), envelope.payload_sha256
    ):
        raise ChecksumMismatch(f"batch {batch_id}: payload SHA-256 mismatch")
    declared = envelope.uncompressed_size
    if declared > config.max_batch_bytes(count):
        raise DecompressionLimitExceeded(
            f"batch {batch_id} declares {declared} bytes for {count} samples, "
            f"cap {config.max_batch_bytes(count)}"
        )
    if envelope.compression == ZSTD:
        raw = _decompress(envelope.payload, declared, envelope.dictionary_id, dictionary, config)
    elif len(envelope.payload) != declared:
        raise CodecError(f"batch {batch_id}: {len(envelope.payload)} bytes, declared {declared}")
    else:
        raw = envelope.payload

    batch = telemetry_pb2.TelemetryBatch()
    try:
        batch.ParseFromString(raw)
    except DecodeError as exc:
        raise CodecError(f"corrupt batch {batch_id}: {exc}") from exc
    if batch.vehicle_id != envelope.vehicle_id:
        raise CodecError(
            f"batch {batch_id}: envelope vehicle {envelope.vehicle_id!r}, "
            f"batch vehicle {batch.vehicle_id!r}"
        )
    # The batch's own count, checked before from_columns allocates anything per sample.
    if batch.sample_count != count:
        raise CodecError(
            f"batch {batch_id}: message_count {count}, batch of {batch.sample_count} samples"
        )
    samples = from_columns(batch)
    return DecodedBatch(
        batch_id=batch_id,
        vehicle_id=batch.vehicle_id,
        samples=samples,
        compressed_size=len(envelope.payload),
        uncompressed_size=len(raw),
    )


def split_to_fit(
    samples: Sequence[Telemetry],
    config: CodecConfig = DEFAULT_CONFIG,
    *,
    compression: Compression = ZSTD,
    dictionary_id: int = 0,
    created_ms: int | None = None,
) -> list[bytes]:
    """Encode samples as as few envelopes as halving allows, each within the limits.

    Halving (rather than packing greedily) keeps the pieces of similar size
    and needs at most log2(n) levels of re-encoding. Every envelope gets a
    fresh batch id; samples keep their derived ids, so re-sending a split
    batch still deduplicates. A single sample that does not fit raises
    PayloadTooLarge.
    """
    if not samples:
        return []
    try:
        envelope = encode_envelope(
            samples,
            compression=compression,
            dictionary_id=dictionary_id,
            config=config,
            created_ms=created_ms,
        )
    except PayloadTooLarge:
        if len(samples) == 1:
            raise
    else:
        return [envelope]
    middle = len(samples) // 2
    return [
        envelope
        for half in (samples[:middle], samples[middle:])
        for envelope in split_to_fit(
            half,
            config,
            compression=compression,
            dictionary_id=dictionary_id,
            created_ms=created_ms,
        )
    ]


def train_dictionary(
    sample_batches: Sequence[Sequence[Telemetry]],
    dict_size: int = 2048,
    *,
    level: int = 3,
) -> tuple[int, bytes]:
    """Train a ZSTD dictionary on serialized columnar batches; returns (id, bytes).

    The id is the one zstd writes into the dictionary (and into every frame
    compressed with it), so a frame names its own dictionary. Training needs
    a few dozen batches at least; too little material raises ValidationFailed.
    """
    material: list[bytes | bytearray | memoryview] = [
        to_columns(batch).SerializeToString() for batch in sample_batches
    ]
    try:
        trained = zstandard.train_dictionary(dict_size, material, level=level)
    except zstandard.ZstdError as exc:
        raise ValidationFailed(f"cannot train a dictionary from these batches: {exc}") from exc
    return trained.dict_id(), trained.as_bytes()


def _dictionary(
    compression: int, dictionary_id: int, config: CodecConfig
) -> zstandard.ZstdCompressionDict | None:
    if compression not in (NONE, ZSTD):
        raise UnsupportedCompression(f"compression {compression} is not supported")
    if dictionary_id == 0:
        return None
    if compression != ZSTD:
        raise CodecError(f"dictionary {dictionary_id} with compression {compression}")
    data = config.dictionaries.get(dictionary_id)
    if data is None:
        raise UnknownDictionary(f"no ZSTD dictionary with id {dictionary_id}")
    return zstandard.ZstdCompressionDict(data)


def _compress(
    raw: bytes, compression: Compression, dictionary_id: int, config: CodecConfig
) -> bytes:
    dictionary = _dictionary(compression, dictionary_id, config)
    if compression == NONE:
        return raw
    # The frame's own content checksum (4 bytes) catches what the SHA-256
    # cannot: a payload corrupted before it was hashed (sender RAM, a buggy
    # compressor), which would otherwise inflate into plausible wrong values.
    if dictionary is None:
        compressor = zstandard.ZstdCompressor(level=config.zstd_level, write_checksum=True)
    else:
        compressor = zstandard.ZstdCompressor(
            level=config.zstd_level, dict_data=dictionary, write_checksum=True
        )
    return compressor.compress(raw)


def _decompress(
    payload: bytes,
    declared: int,
    dictionary_id: int,
    dictionary: zstandard.ZstdCompressionDict | None,
    config: CodecConfig,
) -> bytes:
    """Decompress at most declared + 1 bytes; more means a bomb or a lie."""
    try:
        frame = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as exc:
        raise CodecError(f"corrupt ZSTD frame: {exc}") from exc
    if frame.window_size > config.max_window_bytes:
        raise DecompressionLimitExceeded(
            f"ZSTD window of {frame.window_size} bytes, limit {config.max_window_bytes}"
        )
    if frame.content_size != zstandard.CONTENTSIZE_UNKNOWN:
        if frame.content_size > declared:
            raise DecompressionLimitExceeded(
                f"ZSTD frame holds {frame.content_size} bytes, envelope declares {declared}"
            )
        if frame.content_size != declared:
            raise CodecError(f"ZSTD frame holds {frame.content_size} bytes, declared {declared}")
    if frame.dict_id not in (0, dictionary_id):
        raise CodecError(
            f"ZSTD frame needs dictionary {frame.dict_id}, envelope names {dictionary_id}"
        )

    if dictionary is None:
        dctx = zstandard.ZstdDecompressor(max_window_size=config.max_window_bytes)
    else:
        dctx = zstandard.ZstdDecompressor(
            dict_data=dictionary, max_window_size=config.max_window_bytes
        )
    chunks: list[bytes] = []
    total = 0
    try:
        with dctx.stream_reader(payload, read_across_frames=True) as reader:
            while total <= declared:
                chunk = reader.read(declared + 1 - total)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except zstandard.ZstdError as exc:
        raise CodecError(f"corrupt ZSTD payload: {exc}") from exc
    if total > declared:
        raise DecompressionLimitExceeded(
            f"ZSTD payload inflates past the declared {declared} bytes"
        )
    if total != declared:
        raise CodecError(f"ZSTD payload inflates to {total} bytes, declared {declared}")
    return b"".join(chunks)
