"""The package a vehicle installs, made and checked on the fleet manager's side.

The update agent installs one format only (`v2c.vehicle_sim.ota.device.package`:
a ustar archive whose first member `sw-description` names and hashes the
image that follows). The registry accepts any `.bin`, so a raw image uploads
fine and then fails on every vehicle with EXTRACTION_FAILED, after the canary
gate has paused the campaign. `v2c firmware build` therefore makes the
package with the agent's own builder (infra may import the vehicle side:
docs/architecture.md's layering table), and `v2c firmware upload` warns when
a file is not one, reading the archive's headers and description only: no
member is extracted, nothing is written to disk.

The checks an upload can make before it hashes or sends a byte are here too
(`upload_problems`): a SemVer version, non-empty names, a file name the
registry accepts and content that starts like its format.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from v2c.contract.errors import CodecError, InvalidInput, ValidationFailed
from v2c.contract.semver import SemVer
from v2c.handlers.ota.firmware.formats import (
    SNIFF_BYTES,
    check_signature,
    format_from_filename,
)
from v2c.vehicle_sim.ota.device.package import PackageReader, write_package

BUILD_HINT: Final = "`v2c firmware build` makes one"


@dataclass(frozen=True, slots=True)
class Built:
    path: Path
    version: str
    model: str
    image_bytes: int
    package_bytes: int
    sha256: str  # of the package: what the registry and the signed manifest carry

    def to_json(self) -> dict[str, str | int]:
        return {
            "path": str(self.path),
            "version": self.version,
            "model": self.model,
            "image_bytes": self.image_bytes,
            "package_bytes": self.package_bytes,
            "sha256": self.sha256,
        }


def same_version(a: str, b: str) -> bool:
    """Equal by SemVer precedence (build metadata ignored), as the agent compares."""
    try:
        return SemVer.parse(a) == SemVer.parse(b)
    except ValidationFailed:
        return a == b


def default_name(model: str, version: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in model.lower())
    return f"{safe}-{version}.bin"


def _files(root: Path) -> Iterator[Path]:
    """Every entry under `root`, sorted (the same tree makes the same bytes)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            yield Path(dirpath) / name


def _tar_directory(root: Path, target: Path) -> None:
    """`root` as a reproducible ustar image: sorted, mtime 0, owner root,
    regular files and directories only (a link could point off the tree)."""
    with tarfile.open(target, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in _files(root):
            mode = path.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise InvalidInput(f"{path} is neither a file nor a directory")
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isdir():
                tar.addfile(info)
            else:
                with path.open("rb") as handle:
                    tar.addfile(info, handle)


def build(payload: Path, version: str, model: str, out: Path) -> Built:
    """A package of `payload` (a file is the image; a directory is packed as
    one ustar image) for `version`, written to `out`."""
    SemVer.parse(version)
    if not model.strip():
        raise InvalidInput("the model must not be empty")
    if not payload.exists():
        raise InvalidInput(f"{payload} does not exist")
    out.parent.mkdir(parents=True, exist_ok=True)
    if payload.is_dir():
        with tempfile.TemporaryDirectory(dir=out.parent) as work:
            image = Path(work) / "rootfs.img"
            _tar_directory(payload, image)
            digest = write_package(out, version, image)
            image_bytes = image.stat().st_size
    else:
        image_bytes = payload.stat().st_size
        digest = write_package(out, version, payload)
    return Built(out, version, model, image_bytes, out.stat().st_size, digest)


def installable_problem(path: Path, version: str) -> str | None:
    """Why vehicles would refuse `path` as `version`, or None when the
    agent's reader finds its description and its image where it expects."""
    try:
        with PackageReader(path) as reader:
            held = reader.description.version
    except CodecError as exc:
        return f"{path.name} is not a package the vehicle agent installs ({exc}); {BUILD_HINT}"
    if not same_version(held, version):
        return (
            f"{path.name} holds version {held}, not {version}: vehicles would refuse it "
            "(EXTRACTION_FAILED)"
        )
    return None


def upload_problems(
    path: Path, filename: str, version: str, texts: Mapping[str, str]
) -> dict[str, str]:
    """What is wrong with an upload's arguments, by the flag to blame; empty
    when nothing is. Reads the file's first bytes only."""
    problems: dict[str, str] = {}
    try:
        SemVer.parse(version)
    except ValidationFailed as exc:
        problems["--version"] = exc.detail
    for flag, value in texts.items():
        if not value.strip():
            problems[flag] = "must not be empty"
    try:
        fmt = format_from_filename(filename)
    except InvalidInput as exc:
        flag = "--filename" if filename != path.name else "FILE"
        problems[flag] = exc.detail.removeprefix("file: ")
        return problems
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        problems["FILE"] = f"cannot read {path}: {exc.strerror or exc}"
        return problems
    if not head:
        problems["FILE"] = f"{path} is empty"
        return problems
    try:
        check_signature(fmt, head)
    except InvalidInput as exc:
        problems["FILE"] = exc.detail.removeprefix("file: ")
    return problems
