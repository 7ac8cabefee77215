"""The telemetry batch codec: round trips, hostile envelopes, sizes, splitting."""

from __future__ import annotations

import hashlib
import math
import tracemalloc
from collections.abc import Sequence

import pytest
import zstandard

from v2c.contract import batch_codec
from v2c.contract.batch_codec import (
    DEFAULT_CONFIG,
    NONE,
    ZSTD,
    CodecConfig,
    Compression,
    DecodedBatch,
    decode_envelope,
    encode_envelope,
    split_to_fit,
    train_dictionary,
)
from v2c.contract.batch_columns import PER_SAMPLE_COLUMNS, SCALE, from_columns, to_columns
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
from v2c.contract.ids import id_text, telemetry_message_id
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.sampler import TelemetrySampler

VIN = "VIN-1HGBH41JXMN109186"
BATCH_ID = bytes(range(16))
BOMB_BYTES = 50_000_000

Telemetry = telemetry_pb2.Telemetry
Envelope = telemetry_pb2.TelemetryBatchEnvelope


def _samples(count: int, *, seed: int = 1, vehicle_id: str = VIN) -> list[Telemetry]:
    return TelemetrySampler(vehicle_id, seed=seed).samples(count)


def _envelope(data: bytes) -> Envelope:
    return Envelope.FromString(data)


def _reseal(envelope: Envelope) -> bytes:
    """Re-serialize with a checksum that matches the (tampered) payload."""
    envelope.payload_sha256 = hashlib.sha256(envelope.payload).digest()
    return envelope.SerializeToString()


def _forge(payload: bytes, *, declared: int, message_count: int = 1) -> bytes:
    """An envelope around arbitrary ZSTD bytes, with a correct checksum."""
    envelope = Envelope(
        batch_id=BATCH_ID,
        vehicle_id=VIN,
        message_count=message_count,
        compression=ZSTD,
        uncompressed_size=declared,
        payload=payload,
    )
    return _reseal(envelope)


def _zeros_frame(total: int, *, window_log: int | None = None) -> bytes:
    """`total` zero bytes as one ZSTD frame whose header omits the content size."""
    if window_log is None:
        compressor = zstandard.ZstdCompressor(level=3)
    else:
        params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
        compressor = zstandard.ZstdCompressor(compression_params=params)
    stream = compressor.compressobj()  # streaming: the frame does not declare its size
    chunk = bytes(1 << 20)
    parts = [
        stream.compress(chunk[: min(len(chunk), total - done)])
        for done in range(0, total, len(chunk))
    ]
    return b"".join(parts) + stream.flush()


def _assert_close(original: Sequence[Telemetry], decoded: Sequence[Telemetry]) -> None:
    """Every value within half a resolution step, plus float32 rounding."""
    assert len(decoded) == len(original)

    def close(a: float, b: float, column: str) -> bool:
        tolerance = 0.5 / SCALE[column] + math.ulp(max(abs(a), abs(b), 1e-30)) * 2**29
        return abs(a - b) <= tolerance

    for a, b in zip(original, decoded, strict=True):
        assert (b.vehicle_id, b.epoch, b.sequence) == (a.vehicle_id, a.epoch, a.sequence)
        assert b.header.timestamp == a.header.timestamp
        assert b.header.message_id == telemetry_message_id(a.vehicle_id, a.epoch, a.sequence)
        assert (b.rpm, b.gear, b.diagnostic_flags) == (a.rpm, a.gear, a.diagnostic_flags)
        assert (b.ignition_on, b.charging) == (a.ignition_on, a.charging)
        assert list(b.dtc_codes) == list(a.dtc_codes)
        assert b.HasField("speed_kmh") == a.HasField("speed_kmh")
        assert b.HasField("gps") == a.HasField("gps")
        pairs = [
            (a.speed_kmh, b.speed_kmh, "speed"),
            (a.battery_voltage_v, b.battery_voltage_v, "battery_voltage"),
            (a.state_of_charge_pct, b.state_of_charge_pct, "state_of_charge"),
            (a.coolant_temp_c, b.coolant_temp_c, "coolant_temp"),
            (a.fuel_level_pct, b.fuel_level_pct, "fuel_level"),
            (a.odometer_km, b.odometer_km, "odometer"),
            (a.tire_pressures.front_left_kpa, b.tire_pressures.front_left_kpa, "tire_front_left"),
            (
                a.tire_pressures.front_right_kpa,
                b.tire_pressures.front_right_kpa,
                "tire_front_right",
            ),
            (a.tire_pressures.rear_left_kpa, b.tire_pressures.rear_left_kpa, "tire_rear_left"),
            (a.tire_pressures.rear_right_kpa, b.tire_pressures.rear_right_kpa, "tire_rear_right"),
            (a.gps.latitude, b.gps.latitude, "latitude"),
            (a.gps.longitude, b.gps.longitude, "longitude"),
            (a.gps.altitude_m, b.gps.altitude_m, "altitude"),
            (a.gps.heading_deg, b.gps.heading_deg, "heading"),
        ]
        for x, y, column in pairs:
            assert close(x, y, column), (column, x, y)


# -- round trips -------------------------------------------------------------


@pytest.mark.parametrize("compression", [ZSTD, NONE])
def test_realistic_batch_round_trips_within_resolution(compression: Compression) -> None:
    samples = _samples(25)
    decoded = decode_envelope(encode_envelope(samples, batch_id=BATCH_ID, compression=compression))
    assert decoded.batch_id == id_text(BATCH_ID)
    assert decoded.vehicle_id == VIN
    _assert_close(samples, decoded.samples)


def test_sensor_resolution_values_round_trip_exactly() -> None:
    # Given samples at sensor resolution, coarser than the batch's quantization
    samples = _samples(40, seed=5)
    # Then the decoded samples serialize to the very same bytes
    for sample in samples:  # a batch shares the first sample's trace and correlation ids
        sample.header.trace_id = samples[0].header.trace_id
        sample.header.correlation_id = samples[0].header.correlation_id
    decoded = from_columns(to_columns(samples))
    assert [d.SerializeToString() for d in decoded] == [s.SerializeToString() for s in samples]


def test_samples_share_the_first_samples_trace_and_correlation_ids() -> None:
    samples = _samples(3)
    samples[1].header.trace_id = "f" * 32
    samples[2].header.correlation_id = "another"
    decoded = decode_envelope(encode_envelope(samples)).samples
    assert {d.header.trace_id for d in decoded} == {samples[0].header.trace_id}
    assert {d.header.correlation_id for d in decoded} == {samples[0].header.correlation_id}
    assert {d.header.schema_version for d in decoded} == {"1.0"}


def test_absent_speed_and_gps_stay_absent() -> None:
    samples = _samples(6)
    samples[0].ClearField("speed_kmh")
    samples[2].ClearField("gps")
    samples[5].ClearField("gps")
    decoded = from_columns(to_columns(samples))
    assert [d.HasField("speed_kmh") for d in decoded] == [False, True, True, True, True, True]
    assert [d.HasField("gps") for d in decoded] == [True, True, False, True, True, False]
    _assert_close(samples, decoded)


def test_dtcs_stay_with_their_sample() -> None:
    samples = _samples(4)
    samples[1].dtc_codes[:] = ["P0301", "P0420"]
    samples[3].dtc_codes[:] = ["C0750"]
    decoded = from_columns(to_columns(samples))
    assert [list(d.dtc_codes) for d in decoded] == [[], ["P0301", "P0420"], [], ["C0750"]]


def test_decoded_batch_reports_both_sizes() -> None:
    data = encode_envelope(_samples(25))
    decoded = decode_envelope(data)
    envelope = _envelope(data)
    assert isinstance(decoded, DecodedBatch)
    assert decoded.compressed_size == len(envelope.payload)
    assert decoded.uncompressed_size == envelope.uncompressed_size > decoded.compressed_size


def test_envelope_header_holds_creation_time_and_schema_version() -> None:
    envelope = _envelope(encode_envelope(_samples(2), created_ms=1_700_000_000_000))
    assert envelope.header.timestamp == 1_700_000_000_000
    assert envelope.header.schema_version == "1.0"
    assert envelope.message_count == 2


# -- what the encoder refuses ------------------------------------------------


def test_samples_of_two_vehicles_cannot_share_a_batch() -> None:
    mixed = _samples(2) + _samples(1, vehicle_id="VIN-2HGBH41JXMN109186")
    with pytest.raises(ValidationFailed, match="vehicle"):
        to_columns(mixed)


def test_samples_of_two_epochs_cannot_share_a_batch() -> None:
    samples = _samples(3)
    samples[2].epoch = 2
    samples[2].header.ClearField("message_id")
    with pytest.raises(ValidationFailed, match="epoch"):
        to_columns(samples)


def test_a_random_message_id_is_refused_because_it_would_break_dedup() -> None:
    samples = _samples(2)
    samples[1].header.message_id = bytes(16)
    with pytest.raises(ValidationFailed, match="derived"):
        to_columns(samples)


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        encode_envelope([])


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300])
def test_a_value_that_cannot_be_quantized_is_refused(value: float) -> None:
    samples = _samples(2)
    samples[1].odometer_km = value
    with pytest.raises(ValidationFailed, match="odometer"):
        to_columns(samples)


def test_an_unknown_dictionary_is_refused_by_the_encoder() -> None:
    with pytest.raises(UnknownDictionary):
        encode_envelope(_samples(2), dictionary_id=12345)


# -- what the decoder refuses ------------------------------------------------


def test_wrong_checksum_is_refused() -> None:
    envelope = _envelope(encode_envelope(_samples(5)))
    envelope.payload_sha256 = hashlib.sha256(b"something else").digest()
    with pytest.raises(ChecksumMismatch):
        decode_envelope(envelope.SerializeToString())


def test_payload_changed_in_transit_fails_the_checksum() -> None:
    envelope = _envelope(encode_envelope(_samples(5)))
    payload = bytearray(envelope.payload)
    payload[10] ^= 0x01
    envelope.payload = bytes(payload)
    with pytest.raises(ChecksumMismatch):
        decode_envelope(envelope.SerializeToString())


def test_every_truncation_of_an_envelope_is_refused() -> None:
    data = encode_envelope(_samples(10))
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            decode_envelope(data[:cut])


def test_truncated_zstd_payload_with_recomputed_checksum_is_refused() -> None:
    envelope = _envelope(encode_envelope(_samples(25)))
    envelope.payload = envelope.payload[:-5]
    with pytest.raises(CodecError, match="declared"):
        decode_envelope(_reseal(envelope))


def test_corrupted_frame_header_with_recomputed_checksum_is_refused() -> None:
    envelope = _envelope(encode_envelope(_samples(25)))
    payload = bytearray(envelope.payload)
    payload[0] ^= 0x80  # the ZSTD magic number
    envelope.payload = bytes(payload)
    with pytest.raises(CodecError, match="ZSTD"):
        decode_envelope(_reseal(envelope))


def test_every_bit_flip_with_recomputed_checksum_is_refused_or_harmless() -> None:
    """A sender that corrupts its payload before hashing it (bad RAM, a buggy
    compressor) passes the SHA-256; the ZSTD content checksum must catch it.
    The few flips zstd ignores (unused header bits, padding) inflate to the
    very same batch, so no flip turns into silently different values."""
    data = encode_envelope(_samples(25))
    expected = [s.SerializeToString() for s in decode_envelope(data).samples]
    envelope = _envelope(data)
    original = envelope.payload
    harmless = 0
    for bit in range(len(original) * 8):
        payload = bytearray(original)
        payload[bit // 8] ^= 1 << (bit % 8)
        envelope.payload = bytes(payload)
        try:
            decoded = decode_envelope(_reseal(envelope))
        except CodecError:
            continue
        harmless += 1
        assert [s.SerializeToString() for s in decoded.samples] == expected, bit
    print(f"\nbit flips: {len(original) * 8 - harmless} refused, {harmless} harmless")


def test_unknown_compression_is_refused() -> None:
    envelope = _envelope(encode_envelope(_samples(5)))
    envelope.compression = 7  # type: ignore[assignment]
    with pytest.raises(UnsupportedCompression):
        decode_envelope(envelope.SerializeToString())


def test_unknown_dictionary_is_refused() -> None:
    envelope = _envelope(encode_envelope(_samples(5)))
    envelope.dictionary_id = 4242
    with pytest.raises(UnknownDictionary):
        decode_envelope(_reseal(envelope))


def test_declared_size_above_the_cap_is_refused_before_decompressing() -> None:
    envelope = _envelope(encode_envelope(_samples(5)))
    envelope.uncompressed_size = DEFAULT_CONFIG.max_decompressed_bytes + 1
    with pytest.raises(DecompressionLimitExceeded):
        decode_envelope(envelope.SerializeToString())


def test_declared_size_that_does_not_match_is_refused() -> None:
    envelope = _envelope(encode_envelope(_samples(5)))
    envelope.uncompressed_size += 1
    with pytest.raises(CodecError, match="declare"):
        decode_envelope(envelope.SerializeToString())


def test_message_count_that_does_not_match_is_refused() -> None:
    envelope = _envelope(encode_envelope(_samples(5)))
    envelope.message_count = 6
    with pytest.raises(CodecError, match="message_count"):
        decode_envelope(envelope.SerializeToString())


def test_envelope_vehicle_that_differs_from_the_batch_is_refused() -> None:
    envelope = _envelope(encode_envelope(_samples(5)))
    envelope.vehicle_id = "VIN-2HGBH41JXMN109186"
    with pytest.raises(CodecError, match="vehicle"):
        decode_envelope(envelope.SerializeToString())


def test_column_of_the_wrong_length_is_refused() -> None:
    batch = to_columns(_samples(5))
    del batch.rpm[-1]
    with pytest.raises(CodecError, match="rpm"):
        from_columns(batch)


def test_gps_columns_must_match_the_gps_bits() -> None:
    batch = to_columns(_samples(5))
    batch.latitude.append(1)
    with pytest.raises(CodecError, match="latitude"):
        from_columns(batch)


def test_values_outside_their_field_are_refused() -> None:
    batch = to_columns(_samples(2))
    batch.rpm[1] = 2**40
    with pytest.raises(CodecError, match="rpm"):
        from_columns(batch)


def test_garbage_is_refused_as_a_corrupt_envelope() -> None:
    with pytest.raises(CodecError, match="corrupt envelope"):
        decode_envelope(b"\xff" * 64)


def test_envelope_above_the_packet_limit_is_refused_unparsed() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_envelope(bytes(DEFAULT_CONFIG.max_packet_bytes + 1))


# -- decompression bombs -----------------------------------------------------


def _peak_while_decoding(data: bytes, expected: type[Exception]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(expected):
            decode_envelope(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_bomb_that_admits_its_size_is_refused_before_decompressing() -> None:
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(BOMB_BYTES))
    assert len(bomb) < 4096
    peak = _peak_while_decoding(_forge(bomb, declared=1000), DecompressionLimitExceeded)
    print(f"\nbomb {len(bomb)} B -> {BOMB_BYTES} B, frame header check, peak {peak} B")
    assert peak < BOMB_BYTES // 1000


def test_bomb_that_hides_its_size_costs_at_most_the_declared_size() -> None:
    """A streamed frame omits the content size: only decompression can find out.

    tracemalloc sees Python allocations (the output buffers); zstd's own
    window is bounded by `max_window_bytes`, which the frame header check
    enforces before decompression starts.
    """
    bomb = _zeros_frame(BOMB_BYTES)
    assert zstandard.get_frame_parameters(bomb).content_size == zstandard.CONTENTSIZE_UNKNOWN
    peak = _peak_while_decoding(_forge(bomb, declared=1000), DecompressionLimitExceeded)
    print(f"\nbomb {len(bomb)} B -> {BOMB_BYTES} B, declared 1000 B, peak {peak} B")
    assert peak < BOMB_BYTES // 1000


def test_bomb_declared_at_the_cap_costs_at_most_the_cap() -> None:
    most = DEFAULT_CONFIG.max_samples  # the largest declaration that passes the count check
    cap = DEFAULT_CONFIG.max_batch_bytes(most)
    bomb = _zeros_frame(BOMB_BYTES)
    forged = _forge(bomb, declared=cap, message_count=most)
    peak = _peak_while_decoding(forged, DecompressionLimitExceeded)
    print(f"\nbomb {BOMB_BYTES} B declared {cap} B, peak {peak} B")
    assert peak < 3 * cap < BOMB_BYTES // 10


def test_frame_asking_for_a_huge_window_is_refused_before_decompressing() -> None:
    most = DEFAULT_CONFIG.max_samples
    size = DEFAULT_CONFIG.max_batch_bytes(most)
    frame = _zeros_frame(size, window_log=27)
    assert zstandard.get_frame_parameters(frame).window_size > DEFAULT_CONFIG.max_window_bytes
    with pytest.raises(DecompressionLimitExceeded, match="window"):
        decode_envelope(_forge(frame, declared=size, message_count=most))


# -- sizes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet_dictionary() -> tuple[int, bytes]:
    """A dictionary trained on other vehicles of the fleet (not the one measured)."""
    batches = [
        TelemetrySampler(f"VIN-5YJ3E1EA7KF{i:06d}", seed=10_000 + i).samples(25) for i in range(100)
    ]
    return train_dictionary(batches, 4096)


def _reduction(count: int, *, seed: int, dictionary: tuple[int, bytes] | None = None) -> float:
    samples = _samples(count, seed=seed)
    singles = sum(len(s.SerializeToString()) for s in samples)
    if dictionary is None:
        envelope = encode_envelope(samples)
    else:
        config = CodecConfig(dictionaries={dictionary[0]: dictionary[1]})
        envelope = encode_envelope(samples, dictionary_id=dictionary[0], config=config)
        assert len(decode_envelope(envelope, config).samples) == count
    return 1 - len(envelope) / singles


def _repeated_baseline(count: int, *, seed: int) -> float:
    """Plain length-prefixed Telemetry messages, ZSTD level 3: what columns beat."""
    samples = _samples(count, seed=seed)
    singles = [s.SerializeToString() for s in samples]
    framed = b"".join(len(s).to_bytes(2, "little") + s for s in singles)
    return 1 - len(zstandard.ZstdCompressor(level=3).compress(framed)) / sum(map(len, singles))


SIZE_SEEDS = range(10)


def test_25_sample_envelope_is_85_percent_smaller_than_single_messages(
    fleet_dictionary: tuple[int, bytes],
) -> None:
    """25 one-minute samples, measured over ten vehicles' worth of seeds.

    The envelope is >= 85 % smaller than the 25 single messages, with or
    without a fleet-trained dictionary, because the columns are quantized to
    the bus signals' own resolutions (finer steps only add noise bits).
    """
    with_dict = [_reduction(25, seed=s, dictionary=fleet_dictionary) for s in SIZE_SEEDS]
    plain = [_reduction(25, seed=s) for s in SIZE_SEEDS]
    repeated = [_repeated_baseline(25, seed=s) for s in SIZE_SEEDS]
    print(
        f"\n25 samples: columnar+zstd {min(plain):.1%}..{max(plain):.1%}, "
        f"+dictionary {min(with_dict):.1%}..{max(with_dict):.1%}, "
        f"repeated Telemetry+zstd {min(repeated):.1%}..{max(repeated):.1%}"
    )
    assert min(with_dict) >= 0.85
    assert min(plain) >= 0.85
    assert min(plain) > max(repeated) + 0.2


def test_50_sample_envelope_is_85_percent_smaller_even_without_dictionary(
    fleet_dictionary: tuple[int, bytes],
) -> None:
    with_dict = [_reduction(50, seed=s, dictionary=fleet_dictionary) for s in SIZE_SEEDS]
    plain = [_reduction(50, seed=s) for s in SIZE_SEEDS]
    repeated = [_repeated_baseline(50, seed=s) for s in SIZE_SEEDS]
    print(
        f"\n50 samples: columnar+zstd {min(plain):.1%}..{max(plain):.1%}, "
        f"+dictionary {min(with_dict):.1%}..{max(with_dict):.1%}, "
        f"repeated Telemetry+zstd {min(repeated):.1%}..{max(repeated):.1%}"
    )
    assert min(plain) >= 0.85
    assert min(with_dict) >= 0.85


def test_dictionary_round_trip_and_its_id_is_the_frames(
    fleet_dictionary: tuple[int, bytes],
) -> None:
    dict_id, data = fleet_dictionary
    assert dict_id == zstandard.ZstdCompressionDict(data).dict_id() != 0
    config = CodecConfig(dictionaries={dict_id: data})
    samples = _samples(25)
    envelope = encode_envelope(samples, dictionary_id=dict_id, config=config)
    assert zstandard.get_frame_parameters(_envelope(envelope).payload).dict_id == dict_id
    _assert_close(samples, decode_envelope(envelope, config).samples)
    with pytest.raises(UnknownDictionary):
        decode_envelope(envelope)  # a receiver without the dictionary


def test_dictionary_registered_under_a_wrong_id_is_a_configuration_error(
    fleet_dictionary: tuple[int, bytes],
) -> None:
    with pytest.raises(ValueError, match="id"):
        CodecConfig(dictionaries={fleet_dictionary[0] + 1: fleet_dictionary[1]})


def test_training_on_too_little_material_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        train_dictionary([_samples(2)], 4096)


# -- splitting ---------------------------------------------------------------


def test_split_to_fit_halves_until_every_envelope_fits() -> None:
    config = CodecConfig(max_packet_bytes=1024, mqtt_overhead_bytes=256)
    samples = _samples(50)
    envelopes = split_to_fit(samples, config)
    assert len(envelopes) > 1
    assert all(len(e) <= config.max_envelope_bytes for e in envelopes)
    decoded = [decode_envelope(e, config) for e in envelopes]
    assert len({d.batch_id for d in decoded}) == len(envelopes)
    _assert_close(samples, [s for d in decoded for s in d.samples])


def test_split_to_fit_sends_a_batch_that_fits_as_one_envelope() -> None:
    assert len(split_to_fit(_samples(50))) == 1


def test_split_to_fit_refuses_a_single_sample_that_cannot_fit() -> None:
    config = CodecConfig(max_packet_bytes=200, mqtt_overhead_bytes=100)
    with pytest.raises(PayloadTooLarge):
        split_to_fit(_samples(4), config)


def test_batch_above_the_receivers_cap_is_too_large_to_send() -> None:
    config = CodecConfig(max_decompressed_bytes=500)
    with pytest.raises(PayloadTooLarge, match="cap"):
        encode_envelope(_samples(50), config=config)
    assert len(split_to_fit(_samples(50), config)) > 1


# -- sample bombs: the count, not the bytes, is the unit of work ----------------


def _sample_bomb(declared: int, *, envelope_count: int | None = None) -> bytes:
    """A few hundred bytes declaring `declared` samples: every column all zeros."""
    batch = telemetry_pb2.TelemetryBatch(
        vehicle_id=VIN, epoch=1, schema_version="1.0", sample_count=declared
    )
    for column in PER_SAMPLE_COLUMNS:
        getattr(batch, column).extend([0] * declared)
    raw = batch.SerializeToString()
    payload = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(raw)
    envelope = Envelope(
        batch_id=BATCH_ID,
        vehicle_id=VIN,
        message_count=declared if envelope_count is None else envelope_count,
        compression=ZSTD,
        uncompressed_size=len(raw),
        payload=payload,
    )
    return _reseal(envelope)


def _never(*args: object, **kwargs: object) -> None:
    raise AssertionError("reached: the check should have refused the batch before this")


def test_an_envelope_declaring_65000_samples_is_refused_before_anything_is_decompressed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bomb = _sample_bomb(65_000)
    assert len(bomb) < 512  # the attack: a few hundred bytes on the wire
    monkeypatch.setattr(batch_codec, "_decompress", _never)
    monkeypatch.setattr(batch_codec, "from_columns", _never)
    with pytest.raises(TooManySamples, match="65000 samples") as refused:
        decode_envelope(bomb)
    assert refused.value.reason == "too_many_samples"
    assert isinstance(refused.value, PayloadTooLarge)  # the sender's split_to_fit halves it


def test_a_batch_counting_more_samples_than_its_envelope_is_refused_before_expanding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bomb = _sample_bomb(1000, envelope_count=5)  # the envelope lies, the batch inside says 1,000
    monkeypatch.setattr(batch_codec, "from_columns", _never)
    with pytest.raises(CodecError):  # 5 samples cannot need ~16 KB: the expansion bound
        decode_envelope(bomb)
    lenient = CodecConfig(max_sample_bytes=64 * 1024)  # past the expansion bound, the count
    with pytest.raises(CodecError, match="message_count 5, batch of 1000"):
        decode_envelope(bomb, lenient)


def test_an_envelope_declaring_more_bytes_than_its_samples_can_need_is_refused() -> None:
    envelope = _envelope(encode_envelope(_samples(1)))
    envelope.uncompressed_size = DEFAULT_CONFIG.max_batch_bytes(1) + 1
    with pytest.raises(DecompressionLimitExceeded, match="for 1 samples"):
        decode_envelope(envelope.SerializeToString())


def test_a_batch_at_the_cap_is_accepted_and_one_above_is_split_by_the_sender() -> None:
    config = CodecConfig(max_samples=20)
    samples = _samples(50)
    assert len(decode_envelope(encode_envelope(samples[:20], config=config), config).samples) == 20
    with pytest.raises(TooManySamples):
        encode_envelope(samples[:21], config=config)
    envelopes = split_to_fit(samples, config)
    counts = [len(decode_envelope(e, config).samples) for e in envelopes]
    assert sum(counts) == 50
    assert max(counts) <= 20
    with pytest.raises(TooManySamples):  # the receiver's cap holds whatever the sender used
        decode_envelope(encode_envelope(samples), config)


def test_the_default_cap_holds_the_vehicles_whole_offline_buffer_in_one_packet() -> None:
    cap = DEFAULT_CONFIG.max_samples
    envelope = encode_envelope(_samples(cap))  # raises if it did not fit the packet
    assert len(envelope) <= DEFAULT_CONFIG.max_envelope_bytes
    assert len(decode_envelope(envelope).samples) == cap
