"""The Lambda artifact's pure decisions: which distributions, which files, which
wheels load in Lambda; and that pyproject.toml's core `dependencies` are
exactly what the handlers import."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from v2c.infra.aws.artifact import (
    LAMBDA_PLATFORM,
    ArtifactReport,
    BundledDistribution,
    DistributionSpec,
    bundled,
    core_requirements,
    lambda_environment,
    lambda_loadable,
    manifest,
    pip_command,
    resolve_closure,
    wheel_tags,
)
from v2c.infra.errors import ArtifactError

ROOT = Path(__file__).resolve().parents[2]
LAMBDA = lambda_environment("3.11.9")

INSTALLED = {
    spec.name: spec
    for spec in (
        DistributionSpec("app", "1.0", ("lib>=2", "tool[fast]; extra == 'cli'")),
        DistributionSpec(
            "lib",
            "2.5",
            (
                "helper",
                "windows-only; sys_platform == 'win32'",
                "backport; python_version < '3.10'",
                "speedups; extra == 'fast'",
            ),
        ),
        DistributionSpec("helper", "0.3", ("lib",)),  # a cycle
        DistributionSpec("speedups", "1.1"),
        DistributionSpec("windows-only", "1.0"),
        DistributionSpec("backport", "1.0"),
        DistributionSpec("tool", "4.0", ("lib[fast]; extra == 'fast'",)),
        DistributionSpec("mixed-case-name", "1.0"),
    )
}


def lookup(name: str) -> DistributionSpec | None:
    return INSTALLED.get(name)


def test_the_closure_follows_requirements_for_lambda_not_for_the_builder() -> None:
    closure = resolve_closure(["app"], lookup, LAMBDA)

    # No win32 wheel, no backport for 3.11, no extra nobody asked for; the cycle ends.
    assert list(closure) == ["app", "helper", "lib"]


def test_an_extra_asked_later_adds_its_requirements() -> None:
    # `lib` is reached first without extras (through app), then `tool[fast]`
    # asks for lib[fast]: speedups must still come in.
    closure = resolve_closure(["app", "tool[fast]"], lookup, LAMBDA)

    assert list(closure) == ["app", "helper", "lib", "speedups", "tool"]


def test_a_root_marker_is_evaluated_for_lambda() -> None:
    closure = resolve_closure(["app", "windows-only; sys_platform == 'win32'"], lookup, LAMBDA)

    assert "windows-only" not in closure


def test_names_are_matched_canonically() -> None:
    assert list(resolve_closure(["Mixed_Case.Name"], lookup, LAMBDA)) == ["mixed-case-name"]


def test_a_missing_distribution_is_refused_with_who_needs_it() -> None:
    with pytest.raises(ArtifactError, match=r"helper \(needed by lib\).*setup\.sh"):
        resolve_closure(["lib"], lambda n: None if n == "helper" else lookup(n), LAMBDA)
    with pytest.raises(ArtifactError, match="absent"):
        resolve_closure(["app", "absent>=1"], lookup, LAMBDA)


def test_an_installed_version_outside_the_specifier_is_refused() -> None:
    with pytest.raises(ArtifactError, match=r"needs lib>=3, but lib 2.5 is installed"):
        resolve_closure(["app", "lib>=3"], lookup, LAMBDA)


def test_an_invalid_requirement_names_its_source() -> None:
    with pytest.raises(ArtifactError, match=r"pyproject\.toml: invalid requirement"):
        resolve_closure(["not a requirement!"], lookup, LAMBDA)


@pytest.mark.parametrize(
    ("tags", "loads"),
    [
        (["py3-none-any"], True),
        (["cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"], True),
        (["cp37-abi3-manylinux_2_26_x86_64"], True),
        (["cp311-abi3-manylinux_2_34_x86_64"], False),  # glibc newer than Amazon Linux 2's
        (["cp311-cp311-manylinux_2_17_aarch64"], False),
        (["cp312-cp312-manylinux2014_x86_64"], False),
        (["cp311-cp311-musllinux_1_2_x86_64"], False),
        (["cp311-cp311-macosx_11_0_arm64", "py3-none-any"], True),
        (["cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"], True),  # compressed
        (["not-a-tag"], False),
        ([], False),
    ],
)
def test_which_wheels_load_in_lambda(tags: list[str], loads: bool) -> None:
    assert lambda_loadable(tags) is loads


def test_wheel_tags_are_read_from_the_wheel_file() -> None:
    text = "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-a\nTag: cp311-cp311-b\n"

    assert wheel_tags(text) == ("cp311-cp311-a", "cp311-cp311-b")
    assert wheel_tags(None) == ()


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("botocore/data/s3/2006-03-01/service-2.json.gz", True),
        ("pydantic_core/_pydantic_core.cpython-311-x86_64-linux-gnu.so", True),
        ("six-1.17.0.dist-info/METADATA", True),
        ("boto3/__pycache__/session.cpython-311.pyc", False),
        ("legacy/module.pyo", False),
        ("../../../bin/jp.py", False),
        ("bin/jp.py", False),
        ("/etc/passwd", False),
        ("", False),
    ],
)
def test_which_installed_files_are_bundled(path: str, kept: bool) -> None:
    assert bundled(PurePosixPath(path)) is kept


def test_the_roots_are_pyprojects_core_dependencies_only() -> None:
    pyproject = {
        "project": {"dependencies": ["boto3>=1.35"], "optional-dependencies": {"local": ["moto"]}}
    }

    assert core_requirements(pyproject) == ("boto3>=1.35",)
    with pytest.raises(ArtifactError, match=r"no \[project\] dependencies"):
        core_requirements({"project": {}})


def test_pip_fetches_lambdas_wheels_whatever_the_builder() -> None:
    command = pip_command(["boto3>=1.35"], Path("/out"), "/usr/bin/python3")

    assert command[:4] == ["/usr/bin/python3", "-m", "pip", "install"]
    assert command[-1] == "boto3>=1.35"
    for flag, value in [("--target", "/out"), ("--platform", LAMBDA_PLATFORM)]:
        assert command[command.index(flag) + 1] == value
    assert command[command.index("--python-version") + 1] == "3.11"
    assert "--only-binary=:all:" in command


def test_the_manifest_totals_and_flags() -> None:
    def dist(name: str, size: int, *, sdk: bool = False, loads: bool = True) -> BundledDistribution:
        return BundledDistribution(name, "1", size, 1, ("py3-none-any",), loads, sdk)

    report = ArtifactReport(
        directory=Path("/x"),
        mode="copy",
        version="0.1.0",
        distributions=(
            dist("boto3", 10, sdk=True),
            dist("botocore", 20, sdk=True),
            dist("c", 5, loads=False),
        ),
        package_bytes=3,
        package_files=1,
        total_bytes=38,
        file_count=4,
        digest="d",
    )

    document = manifest(report)

    assert document["aws_sdk_bytes"] == 30
    assert document["not_loadable"] == ["c"]
    assert document["total_bytes"] == 38
    assert document["limit_bytes"] == 262_144_000
    assert [d["name"] for d in document["distributions"]] == ["boto3", "botocore", "c"]
    assert "directory" not in document  # where it was built is not what it is
    assert report.fits


# --- pyproject.toml against the handlers' imports -------------------------------

HANDLER_SOURCES = (
    ROOT / "handlers" / "v2c" / "handlers",
    ROOT / "proto" / "v2c" / "contract",
    ROOT / "proto" / "v2c" / "v1",
)
# Imported by a module no Lambda function loads unless deployed with the extra.
OPTIONAL = {"python-pkcs11": "hsm"}


def _runtime_imports() -> set[str]:
    """Top-level names the handler code imports outside `TYPE_CHECKING` blocks."""
    names: set[str] = set()
    for folder in HANDLER_SOURCES:
        for path in folder.rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            typing_only = {
                id(node)
                for block in ast.walk(tree)
                if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                for node in ast.walk(block)
            }
            for node in ast.walk(tree):
                if id(node) in typing_only:
                    continue
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "v2c"}


def test_core_dependencies_are_what_the_handlers_import() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = core_requirements(pyproject)
    providers = metadata.packages_distributions()
    imported = {
        name: {canonicalize_name(d) for d in providers.get(name, [])} for name in _runtime_imports()
    }
    unknown = sorted(name for name, dists in imported.items() if not dists)
    assert not unknown, f"handlers import modules no installed distribution provides: {unknown}"

    def installed(name: str) -> DistributionSpec | None:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
        return DistributionSpec(dist.metadata["Name"], dist.version, tuple(dist.requires or ()))

    closure = set(resolve_closure(roots, installed, lambda_environment()))
    needed = {dist for dists in imported.values() for dist in dists} - set(OPTIONAL)
    assert needed <= closure, f"imported by handlers, not in the core closure: {needed - closure}"
    declared = {canonicalize_name(Requirement(line).name) for line in roots}
    unused = declared - needed
    assert not unused, f"core dependencies no handler imports (move them to an extra): {unused}"
