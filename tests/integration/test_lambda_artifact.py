"""The Lambda artifact (`v2c aws build`): small enough, free of tooling, and
every function's handler imports from it alone.

Each handler is imported by a fresh interpreter that sees the artifact and the
standard library and nothing else: `-I` (no environment, no user site) and
`-S` (no site-packages, so not the venv's), with the artifact put first on
`sys.path` as Lambda puts /var/task. Sockets refuse to connect, so an import
that reached for the network would fail. The environment is the template's
plus dummy AWS credentials, as a Lambda container's would be.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from v2c.infra.aws.artifact import (
    LAMBDA_DIRECT_UPLOAD_LIMIT_BYTES,
    LAMBDA_UNZIPPED_LIMIT_BYTES,
    MANIFEST_NAME,
    PACKAGES,
    REPO_ROOT,
    ArtifactReport,
    build_artifact,
    manifest,
)
from v2c.infra.aws.template import TEMPLATE_PATH
from v2c.infra.cli.main import app

MIB = 2**20
# Far below Lambda's 250 MiB: the whole budget left for growth is visible here.
SIZE_BUDGET_BYTES = 100 * MIB
# Also checked by name, whatever the template holds: the operators' tool must load.
EXTRA_HANDLERS = ("v2c.handlers.dlq_admin.lambda_handler",)
# The local stack's, the simulator's, the CLI's and the tests' libraries.
TOOLING = (
    "moto",
    "flask",
    "werkzeug",
    "uvicorn",
    "h11",
    "gmqtt",
    "aiohttp",
    "yarl",
    "typer",
    "click",
    "rich",
    "requests",
    "yaml",
    "pytest",
    "hypothesis",
    "mypy_boto3_s3",
    "grpc_tools",
    "pkcs11",
)

TEMPLATE: dict[str, Any] = yaml.safe_load(TEMPLATE_PATH.read_text())
FUNCTIONS = {
    name: resource["Properties"]["Handler"]
    for name, resource in TEMPLATE["Resources"].items()
    if resource["Type"] == "AWS::Serverless::Function"
}
HANDLERS = sorted({*FUNCTIONS.values(), *EXTRA_HANDLERS})

PROBE = r"""
import importlib, json, socket, sys, sysconfig

def refuse(*args, **kwargs):
    raise OSError("network use while importing a handler")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
artifact, target = sys.argv[1], sys.argv[2]
sys.path[:0] = [artifact]
module_name, _, function = target.rpartition(".")
handler = getattr(importlib.import_module(module_name), function)
stdlib = (sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib"))
outside = sorted(
    name
    for name, module in list(sys.modules.items())
    if (path := getattr(module, "__file__", None))
    and not path.startswith(artifact + "/")
    and not (path.startswith(stdlib) and "-packages" not in path)
)
print(json.dumps({"callable": callable(handler), "path": sys.path, "outside": outside}))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the artifact is built from, as it is now: the checkout may change
    under a long test run, and builds compared with each other need one source."""
    root = tmp_path_factory.mktemp("source")
    shutil.copy(REPO_ROOT / "pyproject.toml", root)
    for folder, package in PACKAGES:
        shutil.copytree(
            REPO_ROOT / folder / "v2c" / package,
            root / folder / "v2c" / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return root


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, source: Path) -> ArtifactReport:
    return build_artifact(tmp_path_factory.mktemp("artifact") / "lambda", repo_root=source)


def _files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def test_the_artifact_is_far_below_lambdas_limit(artifact: ArtifactReport, tmp_path: Path) -> None:
    files = [path for path in _files(artifact.directory) if path.name != MANIFEST_NAME]
    unzipped = sum(path.stat().st_size for path in files)
    archive = tmp_path / "lambda.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in files:
            bundle.write(path, path.relative_to(artifact.directory).as_posix())
    zipped = archive.stat().st_size
    print(
        f"\nLambda artifact: {unzipped / MIB:.1f} MiB unzipped in {len(files)} files "
        f"({unzipped / LAMBDA_UNZIPPED_LIMIT_BYTES:.0%} of 250 MiB), {zipped / MIB:.1f} MiB "
        f"zipped; AWS SDK {artifact.aws_sdk_bytes / MIB:.1f} MiB"
    )
    for dist in sorted(artifact.distributions, key=lambda d: -d.bytes)[:6]:
        print(f"  {dist.name} {dist.version}: {dist.bytes / MIB:.1f} MiB")

    assert (unzipped, len(files)) == (artifact.total_bytes, artifact.file_count)
    assert unzipped < SIZE_BUDGET_BYTES, f"{unzipped / MIB:.1f} MiB"
    assert zipped < LAMBDA_DIRECT_UPLOAD_LIMIT_BYTES, f"{zipped / MIB:.1f} MiB zipped"


def test_the_artifact_holds_no_tooling_and_no_other_part_of_v2c(
    artifact: ArtifactReport,
) -> None:
    top = {path.name.split("-")[0].split(".")[0].lower() for path in artifact.directory.iterdir()}
    dists = {dist.name for dist in artifact.distributions}

    assert not top & set(TOOLING), top & set(TOOLING)
    assert not dists & {"moto", "flask", "typer", "pytest", "gmqtt", "aiohttp", "uvicorn"}
    assert sorted(p.name for p in (artifact.directory / "v2c").iterdir()) == [
        "contract",
        "handlers",
        "v1",
    ]
    files = _files(artifact.directory)
    assert not [p for p in files if "__pycache__" in p.parts or p.suffix == ".pyc"]
    assert not (artifact.directory / "bin").exists()
    assert {"boto3", "botocore", "pydantic", "protobuf", "aws-lambda-powertools"} <= dists
    # the dashboard's static files travel with the API function that serves them
    dashboard = artifact.directory / "v2c" / "handlers" / "dashboard"
    assert {"index.html", "app.js", "dashboard.css"} <= {p.name for p in dashboard.iterdir()}


def test_the_manifest_says_what_is_inside(artifact: ArtifactReport) -> None:
    written = json.loads((artifact.directory / MANIFEST_NAME).read_text())

    assert written == json.loads(json.dumps(manifest(artifact)))
    sdk = {d["name"] for d in written["distributions"] if d["aws_sdk"]}
    assert {"boto3", "botocore", "s3transfer", "jmespath"} <= sdk
    assert 0 < written["aws_sdk_bytes"] < written["total_bytes"]
    assert written["v2c"]["version"] == artifact.version != ""
    parts = sum(d["bytes"] for d in written["distributions"]) + written["v2c"]["bytes"]
    assert parts == written["total_bytes"]  # every byte belongs to a distribution


def test_a_rebuild_replaces_the_artifact_with_the_same_bytes(
    artifact: ArtifactReport, source: Path
) -> None:
    stray = artifact.directory / "botocore" / "stray.txt"
    stray.write_text("left over")

    again = build_artifact(artifact.directory, repo_root=source)

    assert not stray.exists()
    assert again.digest == artifact.digest
    assert (again.total_bytes, again.file_count) == (artifact.total_bytes, artifact.file_count)


def test_v2c_aws_build_prints_the_manifest_and_the_table(tmp_path: Path) -> None:
    out = ["--out", str(tmp_path / "lambda")]

    as_json = CliRunner().invoke(app, ["aws", "build", *out, "--json"])

    assert as_json.exit_code == 0, as_json.output
    printed = json.loads(as_json.stdout)
    assert printed == json.loads((tmp_path / "lambda" / MANIFEST_NAME).read_text())
    assert printed["total_bytes"] < SIZE_BUDGET_BYTES

    table = CliRunner().invoke(app, ["aws", "build", *out], env={"COLUMNS": "120"})

    assert table.exit_code == 0, table.output
    assert "botocore" in table.stdout
    assert f"of Lambda's {LAMBDA_UNZIPPED_LIMIT_BYTES // 2**20} MiB unzipped limit" in table.stdout


def test_a_folder_that_is_no_artifact_is_not_wiped(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("mine")

    result = CliRunner().invoke(app, ["aws", "build", "--out", str(tmp_path)])

    assert result.exit_code == 1
    assert "not replacing it" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]


def _lambda_environment(home: Path) -> dict[str, str]:
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    return {
        **{key: value for key, value in variables.items() if isinstance(value, str)},
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_NAME": "v2c-artifact-probe",
    }


def test_every_function_in_the_template_is_probed() -> None:
    assert len(FUNCTIONS) >= 5, FUNCTIONS
    assert all(handler.startswith("v2c.handlers.") for handler in HANDLERS)


@pytest.mark.parametrize("handler", HANDLERS)
def test_each_handler_imports_from_the_artifact_alone(
    artifact: ArtifactReport, handler: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, str(artifact.directory), handler],
        capture_output=True,
        text=True,
        env=_lambda_environment(tmp_path),
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["callable"] is True
    assert result["path"][0] == str(artifact.directory)
    leaks = [p for p in result["path"] if "site-packages" in p or p.startswith(sys.prefix)]
    assert not leaks, f"sys.path reaches an environment: {leaks}"
    assert result["outside"] == [], f"loaded from outside the artifact: {result['outside']}"
