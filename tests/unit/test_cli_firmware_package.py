"""`v2c firmware build` makes what the vehicle agent installs; `upload` checks before it works.

The package is read back with the agent's own reader (`PackageReader`), the
one its installer uses, so "installable" means what a vehicle means by it.
The upload's checks run on the command line before any request: the API URL
points at a port nobody listens on, so an exit 2 (not 1, unreachable) shows
that nothing was hashed or sent.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from v2c.infra.cli.firmware_package import (
    build,
    installable_problem,
    upload_problems,
)
from v2c.infra.cli.main import app
from v2c.infra.net import free_port
from v2c.vehicle_sim.ota.device.package import PackageReader

IMAGE = bytes(range(256)) * 64


def test_a_file_payload_becomes_a_package_the_agent_reads_back(tmp_path: Path) -> None:
    (tmp_path / "rootfs.img").write_bytes(IMAGE)

    built = build(tmp_path / "rootfs.img", "2.1.0", "Accord", tmp_path / "out" / "a.bin")

    with PackageReader(built.path) as reader:
        assert reader.description.version == "2.1.0"
        digest = hashlib.sha256(b"".join(reader.chunks())).hexdigest()
        reader.check(digest)  # the image whole, as the description says
    assert digest == hashlib.sha256(IMAGE).hexdigest()
    assert built.sha256 == hashlib.sha256(built.path.read_bytes()).hexdigest()
    assert installable_problem(built.path, "2.1.0") is None


def test_a_directory_payload_is_packed_reproducibly(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "version").write_text("2.1.0\n")
    (tree / "bin.img").write_bytes(IMAGE)

    first = build(tree, "2.1.0", "Civic", tmp_path / "first.bin")
    second = build(tree, "2.1.0", "Civic", tmp_path / "second.bin")

    assert first.sha256 == second.sha256  # same tree, same bytes
    with PackageReader(first.path) as reader:
        image = tmp_path / "image.tar"
        image.write_bytes(b"".join(reader.chunks()))
    with tarfile.open(image) as packed:
        assert packed.getnames() == ["bin.img", "etc", "etc/version"]


def test_a_raw_image_or_another_version_is_flagged_as_not_installable(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(IMAGE)
    problem = installable_problem(raw, "2.1.0")
    assert problem is not None
    assert "not a package the vehicle agent installs" in problem
    assert "v2c firmware build" in problem

    built = build(raw, "2.1.0", "Accord", tmp_path / "p.bin")
    other = installable_problem(built.path, "2.2.0")
    assert other is not None
    assert "holds version 2.1.0, not 2.2.0" in other
    assert installable_problem(built.path, "2.1.0+build.7") is None  # build metadata ignored


def test_upload_arguments_are_checked_by_the_flag_to_blame(tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(IMAGE)
    texts = {"--name": "ecu", "--model": "Accord", "--manufacturer": "Honda"}
    assert upload_problems(good, good.name, "2.1.0", texts) == {}

    problems = upload_problems(good, good.name, "2.1", {**texts, "--name": " "})
    assert set(problems) == {"--version", "--name"}

    fake_zip = tmp_path / "fake.zip"
    fake_zip.write_bytes(IMAGE)
    assert "not a ZIP archive" in upload_problems(fake_zip, fake_zip.name, "2.1.0", texts)["FILE"]
    txt = tmp_path / "notes.txt"
    txt.write_bytes(b"x")
    assert "unsupported firmware format" in upload_problems(txt, txt.name, "2.1.0", texts)["FILE"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--version", "2.1"], "--version"),
        (["--version", "2.1.0", "--name", ""], "--name"),
        (["--version", "2.1.0", "--min-installed-version", "v1"], "--min-installed-version"),
        (["--version", "2.1.0", "--metadata", "{not json"], "--metadata"),
    ],
)
def test_upload_refuses_bad_arguments_before_any_request(
    tmp_path: Path, args: list[str], named: str
) -> None:
    package = tmp_path / "accord.bin"
    package.write_bytes(IMAGE)
    defaults = {"--name": "ecu", "--model": "Accord", "--manufacturer": "Honda"}
    for flag, value in defaults.items():
        if flag not in args:
            args = [*args, flag, value]
    url = f"http://127.0.0.1:{free_port()}"

    result = CliRunner().invoke(
        app, ["firmware", "upload", str(package), *args, "--api-url", url, "--api-key", "k"]
    )

    assert result.exit_code == 2, result.output  # not 1: the API was never called
    assert named in result.stderr
    assert "hashing" not in result.stderr


def test_build_names_the_package_after_model_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rootfs.img").write_bytes(IMAGE)

    result = CliRunner().invoke(
        app, ["firmware", "build", "rootfs.img", "--version", "3.0.0", "--model", "Accord"]
    )

    assert result.exit_code == 0, result.output
    assert installable_problem(tmp_path / "accord-3.0.0.bin", "3.0.0") is None
    assert "v2c firmware upload accord-3.0.0.bin" in result.stderr
    bad = CliRunner().invoke(
        app, ["firmware", "build", "rootfs.img", "--version", "3", "--model", "Accord"]
    )
    assert bad.exit_code == 2
    assert "--version" in bad.stderr
