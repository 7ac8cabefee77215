"""`v2c demo`, the README's main job, at a small fleet size: the stack, the
fleet, firmware through the API, canary campaigns, the summary, exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_runs_a_fleet_through_canary_campaigns_and_exits_zero(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "v2c.infra.cli", "demo",
            "--vehicles", "12", "--faults", "none", "--dir", str(tmp_path / "demo"),
            "--timeout", "240",
        ],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "every campaign behaved as its gate rules say" in output
    assert "canary gates" in output
    assert "vehicles by state and reason" in output
    assert "telemetry samples stored" in output
    # stopped cleanly: no stack description left behind
    assert not (tmp_path / "demo" / "stack" / "stack.json").exists()
