"""`v2c pki init` and `v2c pki issue` through typer's runner: files written, no key in output."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from v2c.infra.cli.commands.pki import app
from v2c.infra.pki import authority as pki

VIN = "VIN-1HGBH41JXMN109186"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_writes_the_pki_and_prints_paths_but_no_key(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", "--dir", str(tmp_path / "pki")])

    assert result.exit_code == 0, result.output
    for name in ("ca.pem", "ca.key", "server.pem", "server.key", "service.pem", "service.key"):
        assert (tmp_path / "pki" / name).is_file()
        assert str(tmp_path / "pki" / name) in result.output
    assert "CA created" in result.output
    assert "PRIVATE KEY" not in result.output


def test_init_twice_keeps_the_existing_ca(runner: CliRunner, tmp_path: Path) -> None:
    runner.invoke(app, ["init", "--dir", str(tmp_path / "pki")])
    ca_before = (tmp_path / "pki" / "ca.pem").read_bytes()

    result = runner.invoke(app, ["init", "--dir", str(tmp_path / "pki")])

    assert result.exit_code == 0, result.output
    assert "CA kept existing" in result.output
    assert (tmp_path / "pki" / "ca.pem").read_bytes() == ca_before


def test_init_with_force_replaces_the_ca(runner: CliRunner, tmp_path: Path) -> None:
    runner.invoke(app, ["init", "--dir", str(tmp_path / "pki")])
    ca_before = (tmp_path / "pki" / "ca.pem").read_bytes()

    result = runner.invoke(app, ["init", "--dir", str(tmp_path / "pki"), "--force"])

    assert result.exit_code == 0, result.output
    assert "CA replaced" in result.output
    assert (tmp_path / "pki" / "ca.pem").read_bytes() != ca_before


def test_issue_with_pki_dir_writes_cert_and_key_to_out(runner: CliRunner, tmp_path: Path) -> None:
    runner.invoke(app, ["init", "--dir", str(tmp_path / "pki")])
    out = tmp_path / "car"

    result = runner.invoke(
        app, ["issue", "--vin", VIN, "--out", str(out), "--pki", str(tmp_path / "pki")]
    )

    assert result.exit_code == 0, result.output
    assert (out / f"{VIN}.key").is_file()
    assert str(out / f"{VIN}.pem") in result.output
    assert "PRIVATE KEY" not in result.output
    cert = _cert(out / f"{VIN}.pem")
    assert pki.common_name(cert) == VIN
    cert.verify_directly_issued_by(_cert(tmp_path / "pki" / "ca.pem"))


def test_issue_with_stack_uses_the_stacks_pki_dir(runner: CliRunner, tmp_path: Path) -> None:
    stack = tmp_path / "state"
    runner.invoke(app, ["init", "--dir", str(stack / "pki")])

    result = runner.invoke(app, ["issue", "--vin", VIN, "--stack", str(stack), "--days", "30"])

    assert result.exit_code == 0, result.output
    cert = _cert(stack / "pki" / "vehicles" / f"{VIN}.pem")
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)


def test_without_dir_options_both_commands_use_dot_stack_pki(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    init = runner.invoke(app, ["init"])
    issue = runner.invoke(app, ["issue", "--vin", VIN])

    assert init.exit_code == 0, init.output
    assert issue.exit_code == 0, issue.output
    assert (tmp_path / ".stack" / "pki" / "ca.pem").is_file()
    assert (tmp_path / ".stack" / "pki" / "vehicles" / f"{VIN}.pem").is_file()


def test_issue_invalid_vin_exits_2_and_writes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    runner.invoke(app, ["init", "--dir", str(tmp_path / "pki")])

    result = runner.invoke(
        app,
        ["issue", "--vin", "1HGBH41", "--pki", str(tmp_path / "pki"), "--out", str(tmp_path / "o")],
    )

    assert result.exit_code == 2
    assert "invalid vehicle id" in result.output
    assert not (tmp_path / "o").exists()


def test_issue_without_a_ca_exits_3_and_says_to_init(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["issue", "--vin", VIN, "--stack", str(tmp_path / "empty")])

    assert result.exit_code == 3  # not found (`v2c.infra.cli.errors`)
    assert "pki init" in result.output


def test_issue_refuses_both_pki_and_stack(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["issue", "--vin", VIN, "--pki", str(tmp_path), "--stack", str(tmp_path)]
    )

    assert result.exit_code == 2


def test_issue_for_a_stack_whose_broker_is_gone_says_the_vehicle_is_not_registered(
    runner: CliRunner, tmp_path: Path
) -> None:
    # Given a stack directory whose stack.json names a broker that no longer listens
    from v2c.infra.local.stack_layout import broker_settings
    from v2c.infra.net import free_port
    from v2c.infra.settings import StackSettings, write_settings

    stack = tmp_path / "stack"
    paths = pki.init_pki(stack / "pki")
    write_settings(StackSettings(mqtt=broker_settings("127.0.0.1", 1, free_port(), paths)), stack)

    result = runner.invoke(app, ["issue", "--vin", VIN, "--stack", str(stack)])

    # Then the certificate is issued, and the command fails saying it is not registered
    assert result.exit_code == 1, result.output
    assert (stack / "pki" / "vehicles" / f"{VIN}.pem").is_file()
    assert "issued, but not registered" in result.output
