"""`v2c demo` starts every run fresh in its directory, and touches nothing it did not make."""

from __future__ import annotations

from pathlib import Path

import pytest

from v2c.contract.errors import InvalidInput
from v2c.infra.cli.demo_view import fresh_directory


def a_finished_run(directory: Path) -> None:
    for path in (
        "stack/pki/ca.pem",
        "stack/pki/vehicles/VIN-5V2CFLT0000000001.pem",
        "stack/broker/mosquitto.db",
        "stack/logs/api.log",
        "stack/ports.json",
        "fleet/VIN-5V2CFLT0000000001/agent.json",
        "packages/accord-ecu-2.0.0.bin",
    ):
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text("x")


def test_a_new_directory_is_created_and_nothing_is_removed(tmp_path: Path) -> None:
    assert fresh_directory(tmp_path / "demo") == []
    assert (tmp_path / "demo").is_dir()


def test_the_last_runs_state_goes_and_the_pki_stays(tmp_path: Path) -> None:
    a_finished_run(tmp_path)

    removed = fresh_directory(tmp_path)

    assert sorted(removed) == [
        "fleet",
        "packages",
        "stack/broker",
        "stack/logs",
        "stack/ports.json",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack"]
    assert sorted(p.name for p in (tmp_path / "stack").iterdir()) == ["pki"]
    assert (tmp_path / "stack/pki/vehicles/VIN-5V2CFLT0000000001.pem").exists()


def test_a_directory_holding_anything_else_is_refused_untouched(tmp_path: Path) -> None:
    a_finished_run(tmp_path)
    (tmp_path / "thesis.tex").write_text("mine")

    with pytest.raises(InvalidInput, match=r"thesis\.tex"):
        fresh_directory(tmp_path)

    assert (tmp_path / "fleet").exists()
    assert (tmp_path / "thesis.tex").read_text() == "mine"
