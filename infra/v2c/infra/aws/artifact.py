"""The Lambda deployment artifact: `build/lambda/`, the folder the SAM template's
`CodeUri` names.

`sam build` of the repository root finds no `v2c` package (the namespace is
spread over five folders, ADR 0002), and a bundle of every dependency, the
local stack's included, weighs 315 MB: above Lambda's 250 MB. So the artifact
is built here, from what the tests ran against:

* the three subpackages a handler may import (`v2c.contract`, `v2c.v1`,
  `v2c.handlers`), merged into one `v2c/` tree as the wheel merges them, with
  a small `v2c-<version>.dist-info` so that `importlib.metadata.version("v2c")`
  (the API's health answer) names the deployed version;
* the closure of pyproject.toml's core `dependencies` (never an extra),
  resolved with the markers of Lambda's python3.11 on x86_64, each
  distribution copied file by file from the installed environment by its
  RECORD: offline, and at the versions the tests passed with. boto3 and
  botocore are bundled although the runtime has its own, because that copy
  moves on AWS's schedule, not with ours; their share is reported apart.

A wheel built for a newer glibc than Amazon Linux 2's 2.26 (the python3.11
runtime's) imports on this machine and fails in Lambda, so each distribution's
wheel tags are checked against Lambda's. `--pip` mode (`pip install --target
--platform manylinux2014_x86_64 --only-binary=:all:`) fetches wheels for
Lambda's platform instead: for such a distribution, or to build on another
machine. It needs the network, so no test runs it.

The decisions (closure, tags, which files, manifest) are pure functions;
`build_artifact` does the I/O.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags, parse_tag
from packaging.utils import canonicalize_name

from v2c.infra.errors import ArtifactError

REPO_ROOT: Final = Path(__file__).resolve().parents[4]
ARTIFACT_DIR: Final = "build/lambda"
MANIFEST_NAME: Final = "v2c-artifact.json"
MANIFEST_FORMAT: Final = 1
# Lambda's quota for a function's code and layers, unzipped ("250 MB" = 250 MiB).
LAMBDA_UNZIPPED_LIMIT_BYTES: Final = 262_144_000
# The most a .zip uploaded directly, not through S3, may weigh ("50 MB").
LAMBDA_DIRECT_UPLOAD_LIMIT_BYTES: Final = 52_428_800
LAMBDA_PYTHON: Final = (3, 11)
LAMBDA_PLATFORM: Final = "manylinux2014_x86_64"
LAMBDA_GLIBC_MINOR: Final = 26  # python3.11 runs on Amazon Linux 2: glibc 2.26
# What a handler may import of the namespace (docs/architecture.md, the layering
# table): (source folder, subpackage).
PACKAGES: Final = (("proto", "contract"), ("proto", "v1"), ("handlers", "handlers"))
PROJECT: Final = "v2c"
AWS_SDK: Final = "boto3"  # its closure is what the runtime would also provide
BYTE_CODE: Final = frozenset({".pyc", ".pyo"})

Mode = Literal["copy", "pip"]
Runner = Callable[[Sequence[str]], None]


# --- the pure part -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DistributionSpec:
    """What the resolver needs of one distribution."""

    name: str
    version: str
    requires: tuple[str, ...] = ()


Lookup = Callable[[str], DistributionSpec | None]


@dataclass(frozen=True, slots=True)
class BundledDistribution:
    """One distribution as it lies in the artifact."""

    name: str
    version: str
    bytes: int
    files: int
    wheel_tags: tuple[str, ...]
    lambda_loadable: bool
    aws_sdk: bool


@dataclass(frozen=True, slots=True)
class ArtifactReport:
    """What `build_artifact` built; `manifest` is its JSON form."""

    directory: Path
    mode: Mode
    version: str
    distributions: tuple[BundledDistribution, ...]
    package_bytes: int  # the v2c tree and its dist-info
    package_files: int
    total_bytes: int  # every file but the manifest
    file_count: int
    digest: str  # SHA-256 over every path and content: equal builds, equal digests

    @property
    def aws_sdk_bytes(self) -> int:
        return sum(d.bytes for d in self.distributions if d.aws_sdk)

    @property
    def not_loadable(self) -> tuple[str, ...]:
        """Distributions whose compiled code would not load in Lambda: rebuild with `--pip`."""
        return tuple(d.name for d in self.distributions if not d.lambda_loadable)

    @property
    def fits(self) -> bool:
        return self.total_bytes < LAMBDA_UNZIPPED_LIMIT_BYTES


def lambda_environment(python_full_version: str = "3.11.0") -> dict[str, str]:
    """The marker environment of Lambda's python3.11 on x86_64: requirements are
    resolved for where the code runs, not for the machine that builds it."""
    return {
        "implementation_name": "cpython",
        "implementation_version": python_full_version,
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": python_full_version,
        "python_version": "{}.{}".format(*LAMBDA_PYTHON),
        "sys_platform": "linux",
    }


def _parse(line: str, needed_by: str) -> Requirement:
    try:
        return Requirement(line)
    except InvalidRequirement as error:
        raise ArtifactError(f"{needed_by}: invalid requirement {line!r}: {error}") from error


def _applies(requirement: Requirement, extra: str, environment: Mapping[str, str]) -> bool:
    """Whether a requirement holds for one of the extras asked of its distribution
    (`""`: the distribution itself)."""
    if requirement.marker is None:
        return extra == ""
    return requirement.marker.evaluate({**environment, "extra": extra})


def resolve_closure(
    roots: Iterable[str], lookup: Lookup, environment: Mapping[str, str]
) -> dict[str, DistributionSpec]:
    """Every distribution `roots` need, transitively, by canonical name (sorted).

    Extras asked of a distribution by any requirement add that extra's
    requirements, also when asked only after it was first reached. A
    requirement nothing satisfies (missing, or at a version its specifier
    excludes) raises `ArtifactError`: an artifact pip would refuse is not built.
    """
    resolved: dict[str, DistributionSpec] = {}
    extras_of: dict[str, set[str]] = {}
    pending = [
        (requirement, "pyproject.toml")
        for requirement in (_parse(line, "pyproject.toml") for line in roots)
        if _applies(requirement, "", environment)
    ]
    while pending:
        requirement, needed_by = pending.pop()
        key = canonicalize_name(requirement.name)
        spec = resolved.get(key)
        if spec is None:
            spec = lookup(key)
            if spec is None:
                raise ArtifactError(
                    f"{requirement} (needed by {needed_by}) is not installed: run scripts/setup.sh"
                )
            resolved[key] = spec
            extras_of[key] = set()
        if not requirement.specifier.contains(spec.version, prereleases=True):
            raise ArtifactError(
                f"{needed_by} needs {requirement}, but {spec.name} {spec.version} is installed"
            )
        asked = ({""} | set(requirement.extras)) - extras_of[key]
        extras_of[key] |= asked
        for line in spec.requires:
            child = _parse(line, spec.name)
            if any(_applies(child, extra, environment) for extra in asked):
                pending.append((child, spec.name))
    return dict(sorted(resolved.items()))


@functools.cache
def lambda_tags() -> frozenset[Tag]:
    """Every wheel tag Lambda's python3.11 on x86_64 loads: CPython 3.11 (and
    abi3, pure Python) for manylinux up to glibc 2.26."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(LAMBDA_GLIBC_MINOR, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    interpreter = "cp{}{}".format(*LAMBDA_PYTHON)
    return frozenset(cpython_tags(LAMBDA_PYTHON, [interpreter], platforms)) | frozenset(
        compatible_tags(LAMBDA_PYTHON, interpreter, platforms)
    )


def lambda_loadable(wheel_tags: Iterable[str]) -> bool:
    """Whether a wheel with these tags (its WHEEL file's `Tag:` lines) runs in Lambda."""
    for text in wheel_tags:
        try:
            if parse_tag(text) & lambda_tags():
                return True
        except ValueError:  # not a tag: says nothing
            continue
    return False


def wheel_tags(wheel_file: str | None) -> tuple[str, ...]:
    """The `Tag:` lines of a dist-info's WHEEL file."""
    return tuple(
        line.partition(":")[2].strip()
        for line in (wheel_file or "").splitlines()
        if line.startswith("Tag:")
    )


def bundled(path: PurePosixPath) -> bool:
    """Whether a file a distribution installed (a RECORD path, relative to
    site-packages) belongs in the artifact. Byte code is the interpreter's
    business and would differ per build; console scripts (`../../bin/...`, or
    `bin/` under `pip --target`) cannot run in Lambda."""
    parts = path.parts
    if not parts or path.is_absolute() or ".." in parts or parts[0] == "bin":
        return False
    return "__pycache__" not in parts and path.suffix not in BYTE_CODE


def core_requirements(pyproject: Mapping[str, Any]) -> tuple[str, ...]:
    """pyproject.toml's `[project] dependencies`: what the handlers need, no extra."""
    lines = pyproject.get("project", {}).get("dependencies")
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ArtifactError("pyproject.toml has no [project] dependencies list")
    return tuple(lines)


def pip_command(requirements: Sequence[str], target: Path, python: str) -> list[str]:
    """The pip call that installs Lambda's wheels for `requirements` into `target`,
    whatever machine runs it."""
    return [
        python,
        *("-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"),
        *("--target", str(target), "--platform", LAMBDA_PLATFORM, "--implementation", "cp"),
        *("--python-version", "{}.{}".format(*LAMBDA_PYTHON), "--only-binary=:all:"),
        *requirements,
    ]


def manifest(report: ArtifactReport) -> dict[str, Any]:
    """`v2c-artifact.json`: what is inside, how big, and whether it loads in Lambda."""
    return {
        "format": MANIFEST_FORMAT,
        "mode": report.mode,
        "runtime": "python{}.{}".format(*LAMBDA_PYTHON),
        "v2c": {"version": report.version, "bytes": report.package_bytes},
        "distributions": [dataclasses.asdict(d) for d in report.distributions],
        "aws_sdk_bytes": report.aws_sdk_bytes,
        "total_bytes": report.total_bytes,
        "file_count": report.file_count,
        "limit_bytes": LAMBDA_UNZIPPED_LIMIT_BYTES,
        "not_loadable": list(report.not_loadable),
        "digest": report.digest,
    }


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


# --- the I/O ---------------------------------------------------------------------


def _spec(dist: metadata.Distribution) -> DistributionSpec:
    return DistributionSpec(dist.metadata["Name"], dist.version, tuple(dist.requires or ()))


def _distributions(path: list[str] | None) -> dict[str, metadata.Distribution]:
    """Installed distributions by canonical name; the first on the path wins, as for imports."""
    found: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions(path=sys.path if path is None else path):
        found.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return found


def _lookup(found: Mapping[str, metadata.Distribution]) -> Lookup:
    return lambda key: _spec(found[key]) if key in found else None


def _copy_distribution(dist: metadata.Distribution, target: Path) -> None:
    if dist.files is None:
        raise ArtifactError(f"{dist.metadata['Name']} has no RECORD: reinstall it with pip")
    for entry in dist.files:
        relative = PurePosixPath(entry.as_posix())
        if not bundled(relative):
            continue
        source = Path(str(dist.locate_file(entry)))
        if not source.is_file():
            raise ArtifactError(f"{dist.metadata['Name']}: {relative} is in RECORD but missing")
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)


def _copy_packages(repo_root: Path, target: Path, version: str) -> None:
    """The v2c tree, and a dist-info that names its version and files."""
    record: list[str] = []
    for folder, package in PACKAGES:
        source = repo_root / folder / PROJECT / package
        if not source.is_dir():
            raise ArtifactError(f"{source} is missing: not a v2c checkout")
        for path in sorted(source.rglob("*")):
            relative = PurePosixPath(path.relative_to(source).as_posix())
            hidden = any(part.startswith(".") for part in relative.parts)
            if hidden or not path.is_file() or not bundled(relative):
                continue
            data = path.read_bytes()
            destination = PurePosixPath(PROJECT, package) / relative
            (target / destination).parent.mkdir(parents=True, exist_ok=True)
            (target / destination).write_bytes(data)
            record.append(f"{destination},{_record_hash(data)},{len(data)}")
    info = PurePosixPath(f"{PROJECT}-{version}.dist-info")
    (target / info).mkdir()
    metadata_text = f"Metadata-Version: 2.1\nName: {PROJECT}\nVersion: {version}\n"
    (target / info / "METADATA").write_text(metadata_text)
    record.append(
        f"{info / 'METADATA'},{_record_hash(metadata_text.encode())},{len(metadata_text)}"
    )
    record.append(f"{info / 'RECORD'},,")
    (target / info / "RECORD").write_text("\n".join(record) + "\n")


def _tree(directory: Path) -> tuple[int, int, str]:
    """(bytes, files, digest) of every file below `directory` but the manifest."""
    total = count = 0
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            relative = path.relative_to(directory).as_posix()
            if relative == MANIFEST_NAME:
                continue
            data = path.read_bytes()
            total += len(data)
            count += 1
            digest.update(f"{relative}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    return total, count, digest.hexdigest()


def _scan(
    directory: Path, mode: Mode, roots: Sequence[str], environment: Mapping[str, str]
) -> ArtifactReport:
    """The report, read back from the built tree: resolving the closure again
    inside it proves it complete."""
    found = _distributions([str(directory)])
    inside = _lookup({key: dist for key, dist in found.items() if key != PROJECT})
    resolve_closure(roots, inside, environment)
    sdk = resolve_closure([AWS_SDK], inside, environment) if AWS_SDK in found else {}
    sizes: dict[str, tuple[int, int]] = {}
    for key, dist in found.items():
        files = [
            directory / entry.as_posix()
            for entry in dist.files or ()
            if bundled(PurePosixPath(entry.as_posix()))
        ]
        present = [path for path in files if path.is_file()]
        sizes[key] = (sum(path.stat().st_size for path in present), len(present))
    distributions = tuple(
        BundledDistribution(
            name=key,
            version=dist.version,
            bytes=sizes[key][0],
            files=sizes[key][1],
            wheel_tags=(tags := wheel_tags(dist.read_text("WHEEL"))),
            lambda_loadable=lambda_loadable(tags) if tags else True,
            aws_sdk=key in sdk,
        )
        for key, dist in sorted(found.items())
        if key != PROJECT
    )
    total, count, digest = _tree(directory)
    own = found.get(PROJECT)
    return ArtifactReport(
        directory=directory,
        mode=mode,
        version=own.version if own is not None else "",
        distributions=distributions,
        package_bytes=sizes.get(PROJECT, (0, 0))[0],
        package_files=sizes.get(PROJECT, (0, 0))[1],
        total_bytes=total,
        file_count=count,
        digest=digest,
    )


def _run_pip(command: Sequence[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ArtifactError(f"pip failed ({done.returncode}): " + " | ".join(tail))


def _check_host() -> None:
    """Copy mode bundles this interpreter's compiled modules: they must be Lambda's kind."""
    here = (sys.implementation.name, sys.version_info[:2], sys.platform, platform.machine())
    if here != ("cpython", LAMBDA_PYTHON, "linux", "x86_64"):
        raise ArtifactError(
            f"this interpreter ({here[0]} {here[1][0]}.{here[1][1]}, {here[2]} {here[3]}) "
            "cannot supply Lambda's python3.11 x86_64 modules: build with --pip"
        )


def build_artifact(
    directory: Path | None = None,
    *,
    mode: Mode = "copy",
    repo_root: Path = REPO_ROOT,
    run_pip: Runner = _run_pip,
) -> ArtifactReport:
    """Build the artifact into `directory` (default: ARTIFACT_DIR in the
    repository), replacing the last one, and write its manifest.

    It is built beside its place and moved in at the end, so a failed build
    leaves the last good artifact; a non-empty directory without a manifest
    is refused untouched, as it is not an artifact this function made.
    """
    target = (directory or repo_root / ARTIFACT_DIR).resolve()
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST_NAME).is_file():
        raise ArtifactError(f"{target} holds files but no {MANIFEST_NAME}: not replacing it")
    pyproject = tomllib.loads((repo_root / "pyproject.toml").read_text())
    roots = core_requirements(pyproject)
    version = str(pyproject["project"]["version"])
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if mode == "copy":
            _check_host()
            environment = lambda_environment(platform.python_version())
            installed = _distributions(None)
            for key in resolve_closure(roots, _lookup(installed), environment):
                _copy_distribution(installed[key], staging)
        else:
            environment = lambda_environment()
            # The versions the tests ran with, as Lambda's wheels: pinned, so
            # a deploy never picks up a release nobody tested.
            installed = _distributions(None)
            closure = resolve_closure(roots, _lookup(installed), environment)
            pins = [
                f"{installed[key].metadata['Name']}=={installed[key].version}" for key in closure
            ]
            run_pip(pip_command(pins, staging, sys.executable))
            shutil.rmtree(staging / "bin", ignore_errors=True)
        _copy_packages(repo_root, staging, version)
        report = _scan(staging, mode, roots, environment)
        text = json.dumps(manifest(report), indent=2) + "\n"
        (staging / MANIFEST_NAME).write_text(text)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # Swap without a moment with no artifact: the old one aside, the new one in.
    previous = target.with_name(f".{target.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
    return dataclasses.replace(report, directory=target)
