"""The update package: a small SWUpdate-style bundle, built and read here.

SWUpdate's `.swu` is a cpio archive whose first member is `sw-description`;
ours is the same idea in an uncompressed ustar archive (stdlib, streamable):

* `sw-description` (first member): JSON `{"format": 1, "version": "2.5.1",
  "image": {"filename": "rootfs.img", "type": "raw", "size": N, "sha256": hex}}`;
* the image itself, under that filename.

`build_package(version, payload)` makes one, so the cloud, the demo and the
tests upload a real package; its SHA-256 is what the signed manifest carries.
Reading never writes a member to a path taken from the archive (no path
traversal): the image is streamed into the flash's staging file, and its
hash compared with the description. Any defect is a `CodecError`, which the
installer reports as EXTRACTION_FAILED.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from v2c.contract.errors import ChecksumMismatch, CodecError

FORMAT: Final = 1
DESCRIPTION: Final = "sw-description"
IMAGE_NAME: Final = "rootfs.img"
MAX_DESCRIPTION: Final = 64 * 1024
CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class PackageDescription:
    version: str
    filename: str
    size: int
    sha256: str  # hex, of the image


def _description(version: str, payload_size: int, payload_sha256: str) -> bytes:
    doc = {
        "format": FORMAT,
        "version": version,
        "image": {
            "filename": IMAGE_NAME,
            "type": "raw",
            "size": payload_size,
            "sha256": payload_sha256,
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _add(tar: tarfile.TarFile, name: str, size: int, data: IO[bytes]) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0  # reproducible bytes
    tar.addfile(info, data)


def build_package(version: str, payload: bytes) -> bytes:
    """A package holding `payload` as the image of `version` (in memory)."""
    buffer = io.BytesIO()
    description = _description(version, len(payload), hashlib.sha256(payload).hexdigest())
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _add(tar, DESCRIPTION, len(description), io.BytesIO(description))
        _add(tar, IMAGE_NAME, len(payload), io.BytesIO(payload))
    return buffer.getvalue()


def write_package(path: Path, version: str, image: Path) -> str:
    """Build a package from an image file, streaming (large images); returns
    the package's SHA-256 (hex), for the manifest."""
    digest = hashlib.sha256()
    size = image.stat().st_size
    with image.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    description = _description(version, size, digest.hexdigest())
    with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _add(tar, DESCRIPTION, len(description), io.BytesIO(description))
        with image.open("rb") as f:
            _add(tar, IMAGE_NAME, size, f)
    return file_sha256(path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_description(raw: bytes) -> PackageDescription:
    try:
        doc = json.loads(raw)
        image = doc["image"]
        if doc["format"] != FORMAT or image.get("type") != "raw":
            raise CodecError(f"unsupported package format {doc['format']!r}")
        description = PackageDescription(
            version=str(doc["version"]),
            filename=str(image["filename"]),
            size=int(image["size"]),
            sha256=str(image["sha256"]).lower(),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CodecError(f"unreadable sw-description: {exc}") from exc
    if description.size < 0 or len(description.sha256) != 64 or not description.version:
        raise CodecError("sw-description: bad image size, hash or version")
    return description


class PackageReader:
    """An open package: its description, then its image as a chunk stream."""

    def __init__(self, path: Path) -> None:
        try:
            self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close()
        except (OSError, tarfile.TarError) as exc:
            raise CodecError(f"not a package: {exc}") from exc
        try:
            self.description, self._member = self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> tuple[PackageDescription, tarfile.TarInfo]:
        try:
            first = self._tar.next()
            if first is None or first.name != DESCRIPTION or not first.isfile():
                raise CodecError("the package does not start with sw-description")
            if first.size > MAX_DESCRIPTION:
                raise CodecError("sw-description is too large")
            description = _parse_description(self._read(first))
            member = self._tar.getmember(description.filename)
        except KeyError as exc:
            raise CodecError("the package lacks the image its description names") from exc
        except (tarfile.TarError, OSError) as exc:
            raise CodecError(f"unreadable package: {exc}") from exc
        if not member.isfile() or member.size != description.size:
            raise CodecError("the image's size differs from its description")
        return description, member

    def _read(self, member: tarfile.TarInfo) -> bytes:
        stream = self._tar.extractfile(member)
        if stream is None:
            raise CodecError(f"{member.name} is not a file")
        return stream.read()

    def chunks(self) -> Iterator[bytes]:
        stream = self._tar.extractfile(self._member)
        if stream is None:
            raise CodecError("the image is not a file")
        try:
            yield from iter(lambda: stream.read(CHUNK), b"")
        except (OSError, tarfile.TarError) as exc:
            raise CodecError(f"the image is truncated: {exc}") from exc

    def check(self, sha256_hex: str) -> None:
        """The extracted image's hash against the description's."""
        if sha256_hex != self.description.sha256:
            raise ChecksumMismatch("the extracted image does not match sw-description")

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> PackageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
