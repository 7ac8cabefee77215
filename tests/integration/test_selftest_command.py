"""`v2c selftest` end to end: its own broker, a real round trip, an honest exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from v2c.infra.cli.main import app
from v2c.infra.local import broker


def test_selftest_passes_and_shows_every_property_when_the_broker_works(
    mosquitto_executable: Path,
) -> None:
    result = CliRunner().invoke(app, ["selftest"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    for row in ("topic", "QoS", "message expiry interval", "content type", "correlation data"):
        assert row in result.output
    assert "application/x-protobuf" in result.output
    assert "selftest passed" in result.output


def test_selftest_fails_with_the_setup_hint_when_mosquitto_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given no mosquitto on PATH nor in the sbin folders
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(broker, "_SEARCH_DIRS", ())

    result = CliRunner().invoke(app, ["selftest"], env={"COLUMNS": "200"})

    assert result.exit_code == 1
    assert "scripts/setup.sh" in result.output
