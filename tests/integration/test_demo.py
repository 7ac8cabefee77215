"""`v2c demo`, the README's main job, at a small fleet size: the stack, the
fleet, firmware through the API, canary campaigns, the summary, exit 0; and
again in the same directory (vehicles already on 2.0.0 once made the second
run's campaign creation fail with a 400 and a traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def demo(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "v2c.infra.cli.main", "demo",
            "--vehicles", "12", "--faults", "none", "--dir", str(directory),
            "--timeout", "240",
        ],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )  # fmt: skip


@pytest.mark.timeout(900)  # two runs
def test_the_demo_runs_a_fleet_through_canary_campaigns_and_exits_zero_every_time(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "demo"
    for run in ("first", "second"):
        done = demo(directory)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{run} run: {output[-4000:]}"
        assert "Traceback" not in output
        assert "every campaign behaved as its gate rules say" in output
        assert "canary gates" in output
        assert "vehicles by state and reason" in output
        assert "telemetry samples stored" in output
        # stopped cleanly: no stack description left behind
        assert not (directory / "stack" / "stack.json").exists()
    # the second run started from the first one's state, cleared: a fresh start
    assert "a fresh start in" in output
    assert (directory / "stack" / "pki").is_dir()  # kept across runs
