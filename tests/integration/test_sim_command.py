"""`v2c sim` against a stack description: builds, registers, connects and stops a fleet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from typer.testing import CliRunner

from v2c.handlers.ota.fleet import FleetRegistry
from v2c.infra.cli.main import app
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.settings import MqttSettings, StackSettings, write_settings

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


def test_sim_runs_the_fleet_for_its_duration_and_prints_the_summary(
    aws_stack: AwsStack, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    stack_dir = tmp_path / "stack"
    settings = StackSettings(
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
        aws=aws_stack.aws,
        resources=aws_stack.names,
    )
    write_settings(settings, stack_dir)
    args = ["sim", "--stack", str(stack_dir), "--vehicles", "6", "--duration", "1", "-o", "json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout is the JSON alone (the live view: stderr)
    assert summary["vehicles"] == 6
    assert summary["connected"] == 6
    assert summary["by_state"] == {"IDLE": 6}
    assert summary["errors"] == 0
    # the vehicles are in the registry with the version their flash runs
    registry = FleetRegistry(
        aws_stack.aws.client("dynamodb"), aws_stack.names.vehicle_registry_table
    )
    registered = [registry.get(f"VIN-5V2CFLT{i:010d}") for i in range(6)]
    assert all(v is not None and v.installed_version == "1.0.0" for v in registered)
    assert {v.model for v in registered if v is not None} == {"Accord", "Civic"}
    # and they live on disk under the stack: a second run finds the same vehicles
    assert len(list((stack_dir / "fleet").iterdir())) == 6


def test_sim_refuses_a_directory_without_a_stack(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "--stack", str(tmp_path), "--vehicles", "2"])
    assert result.exit_code == 4  # no stack (`v2c.infra.cli.errors`)
