"""The wire contract builds with the OS's stock protoc and its bytes mean the same to both.

The Python modules come from the compiler bundled with grpcio-tools; a
vehicle's C++ or Go code would use whatever protoc its toolchain ships.
Compiling with Debian's /usr/bin/protoc and crossing bytes both ways
(`--decode`, `--encode`) proves the .proto sources, not one compiler's
output, are the contract.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, text_format
from google.protobuf.message import Message

from v2c.infra.tools.protogen import PROTO_ROOT, proto_sources
from v2c.v1 import command_pb2, common_pb2, ota_pb2, telemetry_pb2

MODULES = {"v2c/v1/common.proto": common_pb2, "v2c/v1/ota.proto": ota_pb2}
MODULES["v2c/v1/telemetry.proto"] = telemetry_pb2
MODULES["v2c/v1/command.proto"] = command_pb2


def header(n: int) -> common_pb2.Header:
    # Bytes outside ASCII and UTF-8 exercise both sides' escaping.
    return common_pb2.Header(
        message_id=bytes([0xFF, 0x00, n, 0x0A, 0x22, 0x27, 0x5C]) + bytes(9),
        correlation_id="corr-é-1",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        timestamp=1_767_225_600_000 + n,
        schema_version="1.0",
    )


def manifest() -> ota_pb2.OTAManifest:
    return ota_pb2.OTAManifest(
        update_id="upd-1",
        version="2.4.1",
        type=ota_pb2.UPDATE_TYPE_SECURITY_PATCH,
        priority=ota_pb2.UPDATE_PRIORITY_CRITICAL,
        size_bytes=2**40 + 3,
        checksum_sha256=bytes(range(32)),
        min_battery_level=40,
        can_install_while_driving=True,
        estimated_install_time_sec=600,
        expires_at=1_767_830_400_000,
        target_model="model-s",
        target_hardware_id="hw-rev-c",
        min_installed_version="2.0.0",
        key_id="kms-key-1",
        campaign_id="camp-1",
        firmware_id="fw-1",
        is_rollback=True,
        issued_at=1_767_225_600_000,
    )


SAMPLES: dict[str, Message] = {
    "Telemetry": telemetry_pb2.Telemetry(
        header=header(1),
        vehicle_id="VIN-1HGBH41JXMN109186",
        epoch=3,
        sequence=2**63 + 5,
        speed_kmh=0.0,  # optional: present-but-zero must survive
        rpm=2150,
        gear=telemetry_pb2.GEAR_DRIVE,
        battery_voltage_v=12.6,
        state_of_charge_pct=81.25,
        coolant_temp_c=-4.1,
        fuel_level_pct=55.5,
        odometer_km=123456.789,
        gps=telemetry_pb2.GpsPosition(
            latitude=48.1351253, longitude=-11.5819806, altitude_m=519.5, heading_deg=271.25
        ),
        tire_pressures=telemetry_pb2.TirePressures(
            front_left_kpa=230.5, front_right_kpa=231.0, rear_left_kpa=228.75, rear_right_kpa=229
        ),
        diagnostic_flags=telemetry_pb2.DIAGNOSTIC_FLAG_CHECK_ENGINE
        | telemetry_pb2.DIAGNOSTIC_FLAG_CRITICAL_DTC,
        dtc_codes=["P0301", "U0100"],
        ignition_on=True,
        charging=False,
    ),
    "TelemetryBatch": telemetry_pb2.TelemetryBatch(
        vehicle_id="VIN-1HGBH41JXMN109186",
        epoch=3,
        schema_version="1.0",
        sample_count=3,
        sequence=[100, 1, 1],
        timestamp=[1_767_225_600_000, 1000, 1000],
        speed=[5000, -25, 0],  # deltas go negative: sint64 zig-zag on both sides
        latitude=[481351253, -12],
        dtcs=[telemetry_pb2.BatchDtc(sample_index=2, code="P0301")],
    ),
    "TelemetryBatchEnvelope": telemetry_pb2.TelemetryBatchEnvelope(
        header=header(2),
        batch_id=bytes(range(16)),
        vehicle_id="VIN-1HGBH41JXMN109186",
        message_count=50,
        compression=telemetry_pb2.COMPRESSION_ZSTD,
        dictionary_id=7,
        uncompressed_size=4096,
        payload_sha256=bytes(range(100, 132)),
        payload=b"\x28\xb5\x2f\xfd" + bytes(range(256)),
    ),
    "OTAManifest": manifest(),
    "OTAUpdateAvailable": ota_pb2.OTAUpdateAvailable(
        header=header(3),
        manifest=manifest().SerializeToString(deterministic=True),
        signature=bytes(range(200, 256)) + bytes(range(15)),
        key_id="kms-key-1",
        download_url="https://bucket.s3.amazonaws.com/fw/upd-1.bin?X-Amz-Signature=abc%2F",
    ),
    "OTAStatus": ota_pb2.OTAStatus(
        header=header(4),
        vehicle_id="VIN-1HGBH41JXMN109186",
        update_id="upd-1",
        state=ota_pb2.OTAStatus.ROLLED_BACK,
        reason=ota_pb2.OTAStatus.POST_INSTALL_VERIFICATION_FAILED,
        sequence=12,
        progress_percent=100,
        bytes_downloaded=2**40 + 3,
        retry_after_sec=300,
        attempts=2,
        download_duration_ms=81_000,
        install_duration_ms=120_000,
        total_duration_ms=250_000,
        installed_version="2.3.9",
        error_detail='health check "can-bus" failed\nafter reboot',
        campaign_id="camp-1",
    ),
}


def protoc(executable: Path, *args: str, stdin: bytes = b"") -> bytes:
    sources = [str(path.relative_to(PROTO_ROOT)) for path in proto_sources()]
    done = subprocess.run(
        [str(executable), f"-I{PROTO_ROOT}", *args, *sources],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"{executable} {' '.join(args)} failed:\n{done.stderr.decode()}"
    return done.stdout


def test_every_proto_compiles_with_stock_protoc_to_the_schema_python_embeds(
    stock_protoc: Path, tmp_path: Path
) -> None:
    descriptor_set = tmp_path / "v2c.pb"

    protoc(stock_protoc, f"--descriptor_set_out={descriptor_set}", "--include_imports")

    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    assert sorted(f.name for f in files) == sorted(MODULES)
    for stock in files:
        embedded = descriptor_pb2.FileDescriptorProto.FromString(
            MODULES[stock.name].DESCRIPTOR.serialized_pb
        )
        # json_name is derived by each compiler and only the stock one records it.
        for proto in (stock, embedded):
            for message in proto.message_type:
                for field in message.field:
                    field.ClearField("json_name")
        assert stock == embedded, f"{stock.name}: stock protoc and the _pb2 module disagree"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_python_encoded_bytes_decode_identically_with_stock_protoc(
    stock_protoc: Path, name: str
) -> None:
    message = SAMPLES[name]

    decoded_text = protoc(
        stock_protoc, f"--decode=v2c.v1.{name}", stdin=message.SerializeToString()
    ).decode()

    # Same text up to string escaping: protoc 3.21 writes non-ASCII as octal
    # escapes, protobuf 7 as UTF-8, so compare after one printer normalizes both.
    from_protoc = text_format.Parse(decoded_text, type(message)())
    assert text_format.MessageToString(from_protoc) == text_format.MessageToString(message)
    assert from_protoc == message


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_stock_protoc_encoded_bytes_parse_to_an_equal_python_message(
    stock_protoc: Path, name: str
) -> None:
    message = SAMPLES[name]

    encoded = protoc(
        stock_protoc, f"--encode=v2c.v1.{name}", stdin=text_format.MessageToString(message).encode()
    )

    assert type(message).FromString(encoded) == message
