"""A fleet manager's session at 80 columns on a running stack: no identifier is cut.

`LocalStack` (what `v2c stack up` runs: mosquitto, moto, the gateway, the API)
and four simulated Accords; then the installed `v2c`, as a shell runs it with
`COLUMNS=80`: firmware build, upload, campaign create --start, watch, stats,
the lists and `dlq list`. The ids are read from `-o json`, then looked for,
whole, in the tables: the firmware and campaign ids, the version, every VIN
and the dead-letter record id. No table line is wider than 80 and nothing is
shortened with "…" (the audit's "88c2c8388d…", "2.1…").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import CodecError
from v2c.infra.cli.commands.demo import _Loop
from v2c.infra.local.fleet_provisioning import stack_fleet
from v2c.infra.local.stack import LocalStack
from v2c.infra.local.wiring import dead_letter_stores
from v2c.infra.settings import StackSettings

V2C = Path(sys.executable).parent / "v2c"
VEHICLES = 4


@pytest.fixture
def running(tmp_path: Path) -> Iterator[StackSettings]:
    with LocalStack(tmp_path / "stack") as stack:
        loop = _Loop()
        fleet = stack_fleet(
            stack.settings,
            VEHICLES,
            models=("Accord",),
            time_scale=0.005,
            base_dir=tmp_path / "fleet",
            installed_version="1.0.0",
        )
        loop.run(fleet.start(), timeout=120)
        try:
            yield stack.settings
        finally:
            loop.run(fleet.stop(), timeout=60)
            loop.close()
            loop.loop.close()  # `_Loop.close` stops it; closing it is the owner's job


def v2c(stack_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "V2C_STACK_DIR": str(stack_dir)}
    env.pop("V2C_API_URL", None)
    return subprocess.run(
        [str(V2C), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
        check=False,
    )  # fmt: skip


def assert_fits(table: str, *ids: str) -> None:
    lines = table.splitlines()
    assert lines, "no table on stdout"
    assert max(len(line) for line in lines) <= 80, table
    assert "…" not in table, table
    for identifier in ids:
        assert any(identifier in line for line in lines), f"{identifier} not whole in:\n{table}"


@pytest.mark.timeout(300)
def test_a_fleet_manager_session_at_80_columns_prints_every_id_whole(
    running: StackSettings, tmp_path: Path
) -> None:
    stack_dir = tmp_path / "stack"

    def run(*args: str, code: int = 0) -> str:
        done = v2c(stack_dir, *args, cwd=tmp_path)
        assert done.returncode == code, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout

    (tmp_path / "rootfs.img").write_bytes(os.urandom(64 * 1024))
    built = run("firmware", "build", "rootfs.img", "--version", "2.0.0", "--model", "Accord")
    assert_fits(built, "accord-2.0.0.bin", "2.0.0")

    uploaded = run(
        "firmware", "upload", "accord-2.0.0.bin", "--name", "accord-ecu-main-controller",
        "--version", "2.0.0", "--model", "Accord", "--manufacturer", "Honda",
    )  # fmt: skip
    (firmware,) = json.loads(run("firmware", "list", "-o", "json"))["items"]
    assert_fits(uploaded, firmware["firmware_id"], firmware["checksum_sha256"], "2.0.0")
    assert_fits(run("firmware", "list"), firmware["firmware_id"], "2.0.0", "available")

    created = run(
        "campaign", "create", "--name", "accord-2.0.0-canary-rollout",
        "--firmware", firmware["firmware_id"], "--filter", "model = 'Accord'",
        "--strategy", "canary", "--canary-size", "1", "--start",
    )  # fmt: skip
    (campaign,) = json.loads(run("campaign", "list", "-o", "json"))["items"]
    campaign_id = campaign["campaign_id"]
    assert_fits(created, campaign_id, firmware["firmware_id"])

    watched = run("campaign", "watch", campaign_id, "--interval", "0.5", "--timeout", "240")
    assert_fits(watched, campaign_id)
    assert "completed" in watched
    assert_fits(run("campaign", "list"), campaign_id)
    assert_fits(run("stats"), "updates_by_firmware_version.2.0.0")
    assert_fits(run("stats", campaign_id), campaign_id)

    vins = [v["vehicle_id"] for v in json.loads(run("vehicle", "list", "-o", "json"))["items"]]
    assert len(vins) == VEHICLES
    assert_fits(run("vehicle", "list"), *vins, "2.0.0")
    assert_fits(run("device", "history", vins[0]), "1.0.0", "2.0.0")

    record = DeadLetterRecord.from_error(
        queue="telemetry",
        direction=Direction.INBOUND,
        source="telemetry_batch",
        topic=f"v2c/v1/us-east-1/{vins[0]}/telemetry/batch",
        payload=b"\x00not a batch",
        error=CodecError("not a TelemetryBatchEnvelope"),
        attempts=3,
        vehicle_id=vins[0],
        now_ms=int(time.time() * 1000),
    )
    dead_letter_stores(running)["telemetry"].put(record)
    assert_fits(run("dlq", "list"), record.record_id, record.reason)
