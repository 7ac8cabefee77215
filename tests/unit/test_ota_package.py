"""The SWUpdate-style update package: built by the cloud side, read by the installer."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from v2c.contract.errors import ChecksumMismatch, CodecError
from v2c.vehicle_sim.ota.device.package import (
    DESCRIPTION,
    IMAGE_NAME,
    PackageReader,
    build_package,
    file_sha256,
    write_package,
)

PAYLOAD = bytes(range(256)) * 5000  # 1.28 MB: more than one read chunk


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def description(size: int = 3, sha: str = "0" * 64, version: str = "1.0.0") -> bytes:
    doc = {
        "format": 1,
        "version": version,
        "image": {"filename": IMAGE_NAME, "type": "raw", "size": size, "sha256": sha},
    }
    return json.dumps(doc).encode()


def test_a_package_reads_back_its_description_and_image(tmp_path: Path) -> None:
    path = tmp_path / "p.swu"
    path.write_bytes(build_package("2.5.1", PAYLOAD))
    with PackageReader(path) as reader:
        assert reader.description.version == "2.5.1"
        assert reader.description.size == len(PAYLOAD)
        assert reader.description.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
        data = b"".join(reader.chunks())
    assert data == PAYLOAD


def test_building_is_reproducible_and_streaming_gives_the_same_bytes(tmp_path: Path) -> None:
    image = tmp_path / "rootfs.img"
    image.write_bytes(PAYLOAD)
    sha = write_package(tmp_path / "streamed.swu", "2.5.1", image)
    built = build_package("2.5.1", PAYLOAD)
    assert built == build_package("2.5.1", PAYLOAD)
    assert sha == hashlib.sha256(built).hexdigest() == file_sha256(tmp_path / "streamed.swu")


@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ([(IMAGE_NAME, b"abc"), (DESCRIPTION, description())], "start with sw-description"),
        ([(DESCRIPTION, b"{not json")], "unreadable sw-description"),
        ([(DESCRIPTION, description())], "lacks the image"),
        ([(DESCRIPTION, description(size=4)), (IMAGE_NAME, b"abc")], "size differs"),
        ([(DESCRIPTION, description(sha="xyz")), (IMAGE_NAME, b"abc")], "bad image size, hash"),
    ],
)
def test_malformed_packages_are_codec_errors(
    tmp_path: Path, members: list[tuple[str, bytes]], problem: str
) -> None:
    path = tmp_path / "bad.swu"
    path.write_bytes(tar_of(members))
    with pytest.raises(CodecError, match=problem):
        PackageReader(path)


def test_an_image_that_does_not_match_its_description_fails_the_check(tmp_path: Path) -> None:
    path = tmp_path / "p.swu"
    path.write_bytes(tar_of([(DESCRIPTION, description()), (IMAGE_NAME, b"abc")]))
    with PackageReader(path) as reader:
        digest = hashlib.sha256(b"".join(reader.chunks())).hexdigest()
        with pytest.raises(ChecksumMismatch):
            reader.check(digest)


def test_a_file_that_is_no_archive_is_a_codec_error(tmp_path: Path) -> None:
    path = tmp_path / "p.swu"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(CodecError):
        PackageReader(path)
